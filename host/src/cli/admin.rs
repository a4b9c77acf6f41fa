//! `cairn ls`, `retry`, `cancel`, `stats`, and the hosts part of `cairn
//! plugins`: queue control from the command line, over
//! [`crate::queue::admin`] (the same functions as the dashboard). Each prints
//! a table, or JSON with `--json`, and works against `--database-url` or the
//! embedded server like every command.
//!
//! Bad input is a usage error — one `error:` line, exit code 2, and nothing
//! changed: clap refuses a malformed duration, action or status or an
//! out-of-range limit before anything runs, and unknown ids are a
//! [`UsageError`], checked all before anything is retried or cancelled.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use cairn_contract::parse_duration;
use clap::Args;
use serde_json::json;

use super::{DbArgs, UsageError};
use crate::db::Database;
use crate::key::ActionKey;
use crate::queue::admin::{self, HostInfo, Report, RowFilter, RowSummary, Stats};
use crate::queue::ActionStatus;

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// `--status`: one of the five, named in the error otherwise.
fn parse_status(text: &str) -> Result<ActionStatus, String> {
    text.parse().map_err(|_| {
        format!("unknown status `{text}` (queued, running, succeeded, failed or cancelled)")
    })
}

/// `cairn prune --status`: a finished status (queued and running rows are
/// never pruned).
pub(super) fn parse_finished_status(text: &str) -> Result<ActionStatus, String> {
    match text.parse::<ActionStatus>() {
        Ok(status) if status.is_terminal() => Ok(status),
        Ok(_) => Err(format!(
            "`{text}` rows are never pruned (succeeded, failed or cancelled)"
        )),
        Err(_) => Err(format!(
            "unknown status `{text}` (succeeded, failed or cancelled)"
        )),
    }
}

