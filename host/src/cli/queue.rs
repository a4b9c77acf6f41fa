//! `cairn enqueue` and `cairn result`: the queue from the command line,
//! through [`Client`].

use crate::db::Database;
use crate::queue::{ActionResult, ActionStatus, Client, EnqueueRequest};
use anyhow::{anyhow, Context, Result};
use std::process::ExitCode;
use std::time::Duration;

/// Parse `--args` (a JSON object of keyword arguments).
pub(super) fn parse_args(args: &str) -> Result<cairn_payload::WorkflowArguments> {
    let json: serde_json::Value = serde_json::from_str(args).context("--args is not valid JSON")?;
    cairn_payload::json::json_to_arguments(&json).map_err(|e| anyhow!("--args: {e}"))
}

/// Enqueue `request` and print its id; with `wait`, wait that long for the
/// result and print it too.
pub(super) async fn enqueue(
    db: &Database,
    request: &EnqueueRequest,
    wait: Option<Duration>,
) -> Result<ExitCode> {
    let client = Client::new(db.pool().clone());
    let id = client.enqueue(request).await?;
    println!("{id}");
    match wait {
        Some(timeout) => print_result(&client.wait(id, timeout).await?),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Print row `id`; with `wait`, once it is finished (waiting that long).
pub(super) async fn result(db: &Database, id: i64, wait: Option<Duration>) -> Result<ExitCode> {
    let client = Client::new(db.pool().clone());
    let row = match wait {
        Some(timeout) => client.wait(id, timeout).await?,
        None => client
            .result(id)
            .await?
            .ok_or_else(|| anyhow!("no action with id {id}"))?,
    };
    print_result(&row)
}

/// Print a row as JSON: id, action, status, attempts and the decoded result
/// or error. Exit code 1 when it failed or was cancelled.
fn print_result(row: &ActionResult) -> Result<ExitCode> {
    let mut out = serde_json::json!({
        "id": row.id,
        "action": row.key().to_string(),
        "status": row.status.as_str(),
        "attempts": row.attempts,
    });
    let decode = |bytes: &[u8]| {
        cairn_payload::json::payload_to_json(bytes)
            .map_err(|e| anyhow!("action {} has an unreadable payload: {e}", row.id))
    };
    if let Some(result) = &row.result {
        out["result"] = decode(result)?["result"].clone();
    }
    if let Some(error) = &row.error {
        // A failed row's error is the error; otherwise it is the last failed
        // attempt's (the row is being retried, or succeeded on a retry).
        let key = match row.status {
            ActionStatus::Failed | ActionStatus::Cancelled => "error",
            _ => "last_error",
        };
        out[key] = decode(error)?["error"].clone();
    }
    println!("{out}");
    Ok(match row.status {
        ActionStatus::Failed | ActionStatus::Cancelled => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
