//! A private PostgreSQL server, for when no database is configured.
//!
//! # Strategy
//!
//! cairn uses the PostgreSQL server binaries installed on the machine
//! (`initdb`, `pg_ctl`, `postgres`: first on `PATH`, else the newest
//! `/usr/lib/postgresql/<version>/bin`, where Debian and Ubuntu put them) and
//! keeps everything under `<state dir>/postgres/`:
//!
//! | path | what |
//! |---|---|
//! | `data/` | the cluster (`initdb` output), plus `cairn.conf`, rewritten at every start |
//! | `run/` | the unix socket `.s.PGSQL.5432` and `server.log` |
//! | `lock` | `flock`ed around every init, start, join and stop |
//! | `users/<pid>-<n>` | one lease file per user, `flock`ed for the user's lifetime |
//!
//! The server listens on no TCP address (`listen_addresses = ''`), only on the
//! socket in `run/`, a directory only the server's user (and root) may enter,
//! with `trust` authentication for the superuser `cairn`.
//!
//! **Lifecycle: the last user stops the server.** Every
//! [`EmbeddedPostgres`] holds a lease file. Starting takes the lock, cleans
//! stale leases, registers its own, initializes the cluster if needed and
//! starts the server unless it already runs (so concurrent cairn processes,
//! or tests, share one server and never race). Dropping takes the lock,
//! removes its lease, and if no live lease remains runs `pg_ctl stop -m fast`
//! — unless [`EmbeddedOptions::keep_running`] (`CAIRN_KEEP_POSTGRES=1`) asks
//! to leave it running for the next user.
//!
//! # Failure modes
//!
//! * **A user crashes:** the kernel releases its `flock`, so its lease no
//!   longer counts (a lease is live exactly while some process holds its
//!   lock: no pid reuse can fake one). The next user to exit stops the
//!   server. If every user crashed and none comes back, the server keeps
//!   running until the next cairn process on this state directory exits, or
//!   someone runs `pg_ctl stop -D <state dir>/postgres/data`.
//! * **Interrupted `initdb`:** the cluster is built in `data.init/` and
//!   renamed to `data/` only when complete; a leftover `data.init/` is
//!   removed and rebuilt.
//! * **Running as root** (CI does): `initdb` and `pg_ctl` refuse root, so they
//!   run as the unprivileged system user `postgres` (override with
//!   `CAIRN_POSTGRES_USER`), which owns `data/` and `run/`. Every directory
//!   above them must be searchable by that user; if not (e.g. under `/root`),
//!   starting fails saying which directory, instead of a cryptic `initdb`
//!   error.
//! * **No server binaries:** one line saying to `apt-get install postgresql`
//!   or to set `CAIRN_DATABASE_URL`.
//! * **The server fails to start:** the error carries the tail of
//!   `run/server.log`.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use sqlx::postgres::PgConnectOptions;

/// The port number in the socket's file name (`.s.PGSQL.<port>`). Nothing
/// listens on TCP, and the socket directory is private, so the standard port
/// cannot collide with anything.
pub const PORT: u16 = 5432;

/// The superuser `initdb` creates and cairn connects as.
pub const SUPERUSER: &str = "cairn";

/// How long `pg_ctl` may wait for the server to start or stop. Starting
/// replays WAL after a crash, which can take a while on a big cluster.
const PG_CTL_TIMEOUT_SECS: &str = "120";

/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes with
/// the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where and how to run the embedded server. Built by
/// [`DbConfig`](super::DbConfig) from the environment.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// cairn's state directory; the server lives in its `postgres/`.
    pub state_dir: PathBuf,
    /// Leave the server running when the last user exits, so the next start
    /// is instant (and `psql` can look at the data in between).
    pub keep_running: bool,
    /// The unprivileged system user that runs the server when cairn runs as
    /// root. Ignored otherwise: the server then runs as the current user.
    pub server_user: String,
}

/// A lease on the running embedded server: while it lives, the server keeps
/// running. Dropping the last lease stops the server (see the module docs).
pub struct EmbeddedPostgres {
    layout: Layout,
    bins: Binaries,
    run_as: RunAs,
    keep_running: bool,
    /// Our lease file, `flock`ed for as long as this value lives.
    lease: Option<(PathBuf, File)>,
}

impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("root", &self.layout.root)
            .field("bin_dir", &self.bins.dir)
            .field("keep_running", &self.keep_running)
            .finish()
    }
}

impl EmbeddedPostgres {
    /// Starts the server, or joins the one already running on this state
    /// directory, and takes a lease on it. Blocks (it runs `initdb` and
    /// `pg_ctl` and waits for the lock); from async code use
    /// [`start_async`](Self::start_async).
    ///
    /// # Errors
    ///
    /// No server binaries, no usable server user when running as root, a
    /// state directory the server user cannot reach or whose socket path is
    /// too long, or `initdb`/`pg_ctl` failing (with their output).
    pub fn start(options: &EmbeddedOptions) -> Result<Self> {
        let root = absolute(&options.state_dir)?.join("postgres");
        let layout = Layout::new(root);
        let run_as = RunAs::for_current_user(&options.server_user)?;
        let bins = Binaries::find(None)?;

        let socket = layout.run.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "embedded postgres start failed: socket path `{}` is longer than {MAX_SOCKET_PATH} bytes; \
                 set CAIRN_STATE_DIR to a shorter path",
                socket.display()
            );
        }

        // Checked before creating anything, so a refused start leaves no
        // directories behind; the ones created here get mode 755.
        run_as.check_reachable(&layout.root)?;
        create_dir(&layout.root, 0o755).with_context(|| {
            format!(
                "embedded postgres start failed: creating `{}`",
                layout.root.display()
            )
        })?;

        let lock = lock_file(&layout.lock)?;
        let mut server = EmbeddedPostgres {
            layout,
            bins,
            run_as,
            keep_running: options.keep_running,
            lease: None,
        };
        let started = server.start_locked();
        // Unlock before `server` may be dropped on an error: its drop takes
        // the lock again (to release the lease and maybe stop the server).
        drop(lock);
        started?;
        Ok(server)
    }

    /// The part of [`start`](Self::start) that runs under the lock.
    fn start_locked(&mut self) -> Result<()> {
        self.lease = Some(self.register_lease()?);
        if let Some(version) = self.cluster_version() {
            // A cluster must be run by binaries of its own major version.
            if let Ok(matching) = Binaries::find(Some(&version)) {
                self.bins = matching;
            }
        }
        self.init_if_needed()?;
        self.start_if_stopped()
    }

    /// [`start`](Self::start) on the blocking thread pool.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_async(options: EmbeddedOptions) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::start(&options))
            .await
            .context("embedded postgres start failed: the start task panicked")?
    }

    /// Whether a server seems to run on `options.state_dir` now (its socket
    /// exists), without starting one or taking a lease: for commands that
    /// only want to look (`cairn plugins`), where starting a server on a
    /// machine that never ran one would be a surprise. A server that crashed
    /// leaves its socket behind; joining it then starts it again.
    pub fn seems_running(options: &EmbeddedOptions) -> bool {
        absolute(&options.state_dir)
            .map(|dir| {
                Layout::new(dir.join("postgres"))
                    .run
                    .join(format!(".s.PGSQL.{PORT}"))
                    .exists()
            })
            .unwrap_or(false)
    }

    /// Connection options for `database` on this server (over its socket).
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.layout.run)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A libpq URL for `database`, for people and tools (`psql "$URL"`) and
    /// `--database-url`. The `host` parameter (the socket directory)
    /// overrides `localhost`, which is there because URL parsers (sqlx's)
    /// refuse a user name with an empty host.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@localhost/{database}?host={}&port={PORT}",
            self.layout.run.display()
        )
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.layout.run
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.layout.data
    }

    /// Stops the server the way a crash would — `pg_ctl stop -m immediate`:
    /// every backend is killed, nothing is checkpointed, and the next start
    /// replays the WAL — keeping this lease. For testing and measuring
    /// recovery (the queue's restart test, docs/benchmarks.md); start it
    /// again with [`restart`](Self::restart).
    ///
    /// # Errors
    ///
    /// `pg_ctl` fails (with its output).
    pub fn crash(&self) -> Result<()> {
        let lock = lock_file(&self.layout.lock)?;
        let stopped = self.pg_ctl_stop("immediate", "embedded postgres crash failed");
        drop(lock);
        stopped
    }

    /// Starts the server again if it is not running (after
    /// [`crash`](Self::crash)), and returns once it accepts connections.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn restart(&self) -> Result<()> {
        let lock = lock_file(&self.layout.lock)?;
        let started = self.start_if_stopped();
        drop(lock);
        started
    }

    /// Whether the server is running now (asks `pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.status().map(|s| s == Status::Running).unwrap_or(false)
    }

    fn register_lease(&self) -> Result<(PathBuf, File)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        create_dir(&self.layout.users, 0o755).with_context(|| {
            format!(
                "embedded postgres start failed: creating `{}`",
                self.layout.users.display()
            )
        })?;
        self.live_leases(None)?; // cleans stale ones
        let path = self.layout.users.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .with_context(|| {
                format!(
                    "embedded postgres start failed: creating lease `{}`",
                    path.display()
                )
            })?;
        if !try_flock(&file)? {
            bail!(
                "embedded postgres start failed: lease `{}` is locked by someone else",
                path.display()
            );
        }
        Ok((path, file))
    }

    /// Counts leases held by live processes, other than `own`, removing the
    /// files of dead ones. Call with the lock held.
    fn live_leases(&self, own: Option<&Path>) -> Result<usize> {
        let mut live = 0;
        let entries = match fs::read_dir(&self.layout.users) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "embedded postgres: reading `{}`",
                        self.layout.users.display()
                    )
                })
            }
        };
        for entry in entries {
            let path = entry?.path();
            if Some(path.as_path()) == own {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if try_flock(&file)? {
                // Nobody holds it: its process is gone.
                let _ = fs::remove_file(&path);
            } else {
                live += 1;
            }
        }
        Ok(live)
    }

    fn cluster_version(&self) -> Option<String> {
        fs::read_to_string(self.layout.data.join("PG_VERSION"))
            .ok()
            .map(|v| v.trim().to_owned())
    }

    fn init_if_needed(&self) -> Result<()> {
        let fail = "embedded postgres init failed";
        if !self.layout.data.join("PG_VERSION").exists() {
            let staging = self.layout.root.join("data.init");
            if staging.exists() {
                fs::remove_dir_all(&staging).with_context(|| {
                    format!("{fail}: removing the leftover `{}`", staging.display())
                })?;
            }
            create_dir(&staging, 0o700)
                .with_context(|| format!("{fail}: creating `{}`", staging.display()))?;
            self.run_as.give(&staging)?;
            let mut initdb = self.server_command(&self.bins.initdb);
            initdb.arg("-D").arg(&staging).args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]);
            run(initdb, fail)?;
            let conf = staging.join("postgresql.conf");
            let mut f = OpenOptions::new()
                .append(true)
                .open(&conf)
                .with_context(|| format!("{fail}: opening `{}`", conf.display()))?;
            writeln!(
                f,
                "\n# Written by cairn at every start.\ninclude_if_exists = 'cairn.conf'"
            )
            .with_context(|| format!("{fail}: writing `{}`", conf.display()))?;
            fs::rename(&staging, &self.layout.data)
                .with_context(|| format!("{fail}: renaming `{}` to `data`", staging.display()))?;
        }
        create_dir(&self.layout.run, 0o700)
            .with_context(|| format!("{fail}: creating `{}`", self.layout.run.display()))?;
        self.run_as.give(&self.layout.run)?;
        Ok(())
    }

    fn start_if_stopped(&self) -> Result<()> {
        let fail = "embedded postgres start failed";
        if self.status()? == Status::Running {
            return Ok(());
        }
        // Settings that follow the state directory if it moves.
        let conf = self.layout.data.join("cairn.conf");
        fs::write(
            &conf,
            format!(
                "# cairn's embedded server: unix socket only, in the state directory.\n\
                 listen_addresses = ''\n\
                 unix_socket_directories = '{}'\n\
                 port = {PORT}\n",
                self.layout.run.display().to_string().replace('\'', "''")
            ),
        )
        .with_context(|| format!("{fail}: writing `{}`", conf.display()))?;
        self.run_as.give(&conf)?;
        let log = self.layout.run.join("server.log");
        let mut pg_ctl = self.server_command(&self.bins.pg_ctl);
        pg_ctl
            .arg("start")
            .arg("-D")
            .arg(&self.layout.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS]);
        run(pg_ctl, fail).map_err(|e| {
            let tail = fs::read_to_string(&log)
                .map(|s| {
                    let lines: Vec<&str> = s.lines().rev().take(5).collect();
                    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
                })
                .unwrap_or_default();
            anyhow!("{e:#}; server.log: {tail}")
        })
    }

    fn status(&self) -> Result<Status> {
        if !self.layout.data.join("PG_VERSION").exists() {
            return Ok(Status::Stopped);
        }
        let mut pg_ctl = self.server_command(&self.bins.pg_ctl);
        pg_ctl.arg("status").arg("-D").arg(&self.layout.data);
        let out = output(pg_ctl, "embedded postgres status failed")?;
        // pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        match out.status.code() {
            Some(0) => Ok(Status::Running),
            Some(3) => Ok(Status::Stopped),
            _ => bail!(
                "embedded postgres status failed: pg_ctl status: {}",
                one_line(&out)
            ),
        }
    }

    fn stop(&self) -> Result<()> {
        self.pg_ctl_stop("fast", "embedded postgres stop failed")
    }

    /// `pg_ctl stop -m <mode>`, waiting until the server is gone; `phase`
    /// starts the error.
    fn pg_ctl_stop(&self, mode: &str, phase: &str) -> Result<()> {
        let mut pg_ctl = self.server_command(&self.bins.pg_ctl);
        pg_ctl.arg("stop").arg("-D").arg(&self.layout.data).args([
            "-m",
            mode,
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
        ]);
        run(pg_ctl, phase)
    }

    /// A command for a server binary, as the server's user, from a directory
    /// that user can read, with no `PG*` variables that would redirect it.
    fn server_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.layout.root);
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"PG") {
                cmd.env_remove(key);
            }
        }
        if let RunAs::User { uid, gid, home, .. } = &self.run_as {
            cmd.uid(*uid).gid(*gid).env("HOME", home);
        }
        cmd
    }

    fn release(&mut self) -> Result<()> {
        let Some((path, file)) = self.lease.take() else {
            return Ok(());
        };
        let lock = lock_file(&self.layout.lock)?;
        let _ = fs::remove_file(&path);
        drop(file);
        let others = self.live_leases(None)?;
        if others == 0 && !self.keep_running && self.status()? == Status::Running {
            self.stop()?;
        }
        drop(lock);
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("{e:#}");
        }
    }
}

