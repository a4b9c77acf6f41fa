//! Where the CPU goes during a benchmark phase: the `cairn serve` child,
//! the PostgreSQL server and the bench process itself, plus what the
//! database did (transactions that wrote, WAL bytes, statements).
//!
//! Strategy: sample before and after a phase and subtract.
//! * CPU times come from `/proc/<pid>/stat` (`utime + stime`, whole thread
//!   group; summed over the `cairn serve` children). PostgreSQL is the postmaster (found as the parent of this
//!   connection's backend) plus all its live children, plus `cutime +
//!   cstime` of the postmaster, which holds the time of backends that have
//!   exited (a connection closed mid-phase still counts).
//! * Write transactions are counted by the transaction ids handed out
//!   (`pg_snapshot_xmax(pg_current_snapshot())`, which consumes none): every
//!   transaction that writes takes one and commits (and fsyncs) once;
//!   read-only ones take none and do not flush WAL. `pg_stat_database` is
//!   not used because backends report to it up to seconds late.
//! * WAL bytes: `pg_current_wal_lsn()` difference.
//! * Statements: `pg_stat_statements`, when the server loads it (only for
//!   experiments; cairn's embedded server does not).
//!
//! Failure modes: a server on another machine (or a `/proc` that cannot be
//! read) gives no CPU numbers for PostgreSQL; the report says `n/a` rather
//! than failing the benchmark.

use anyhow::Result;
use sqlx::PgPool;
use std::fmt;
use std::time::Duration;

/// One reading of every counter.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    host: Option<Duration>,
    postgres: Option<Duration>,
    bench: Duration,
    xids: i64,
    wal_bytes: i64,
    statements: Option<i64>,
}

/// Which processes to watch.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The `cairn serve` children (none: no host CPU is reported).
    pub hosts: Vec<u32>,
    /// The postmaster, if it runs on this machine.
    pub postmaster: Option<u32>,
}

impl Watch {
    /// Finds the postmaster as the parent of one of `pool`'s backends.
    pub async fn new(pool: &PgPool, hosts: Vec<u32>) -> Result<Self> {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(pool)
            .await?;
        let postmaster = u32::try_from(backend)
            .ok()
            .and_then(|pid| stat(pid).map(|s| s.ppid));
        Ok(Watch { hosts, postmaster })
    }

    /// Reads every counter now.
    pub async fn sample(&self, pool: &PgPool) -> Result<Sample> {
        let (xids, wal_bytes): (i64, i64) = sqlx::query_as(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
                    (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
        )
        .fetch_one(pool)
        .await?;
        let statements: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN to_regclass('pg_stat_statements') IS NULL THEN NULL
                    ELSE (SELECT sum(calls)::bigint FROM pg_stat_statements) END",
        )
        .fetch_one(pool)
        .await
        .ok()
        .flatten();
        Ok(Sample {
            // All or nothing: a host that has exited makes the sum wrong.
            host: (!self.hosts.is_empty())
                .then(|| self.hosts.iter().map(|&pid| stat(pid).map(|s| s.cpu)).sum())
                .flatten(),
            postgres: self.postmaster.and_then(postgres_cpu),
            bench: self_cpu(),
            xids,
            wal_bytes,
            statements,
        })
    }
}

/// The difference of two samples, per unit of work.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Units of work (actions, rows) the phase did.
    pub units: u64,
    /// Wall time of the phase.
    pub wall: Duration,
    /// CPU of the `cairn serve` child.
    pub host: Option<Duration>,
    /// CPU of the PostgreSQL server (all processes).
    pub postgres: Option<Duration>,
    /// CPU of this process (enqueueing, waiting, pgbench is not in it).
    pub bench: Duration,
    /// Transactions that wrote (= commits that flush WAL).
    pub write_commits: i64,
    /// WAL written.
    pub wal_bytes: i64,
    /// Statements (pg_stat_statements), when available.
    pub statements: Option<i64>,
}

impl Budget {
    /// `after - before` over `units` of work done in `wall`.
    pub fn between(before: &Sample, after: &Sample, units: u64, wall: Duration) -> Self {
        let sub = |a: Option<Duration>, b: Option<Duration>| Some(a?.saturating_sub(b?));
        Budget {
            units,
            wall,
            host: sub(after.host, before.host),
            postgres: sub(after.postgres, before.postgres),
            bench: after.bench.saturating_sub(before.bench),
            // The sampling query itself takes no xid.
            write_commits: after.xids - before.xids,
            wal_bytes: after.wal_bytes - before.wal_bytes,
            statements: after
                .statements
                .zip(before.statements)
                // Minus this sample's own two statements.
                .map(|(a, b)| a - b - 2),
        }
    }

    fn per_unit_us(&self, d: Option<Duration>) -> String {
        d.map_or("n/a".into(), |d| {
            format!("{:.1}", d.as_secs_f64() * 1e6 / self.units.max(1) as f64)
        })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.units.max(1) as f64;
        let util = |d: Option<Duration>| {
            d.map_or("n/a".into(), |d| {
                format!(
                    "{:.0}%",
                    100.0 * d.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
                )
            })
        };
        write!(
            f,
            "CPU µs per action: host {} ({} of one core), PostgreSQL {} ({}), bench {}; \
             per action: {:.3} write commits, {:.0} WAL bytes{}",
            self.per_unit_us(self.host),
            util(self.host),
            self.per_unit_us(self.postgres),
            util(self.postgres),
            self.per_unit_us(Some(self.bench)),
            self.write_commits as f64 / n,
            self.wal_bytes as f64 / n,
            self.statements
                .map(|s| format!(", {:.3} statements", s as f64 / n))
                .unwrap_or_default()
        )
    }
}

struct Stat {
    ppid: u32,
    cpu: Duration,
    children_cpu: Duration,
}

fn ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
    let num = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    let tick = ticks();
    Some(Stat {
        ppid: num(4)? as u32,
        cpu: Duration::from_secs_f64((num(14)? + num(15)?) / tick),
        children_cpu: Duration::from_secs_f64((num(16)? + num(17)?) / tick),
    })
}

/// The postmaster, its exited children and its live children.
fn postgres_cpu(postmaster: u32) -> Option<Duration> {
    let own = stat(postmaster)?;
    let mut total = own.cpu + own.children_cpu;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(s) = stat(pid) {
            if s.ppid == postmaster {
                total += s.cpu;
            }
        }
    }
    Some(total)
}

fn self_cpu() -> Duration {
    cpu(&rusage(libc::RUSAGE_SELF))
}

/// CPU of a finished child process (pgbench), from the kernel's rusage of
/// reaped children.
pub fn children_cpu() -> Duration {
    cpu(&rusage(libc::RUSAGE_CHILDREN))
}

/// `getrusage(who)`: `RUSAGE_SELF` or `RUSAGE_CHILDREN`.
pub fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: zeroed is a valid initial value for this plain C struct, and
    // getrusage writes into the struct we pass; with a valid `who` and
    // pointer it cannot fail.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    usage
}

/// User plus system time of `usage`.
pub fn cpu(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| {
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
        )
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
