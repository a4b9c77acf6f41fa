//! Guest stdout/stderr, captured into the host's logs.
//!
//! Strategy: each call gets its own [`GuestOutput`] pair. Bytes are split
//! into lines and every complete line becomes one `tracing` event (target
//! `cairn::guest`) carrying the plugin's module, the action, the queue row's
//! id (`action_id`) and the attempt, from the call's [`CallContext`] — the
//! guest cannot forge them.
//! Writes always succeed from the guest's point of view: past
//! [`Limits::max_output_bytes`](crate::limits::Limits) lines are counted and
//! dropped instead of failing the write, because a failed `println!` would
//! panic — and trap — an otherwise healthy guest.
//!
//! Stderr also carries the SDK's panic report: a line starting with
//! [`PANIC_MARKER`] and everything after it is kept (not logged) so the
//! sandbox can turn the trap that follows into a `Panic` error payload.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::store::CallContext;
use cairn_contract::PANIC_MARKER;

/// Which guest stream a [`GuestOutput`] captures.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// One call's capture of one guest stream. Clones share state.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    state: Arc<Mutex<State>>,
}

struct State {
    stream: Stream,
    call: Arc<CallContext>,
    budget: usize,
    dropped: usize,
    partial: Vec<u8>,
    panic: Option<String>,
}

impl GuestOutput {
    pub(crate) fn new(stream: Stream, call: Arc<CallContext>, budget: usize) -> Self {
        GuestOutput {
            state: Arc::new(Mutex::new(State {
                stream,
                call,
                budget,
                dropped: 0,
                partial: Vec::new(),
                panic: None,
            })),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.partial.extend_from_slice(bytes);
        while let Some(pos) = state.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = state.partial.drain(..=pos).collect();
            state.line(&line[..line.len() - 1]);
        }
    }

    /// Flush a trailing partial line and report dropped output. Returns the
    /// panic report, if the guest's SDK wrote one.
    pub(crate) fn finish(&self) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.partial.is_empty() {
            let line = std::mem::take(&mut state.partial);
            state.line(&line);
        }
        if state.dropped > 0 {
            let call = &state.call;
            tracing::warn!(
                target: "cairn::guest",
                module = %call.module, action = %call.action, action_id = %call.action_id,
                attempt = call.attempt, stream = ?state.stream,
                "guest output truncated: {} bytes dropped over the {}-byte limit", state.dropped, state.budget
            );
            state.dropped = 0;
        }
        state.panic.take().map(|p| p.trim().to_owned())
    }
}

impl State {
    fn line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if let Some(panic) = &mut self.panic {
            panic.push('\n');
            panic.push_str(text);
            return;
        }
        if matches!(self.stream, Stream::Stderr) {
            if let Some(rest) = text.strip_prefix(PANIC_MARKER) {
                self.panic = Some(rest.to_owned());
                return;
            }
        }
        if line.len() > self.budget {
            self.dropped += line.len();
            return;
        }
        self.budget -= line.len();
        let call = &self.call;
        let (module, action, action_id, attempt) =
            (&call.module, &call.action, &call.action_id, call.attempt);
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "cairn::guest", module = %module, action = %action, action_id = %action_id, attempt, stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "cairn::guest", module = %module, action = %action, action_id = %action_id, attempt, stream = "stderr", "{text}")
            }
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