#[derive(PartialEq, Eq, Debug)]
enum Status {
    Running,
    Stopped,
}

struct Layout {
    root: PathBuf,
    data: PathBuf,
    run: PathBuf,
    lock: PathBuf,
    users: PathBuf,
}

impl Layout {
    fn new(root: PathBuf) -> Self {
        Layout {
            data: root.join("data"),
            run: root.join("run"),
            lock: root.join("lock"),
            users: root.join("users"),
            root,
        }
    }
}

/// The server binaries, all from one directory.
#[derive(Clone, Debug)]
struct Binaries {
    dir: PathBuf,
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl Binaries {
    /// With `version`, only `/usr/lib/postgresql/<version>/bin`; else `PATH`
    /// first, then the newest versioned directory.
    fn find(version: Option<&str>) -> Result<Self> {
        Self::find_in(
            version,
            std::env::var_os("PATH"),
            Path::new("/usr/lib/postgresql"),
        )
    }

    /// [`find`](Self::find) over a given `PATH` and versioned root, so the
    /// search (and its error) can be tested on any machine.
    fn find_in(
        version: Option<&str>,
        path_var: Option<std::ffi::OsString>,
        versioned_root: &Path,
    ) -> Result<Self> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(v) = version {
            candidates.push(versioned_root.join(v).join("bin"));
        } else {
            if let Some(path) = path_var {
                candidates.extend(std::env::split_paths(&path));
            }
            let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir(versioned_root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect();
            versioned.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
            candidates.extend(versioned.into_iter().map(|(_, p)| p));
        }
        for dir in candidates {
            let (initdb, pg_ctl) = (dir.join("initdb"), dir.join("pg_ctl"));
            if is_executable(&initdb) && is_executable(&pg_ctl) {
                // pg_ctl finds `postgres` next to its resolved self; check the
                // same place so the error is ours, not pg_ctl's.
                let real = fs::canonicalize(&pg_ctl).unwrap_or_else(|_| pg_ctl.clone());
                if real
                    .parent()
                    .is_some_and(|d| is_executable(&d.join("postgres")))
                {
                    return Ok(Binaries {
                        dir,
                        initdb,
                        pg_ctl,
                    });
                }
            }
        }
        match version {
            Some(v) => bail!("embedded postgres: no server binaries for version {v}"),
            None => bail!(
                "embedded postgres start failed: no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH \
                 or in /usr/lib/postgresql/*/bin; install them (apt-get install postgresql) \
                 or set CAIRN_DATABASE_URL to use an existing server"
            ),
        }
    }
}

/// Who runs the server binaries.
enum RunAs {
    /// The current user (not root).
    Current,
    /// An unprivileged user, because we are root.
    User {
        name: String,
        uid: u32,
        gid: u32,
        home: PathBuf,
    },
}

impl RunAs {
    fn for_current_user(server_user: &str) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(RunAs::Current);
        }
        let name = CString::new(server_user).map_err(|_| {
            anyhow!("embedded postgres start failed: bad user name {server_user:?}")
        })?;
        let (uid, gid, home) = lookup_user(&name).ok_or_else(|| {
            anyhow!(
                "embedded postgres start failed: running as root, and initdb refuses root, but there is no \
                 `{server_user}` user to run the server as; create it (apt-get install postgresql does, \
                 or useradd --system {server_user}), set CAIRN_POSTGRES_USER, or set CAIRN_DATABASE_URL"
            )
        })?;
        if uid == 0 {
            bail!("embedded postgres start failed: CAIRN_POSTGRES_USER `{server_user}` is root; initdb refuses root");
        }
        Ok(RunAs::User {
            name: server_user.to_owned(),
            uid,
            gid,
            home,
        })
    }

    /// Makes `path` belong to the server's user.
    fn give(&self, path: &Path) -> Result<()> {
        if let RunAs::User { uid, gid, name, .. } = self {
            let c = CString::new(path.as_os_str().as_bytes())?;
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::chown(c.as_ptr(), *uid, *gid) } != 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| {
                    format!(
                        "embedded postgres: giving `{}` to user `{name}`",
                        path.display()
                    )
                });
            }
        }
        Ok(())
    }

    /// Fails, naming the directory, when the server's user cannot search
    /// every directory from `/` down to `dir`.
    fn check_reachable(&self, dir: &Path) -> Result<()> {
        let RunAs::User { uid, gid, name, .. } = self else {
            return Ok(());
        };
        for ancestor in dir.ancestors() {
            let meta = match fs::metadata(ancestor) {
                Ok(meta) => meta,
                // Not there yet: created later, searchable (mode 755).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "embedded postgres start failed: reading `{}`",
                            ancestor.display()
                        )
                    })
                }
            };
            let mode = meta.mode();
            let searchable = if meta.uid() == *uid {
                mode & 0o100 != 0
            } else if meta.gid() == *gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !searchable {
                bail!(
                    "embedded postgres start failed: the server runs as `{name}` (initdb refuses root), \
                     and `{name}` cannot enter `{}` (mode {:o}); set CAIRN_STATE_DIR to a directory it can \
                     reach (e.g. under /var/lib or /tmp), or set CAIRN_DATABASE_URL",
                    ancestor.display(),
                    mode & 0o7777
                );
            }
        }
        Ok(())
    }
}

