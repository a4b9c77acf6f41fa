//! `async fn` actions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use cairn_payload::WorkflowArgumentValue as V;
use cairn_sdk::action;

use crate::{assert_error, call, call_err};

/// Returns `Pending` once, waking itself first: a cooperative yield.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Pending forever, without arranging a wake-up.
struct Never;

impl Future for Never {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

#[action]
async fn double_later(n: i64) -> i64 {
    YieldOnce(false).await;
    YieldOnce(false).await;
    n * 2
}

#[action]
async fn wait_forever() -> i64 {
    Never.await;
    0
}

#[action]
async fn fail_later() -> Result<(), cairn_sdk::Error> {
    YieldOnce(false).await;
    Err(cairn_sdk::Error::new("late failure").with_type("LateError"))
}

#[test]
fn async_action_runs_to_completion() {
    assert_eq!(
        call("double_later", vec![("n", V::int(21))]).unwrap(),
        V::int(42)
    );
}

#[test]
fn async_action_error_is_reported() {
    let err = call_err("fail_later", vec![]);
    assert_error(&err, "LateError", "late failure");
}

#[test]
fn async_action_pending_with_nothing_to_wake_it_is_error_not_hang() {
    let err = call_err("wait_forever", vec![]);
    assert_error(
        &err,
        "StalledFuture",
        "action future was pending with nothing to wake it",
    );
}
