//! What every wasmtime `Store` carries: [`HostState`].
//!
//! One call gets one store (see [`crate::sandbox`]), so everything here is
//! per call: the denying WASI context, the resource table, the memory
//! limiter, who is being called ([`CallContext`]) and the calling plugin's
//! own settings ([`PluginDeps`]). The dependencies in `crate::deps`
//! implement their WIT interfaces on [`HostState`] and read only these
//! fields, so a plugin can reach nothing that is not in its own store. This
//! module is data only: it imports none of the dependencies it carries
//! settings for (the outbound-HTTP policy's behaviour, for instance, lives
//! with `http`, on [`HttpHooks`]).
//!
//! Failure modes: the limiter refuses growth past the cap and remembers it did,
//! so that the sandbox reports the trap that follows as `MemoryError` rather
//! than as an anonymous trap.

use crate::settings::PluginSettings;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::SystemTime;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Who is being called, as the dependencies (`context`, `log`) see it.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The plugin's module.
    pub module: String,
    /// The action's name (or `describe` at load time).
    pub action: String,
    /// The queue row's id, or a one-off id for `cairn invoke`.
    pub action_id: String,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// When this attempt's budget runs out.
    pub deadline: SystemTime,
}

/// What one plugin's dependencies need from the host: its own settings
/// (never another plugin's) and the database, if there is one. Shared by
/// all of the plugin's calls.
#[derive(Debug, Clone, Default)]
pub struct PluginDeps {
    /// The plugin's module (whose settings these are), for messages.
    pub module: String,
    /// The plugin's `[plugins.<module>]` settings.
    pub settings: PluginSettings,
    /// The queue's database; `None` for `cairn invoke` (kv and enqueue then
    /// return an error saying so).
    pub pool: Option<PgPool>,
}

/// The outbound-HTTP hooks of one call: the calling plugin's settings
/// (its `allowed_hosts`). `crate::deps::http` gives it its behaviour.
#[derive(Debug, Clone)]
pub(crate) struct HttpHooks {
    pub(crate) deps: Arc<PluginDeps>,
}

/// The data of one call's store.
pub struct HostState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// Who is being called (shared with the call's captured stdout and
    /// stderr, whose log lines name it too).
    pub(crate) call: Arc<CallContext>,
    /// The calling plugin's settings and database, for the dependencies.
    pub(crate) deps: Arc<PluginDeps>,
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_hooks: HttpHooks,
}

impl HostState {
    /// The state of a call to `call.module`, whose guest may grow its linear
    /// memory to `memory_cap` bytes, with WASI context `wasi` (built by the
    /// sandbox: denying, output captured).
    pub(crate) fn new(
        wasi: WasiCtx,
        call: Arc<CallContext>,
        deps: Arc<PluginDeps>,
        memory_cap: usize,
    ) -> Self {
        let http_hooks = HttpHooks { deps: deps.clone() };
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: memory_cap,
                exceeded: false,
            },
            call,
            deps,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers that it said no, so the trap that
/// follows (the guest's allocator aborts) is reported as memory exhaustion.
pub(crate) struct MemoryLimiter {
    cap: usize,
    /// Growth was refused at least once.
    pub(crate) exceeded: bool,
}

/// Most elements a guest table may grow to: far beyond any real plugin's
/// function table, small enough that a runaway `table.grow` loop cannot eat
/// the host's memory.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