/// `(uid, gid, home)` of the user `name`, by `getpwnam_r`.
fn lookup_user(name: &CStr) -> Option<(u32, u32, PathBuf)> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; all-zero is a valid value to be
    // overwritten by getpwnam_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and `buf`'s length is
    // passed; the strings in `pw` point into `buf`, which outlives their use.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    let home = if pw.pw_dir.is_null() {
        PathBuf::from("/")
    } else {
        // SAFETY: getpwnam_r succeeded, so pw_dir is a NUL-terminated string in `buf`.
        PathBuf::from(OsStr::from_bytes(
            unsafe { CStr::from_ptr(pw.pw_dir) }.to_bytes(),
        ))
    };
    Some((pw.pw_uid, pw.pw_gid, home))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    Ok(std::env::current_dir()
        .context("embedded postgres start failed: reading the current directory")?
        .join(path))
}

/// Creates `dir` if missing, with `mode`; missing parents get 755 whatever
/// the umask, so that the server's user can pass through them.
fn create_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir(parent, 0o755)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        // Created meanwhile by a concurrent start: fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Opens `path` and takes an exclusive `flock`, waiting for it. Released
/// when the file is dropped (or the process dies).
fn lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("embedded postgres: opening lock `{}`", path.display()))?;
    loop {
        // SAFETY: flock on a valid open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err)
                .with_context(|| format!("embedded postgres: locking `{}`", path.display()));
        }
    }
}