/// `cairn ls`.
#[derive(Debug, Args)]
pub(super) struct LsArgs {
    /// Only rows in this status: queued, running, succeeded, failed, cancelled.
    #[arg(long, value_parser = parse_status)]
    status: Option<ActionStatus>,
    /// Only rows of this action, MODULE:NAME.
    #[arg(long)]
    action: Option<ActionKey>,
    /// Only rows enqueued, started or finished within this long, e.g. `15m`.
    #[arg(long, value_parser = parse_duration)]
    since: Option<Duration>,
    /// At most this many rows, newest first (1 to 1000).
    #[arg(long, default_value_t = admin::DEFAULT_PAGE, value_parser = clap::value_parser!(u32).range(1..=i64::from(admin::MAX_PAGE)))]
    limit: u32,
    /// Only rows with an id below this (the next page).
    #[arg(long)]
    before: Option<i64>,
    /// Print JSON (an array of rows) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// `cairn retry`.
#[derive(Debug, Args)]
pub(super) struct RetryArgs {
    /// The failed rows to retry.
    #[arg(required_unless_present = "failed", conflicts_with = "failed")]
    ids: Vec<i64>,
    /// Retry every failed row (narrowed by --action and --since).
    #[arg(long)]
    failed: bool,
    /// With --failed: only rows of this action, MODULE:NAME.
    #[arg(long, requires = "failed")]
    action: Option<ActionKey>,
    /// With --failed: only rows that failed (or were enqueued or started)
    /// within this long, e.g. `1h`.
    #[arg(long, requires = "failed", value_parser = parse_duration)]
    since: Option<Duration>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// `cairn cancel`.
#[derive(Debug, Args)]
pub(super) struct CancelArgs {
    /// The queued or running rows to cancel.
    #[arg(required = true)]
    ids: Vec<i64>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// `cairn stats`.
#[derive(Debug, Args)]
pub(super) struct StatsArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// Rows retried per statement by `retry --failed`: big enough to be quick,
/// small enough that each statement holds its row locks briefly and the
/// progress bar moves.
const RETRY_CHUNK: usize = 500;

/// `cairn ls`: a table of rows, newest first, or JSON.
pub(super) async fn ls(args: LsArgs) -> Result<ExitCode> {
    let filter = RowFilter {
        status: args.status,
        action: args.action,
        since: args.since,
        before: args.before,
        limit: args.limit,
    };
    let rows = args
        .db
        .with(async |db| admin::list(db.pool(), &filter).await)
        .await?;
    print_json_or(rows.as_slice(), args.json, rows_table)
}

fn rows_table(rows: &[RowSummary]) -> String {
    let lines = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.action.to_string(),
                r.status.to_string(),
                admin::attempts_text(r.attempts, r.max_attempts),
                admin::time_text(&r.created_at),
                r.started_at
                    .as_ref()
                    .map(admin::time_text)
                    .unwrap_or_else(|| "-".into()),
                r.finished_at
                    .as_ref()
                    .map(admin::time_text)
                    .unwrap_or_else(|| "-".into()),
                r.host.clone().unwrap_or_else(|| "-".into()),
                r.error
                    .as_ref()
                    .filter(|_| r.status == ActionStatus::Failed)
                    .map(|e| e.to_string().replace('\n', " "))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "ACTION", "STATUS", "ATTEMPTS", "ENQUEUED", "STARTED", "FINISHED", "HOST",
            "ERROR",
        ],
        lines,
    )
}

/// Columns padded to their widest cell (the last is not padded).
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.clone()
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Fails with a usage error naming the ids among `ids` that have no row.
async fn check_ids(db: &Database, ids: &[i64]) -> Result<()> {
    let found = admin::existing(db.pool(), ids).await?;
    let mut missing: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|i| found.binary_search(i).is_err())
        .collect();
    missing.sort_unstable();
    missing.dedup();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(usage(format!("no action with id {one}"))),
        many => Err(usage(format!(
            "no actions with ids {}",
            many.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `value` as one line of JSON with `--json`, else as `text` renders it.
fn print_json_or<T: serde::Serialize + ?Sized>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        print!("{}", text(value));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &Report, verb: &str, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        let ids: Vec<String> = report.done.iter().map(i64::to_string).collect();
        if ids.is_empty() {
            println!("{verb} 0 rows");
        } else {
            println!("{verb} {} row(s): {}", ids.len(), ids.join(" "));
        }
        for s in &report.skipped {
            println!("left alone: row {} ({})", s.id, s.reason);
        }
    }
    Ok(if report.skipped.is_empty() && report.missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cairn retry`: what was retried and what was left alone; exit 1 if
/// anything was left alone, a [`UsageError`] for unknown ids (nothing
/// retried).
pub(super) async fn retry(args: RetryArgs) -> Result<ExitCode> {
    let outcome = args
        .db
        .with(async |db| {
            let ids = if args.failed {
                admin::failed_ids(db.pool(), args.action.as_ref(), args.since).await?
            } else {
                check_ids(db, &args.ids).await?;
                args.ids.clone()
            };
            let bar = crate::progress::bar(ids.len() as u64, "retry", "rows");
            let mut total = Report::default();
            for chunk in ids.chunks(RETRY_CHUNK) {
                let report = admin::retry(db.pool(), chunk).await?;
                bar.inc(chunk.len() as u64);
                total.done.extend(report.done);
                total.skipped.extend(report.skipped);
                total.missing.extend(report.missing);
            }
            bar.finish_and_clear();
            if !total.done.is_empty() {
                tracing::info!(rows = total.done.len(), "retried failed rows");
            }
            anyhow::Ok(total)
        })
        .await;
    print_report(&outcome?, "retried", args.json)
}

/// `cairn cancel`: what was cancelled and what was left alone; exit 1 if
/// anything was left alone, a [`UsageError`] for unknown ids (nothing
/// cancelled).
pub(super) async fn cancel(args: CancelArgs) -> Result<ExitCode> {
    let outcome = args
        .db
        .with(async |db| {
            check_ids(db, &args.ids).await?;
            admin::cancel(db.pool(), &args.ids).await
        })
        .await;
    print_report(&outcome?, "cancelled", args.json)
}

/// `cairn stats`: depth per action and status, and what finished per
/// minute over the last five.
pub(super) async fn stats(args: StatsArgs) -> Result<ExitCode> {
    let stats = args
        .db
        .with(async |db| admin::stats(db.pool()).await)
        .await?;
    print_json_or(&stats, args.json, stats_text)
}

fn stats_text(stats: &Stats) -> String {
    let mut out = String::from("queue depth (live rows)\n");
    if stats.depth.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&table(
            &["ACTION", "STATUS", "ROWS"],
            stats
                .depth
                .iter()
                .map(|d| {
                    vec![
                        d.action.to_string(),
                        d.status.to_string(),
                        d.rows.to_string(),
                    ]
                })
                .collect(),
        ));
    }
    out.push_str("\nfinished per minute, last 5 minutes (UTC)\n");
    out.push_str(&table(
        &["MINUTE", "SUCCEEDED", "FAILED", "ERROR RATE"],
        stats
            .minutes
            .iter()
            .map(|m| {
                vec![
                    m.start.format("%H:%M").to_string(),
                    m.succeeded.to_string(),
                    m.failed.to_string(),
                    format!("{:.1}%", m.error_rate() * 100.0),
                ]
            })
            .collect(),
    ));
    out
}

/// The hosts part of `cairn plugins`: every host in the database with what
/// it has loaded, or `None` when there is no database to ask (no URL and no
/// embedded server running: `cairn plugins` never starts one).
///
/// # Errors
///
/// The database named by a URL cannot be reached.
pub(super) async fn hosts(db: DbArgs) -> Result<Option<Vec<HostInfo>>> {
    let Some(db) = db.connect_if_running().await? else {
        return Ok(None);
    };
    let hosts = admin::hosts(db.pool(), crate::queue::defaults::HOST_TTL).await;
    db.close().await;
    Ok(Some(hosts?))
}

/// The hosts as lines under `cairn plugins`' local listing.
pub(super) fn hosts_text(hosts: Option<&[HostInfo]>) -> String {
    let Some(hosts) = hosts else {
        return "\nhosts: no database to ask (no --database-url, and no embedded server running)\n"
            .to_owned();
    };
    let live: Vec<&HostInfo> = hosts.iter().filter(|h| h.live).collect();
    if live.is_empty() {
        return "\nhosts: none serving on this database\n".to_owned();
    }
    let mut rows = Vec::new();
    for h in live {
        if h.plugins.is_empty() {
            rows.push(vec![h.host_id.clone(), "-".into(), "-".into(), "-".into()]);
        }
        for p in &h.plugins {
            rows.push(vec![
                h.host_id.clone(),
                p.file.clone(),
                p.short_digest().unwrap_or_else(|| "-".into()),
                match &p.rejected {
                    Some(r) => format!("REJECTED {}", r.reason),
                    None => p
                        .actions
                        .iter()
                        .map(|a| {
                            ActionKey::new(p.module.as_deref().unwrap_or("?"), a.as_str())
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                },
            ]);
        }
    }
    format!(
        "\nloaded by running hosts\n{}",
        table(&["HOST", "FILE", "DIGEST", "ACTIONS"], rows)
    )
}

/// The hosts as JSON (for `cairn plugins --json`).
pub(super) fn hosts_json(hosts: Option<&[HostInfo]>) -> serde_json::Value {
    match hosts {
        None => serde_json::Value::Null,
        Some(hosts) => json!(hosts.iter().filter(|h| h.live).collect::<Vec<_>>()),
    }
}