/// Tries an exclusive `flock` without waiting: `true` if we now hold it.
fn try_flock(file: &File) -> Result<bool> {
    // SAFETY: flock on a valid open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err).context("embedded postgres: flock on a lease")
    }
}

fn output(mut cmd: Command, phase: &str) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("{phase}: running `{}`", cmd.get_program().to_string_lossy()))
}

fn run(cmd: Command, phase: &str) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = output(cmd, phase)?;
    if !out.status.success() {
        bail!(
            "{phase}: `{program}` exited with {}: {}",
            out.status,
            one_line(&out)
        );
    }
    Ok(())
}

/// A command's stderr (or stdout), on one line.
fn one_line(out: &Output) -> String {
    let text = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        &out.stderr
    } else {
        &out.stdout
    };
    String::from_utf8_lossy(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::Binaries;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn fake_bin(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for name in names {
            let file = dir.join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn missing_server_binaries_error_says_how_to_install_or_configure() {
        let empty = tempfile::tempdir().unwrap();
        let err = Binaries::find_in(
            None,
            Some(empty.path().as_os_str().to_owned()),
            &empty.path().join("no-such-root"),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(err.contains("apt-get install postgresql"), "{err}");
        assert!(err.contains("CAIRN_DATABASE_URL"), "{err}");
    }

    #[test]
    fn path_wins_over_versioned_dirs_and_newest_version_wins_among_them() {
        let root = tempfile::tempdir().unwrap();
        let all = ["initdb", "pg_ctl", "postgres"];
        fake_bin(&root.path().join("lib/13/bin"), &all);
        fake_bin(&root.path().join("lib/16/bin"), &all);
        fake_bin(&root.path().join("lib/9/bin"), &all);
        fake_bin(&root.path().join("path-incomplete"), &["initdb"]); // no pg_ctl: skipped
        let lib = root.path().join("lib");
        let newest = Binaries::find_in(
            None,
            Some(root.path().join("path-incomplete").into_os_string()),
            &lib,
        )
        .unwrap();
        assert_eq!(newest.dir, lib.join("16/bin"));
        fake_bin(&root.path().join("on-path"), &all);
        let on_path = Binaries::find_in(
            None,
            Some(root.path().join("on-path").into_os_string()),
            &lib,
        )
        .unwrap();
        assert_eq!(on_path.dir, root.path().join("on-path"));
        let pinned = Binaries::find_in(Some("13"), None, &lib).unwrap();
        assert_eq!(pinned.dir, lib.join("13/bin"));
    }
}
