//! The worker: serve → claim → instantiate → invoke → complete.
//!
//! Strategy. One claim loop owns a semaphore of `concurrency` permits. It
//! claims at most as many rows as there are free permits (never more, so a
//! busy host does not sit on rows another could run), in one statement, and
//! spawns one task per row. Each task runs its action in a fresh sandboxed
//! instance and hands the outcome to the completion writer, which writes
//! whatever has accumulated in one statement. Batching both sides is what
//! makes the queue fast: one commit per action would cap throughput at a few
//! thousand per second.
//!
//! Side concerns hang off that path in their own tasks:
//! * a LISTEN connection on `cairn_actions` wakes the loop on insert, a
//!   timer wakes it when a retry this host scheduled falls due, and a poll
//!   every [`WorkerConfig::poll_interval`] covers delayed rows, other hosts'
//!   retries and lost notifications;
//! * maintenance renews this host's leases, rescues rows whose lease expired
//!   (any host does this for a dead one), and fails rows whose action no live
//!   host serves after [`WorkerConfig::unknown_after`];
//! * maintenance is also the one writer of this host's row in `cairn.hosts`:
//!   its heartbeat, every [`WorkerConfig::heartbeat_every`] and at once
//!   whenever the registry changes (a reload), followed by a `cairn_actions`
//!   notification so that every host — this one included — claims rows that
//!   waited for an added or replaced action now rather than at its next poll.
//!   Given the plugin directory ([`Worker::with_plugin_dir`]), the heartbeat
//!   also publishes the plugin files this host has loaded, refreshed at once
//!   on every reload event (a rejected file changes no key, but operators
//!   want to see it);
//! * [`Metrics`] are recorded on the way (claim and completion batch sizes,
//!   in-flight actions and free permits, each attempt's outcome, run time and
//!   queue wait, lost and rescued leases) through per-action handles taken
//!   once per registry change, so an attempt costs a few atomic operations
//!   and no allocation.
//!
//! Failure modes. A failed attempt is retried with exponential backoff and
//! jitter (enforced through `run_at`) while it is retryable and attempts
//! remain, otherwise failed for good; the row's overrides beat the action's
//! declared defaults, which beat the host's. A lease this host failed to
//! renew means another host may run the row: the local task is aborted and
//! its result discarded (the lease-owner guard on completion would refuse it
//! anyway). A database error in the loop is logged and retried; completions
//! are kept and re-sent until written, so nothing is lost while the database
//! is away — and if this host dies instead, its leases expire and another
//! host runs the rows again. **PostgreSQL restarting** (a crash, a
//! failover): the claim loop and the completion writer each hold a
//! connection of their own, opened with a single attempt
//! ([`crate::db::session`]), and retry every 100 ms while the server is
//! away, so they resume within about that of it accepting connections again
//! (measured in docs/benchmarks.md), instead of waiting out the pool's
//! growing connect backoff or the poll interval. A claim that committed
//! asynchronously and was lost in a crash means this host lost its lease on
//! those rows: they are queued again and may run twice (only the newest
//! claim's attempt may complete a row, see [`write_completions`]). A claim
//! that returns more rows than were asked for (`cairn.claim` is public SQL another host may re-implement)
//! gives the extra rows back uncounted instead of running them without a
//! permit.
//!
//! Shutdown stops claiming, lets running actions finish for up to
//! [`WorkerConfig::shutdown_grace`], gives the rest back to the queue
//! without counting the attempt, flushes completions, and deregisters the
//! host.

use crate::db::session::{Retry, Session};
use crate::engine::Engine;
use crate::error::one_line;
use crate::key::ActionKey;
use crate::metrics::{ActionMetrics, Metrics, OutcomeLabel};
use crate::plugin::display_name;
use crate::queue::notify::{self, ACTIONS_CHANNEL};
use crate::queue::{
    self, backoff, ClaimedAction, Completion, LoadedPlugin, RejectedVersion, ServedAction,
};
use crate::registry::{ActionHandler, Registry, Snapshot};
use crate::reload::{FileOutcome, PluginDir, ReloadEvent};
use crate::sandbox::{self, Invocation};
use anyhow::{Context, Result};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

/// Most completions written in one statement: large enough to amortise the
/// commit, small enough that one statement stays well under a second.
const MAX_COMPLETION_BATCH: usize = 1024;

/// Longest a saturated worker waits for more capacity to free up before
/// claiming: a couple of milliseconds turn many one-row claims (each its own
/// commit) into a few batched ones, at a latency cost only under backlog.
const CLAIM_GATHER: Duration = Duration::from_millis(2);

/// Extra wait before waking for a retry this host scheduled, so the
/// completion that set its `run_at` has been committed.
const RETRY_WAKE_SLACK: Duration = Duration::from_millis(20);

/// How the worker behaves. [`WorkerConfig::default`] holds the defaults,
/// each with why in [`queue::defaults`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Actions running at once on this host.
    pub concurrency: usize,
    /// Lease length for claimed rows.
    pub lease: Duration,
    /// How often leases are renewed.
    pub renew_every: Duration,
    /// How often expired leases are rescued.
    pub rescue_every: Duration,
    /// How often this host's heartbeat is refreshed.
    pub heartbeat_every: Duration,
    /// A host is live while its heartbeat is younger than this.
    pub host_ttl: Duration,
    /// A due row no live host serves is failed after this long.
    pub unknown_after: Duration,
    /// Poll for due rows this often when no notification arrives.
    pub poll_interval: Duration,
    /// On shutdown, how long running actions may take to finish.
    pub shutdown_grace: Duration,
    /// Attempts for actions that declare no retry policy. Three: a trap or
    /// timeout gets two more chances, a bug does not loop for long.
    pub default_max_attempts: u32,
    /// First retry delay for actions that declare none.
    pub default_initial_backoff: Duration,
    /// Longest retry delay for actions that declare none.
    pub default_max_backoff: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 32,
            lease: queue::defaults::LEASE,
            renew_every: queue::defaults::RENEW_EVERY,
            rescue_every: queue::defaults::RESCUE_EVERY,
            heartbeat_every: queue::defaults::HEARTBEAT_EVERY,
            host_ttl: queue::defaults::HOST_TTL,
            unknown_after: queue::defaults::UNKNOWN_AFTER,
            poll_interval: queue::defaults::POLL_INTERVAL,
            shutdown_grace: Duration::from_secs(10),
            default_max_attempts: 3,
            default_initial_backoff: Duration::from_secs(1),
            default_max_backoff: Duration::from_secs(60),
        }
    }
}

/// A host's worker. Build it, then [`run`](Worker::run) it until shutdown.
pub struct Worker {
    engine: Engine,
    registry: Arc<Registry>,
    pool: PgPool,
    host_id: String,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
    plugin_dir: Option<PluginDir>,
}

/// What the tasks of one running worker share.
struct Shared {
    engine: Engine,
    registry: Arc<Registry>,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
    /// What the heartbeat publishes as this host's plugin files, if given.
    plugin_dir: Option<PluginDir>,
    /// Running rows: which attempt (a number unique in this worker) and how
    /// to stop it.
    inflight: Mutex<HashMap<i64, (u64, AbortHandle)>>,
    /// The next attempt number.
    next_attempt: AtomicU64,
    /// The newest attempt of every row this host claimed and has not yet
    /// written an outcome for: an outcome from an older attempt is stale
    /// (see [`write_completions`]).
    claims: Mutex<HashMap<i64, u64>>,
    /// Signalled when a task finishes (capacity freed).
    finished: Notify,
    /// Wakes the claim loop: notifications, and retries falling due.
    wake: Arc<Notify>,
}

impl Worker {
    /// A worker serving `registry`'s actions from the queue in `pool`.
    /// `host_id` must be unique among live hosts; it is the lease owner.
    pub fn new(
        engine: Engine,
        registry: Arc<Registry>,
        pool: PgPool,
        host_id: String,
        config: WorkerConfig,
    ) -> Self {
        Worker {
            engine,
            registry,
            pool,
            host_id,
            config,
            metrics: Arc::new(Metrics::new()),
            plugin_dir: None,
        }
    }

    /// The same worker, recording into `metrics` (see [`crate::metrics`])
    /// instead of a private set nobody reads.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same worker, publishing `dir`'s files (what serves, what was
    /// rejected) with every heartbeat, and at once on every reload event.
    pub fn with_plugin_dir(mut self, dir: PluginDir) -> Self {
        self.plugin_dir = Some(dir);
        self
    }

    /// Run until `shutdown` resolves, then shut down gracefully (see the
    /// module docs).
    ///
    /// # Errors
    /// Only when the worker cannot start (the LISTEN connection or the first
    /// heartbeat fails). Errors while running are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Worker {
            engine,
            registry,
            pool,
            host_id,
            config,
            metrics,
            plugin_dir,
        } = self;
        let owner: Arc<str> = host_id.into();
        let concurrency = config.concurrency.max(1);
        let wake = Arc::new(Notify::new());
        // Subscribe before the first heartbeat so that no change slips
        // between the two.
        let changes = registry.subscribe();
        let reloads = plugin_dir.as_ref().map(PluginDir::subscribe);
        let shared = Arc::new(Shared {
            engine,
            registry,
            config,
            metrics,
            plugin_dir,
            inflight: Mutex::new(HashMap::new()),
            next_attempt: AtomicU64::new(0),
            claims: Mutex::new(HashMap::new()),
            finished: Notify::new(),
            wake: wake.clone(),
        });

        write_heartbeat(&pool, &owner, &shared)
            .await
            .context("worker start: heartbeat")?;
        let listener = notify::listen(&pool, ACTIONS_CHANNEL)
            .await
            .context("worker start: LISTEN")?;
        let listen_task = tokio::spawn(listen(listener, wake.clone()));
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Outcome>();
        let written = Arc::new(AtomicU64::new(0));
        let writer_task = tokio::spawn(write_completions(
            Session::new(&pool, "worker completion connection", &[]),
            owner.clone(),
            shared.clone(),
            done_rx,
            written.clone(),
        ));
        let maintenance_task = tokio::spawn(maintain(
            pool.clone(),
            owner.clone(),
            shared.clone(),
            changes,
            reloads,
        ));
        // The runtime's size (`cairn serve --threads`), as it is, not as asked.
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(host = %owner, concurrency, threads, actions = shared.registry.snapshot().len(), "worker started");
        shared.metrics.worker_started(concurrency);

        let permits = Arc::new(Semaphore::new(concurrency));
        let mut claims = ClaimSet::default();
        let mut claim_connection = ClaimConnection::new(&pool);
        let mut claim_retry = Retry::new("claiming rows");
        tokio::pin!(shutdown);
        'claim: loop {
            // Claim as many rows as there are free permits, never more.
            let free = permits.available_permits();
            let mut saturated = free == 0;
            let mut next_look = shared.config.poll_interval;
            if free > 0 {
                // One snapshot of the registry decides both what to claim
                // and which version runs it: a row runs on the version that
                // was live when it was claimed, whatever a reload does next.
                let snapshot = shared.registry.snapshot();
                let served = claims.served(
                    &snapshot,
                    shared.config.default_max_attempts,
                    &shared.metrics,
                );
                let claimed = claim_connection
                    .claim(&owner, free as u32, shared.config.lease, served)
                    .await;
                match claimed {
                    Ok(rows) => {
                        claim_retry.succeeded();
                        saturated = rows.len() >= free;
                        if !rows.is_empty() {
                            shared.metrics.claimed(rows.len());
                        }
                        for row in rows {
                            match permits.clone().try_acquire_owned() {
                                Ok(permit) => {
                                    let runnable = claims.runnable(&row.key).cloned();
                                    spawn_action(&shared, row, runnable, permit, done_tx.clone());
                                }
                                Err(_) => give_back(&shared, row, &done_tx),
                            }
                        }
                    }
                    // The database is away (or refused the claim): look again
                    // soon rather than at the next poll, so that claiming
                    // resumes promptly when it is back.
                    Err(err) => next_look = next_look.min(claim_retry.failed(&err)),
                }
            }
            if saturated {
                // A backlog is likely. Let capacity gather a little so each
                // claim statement (one commit) takes a worthwhile batch
                // instead of one row per finished task.
                if !gather_capacity(&permits, &shared, concurrency, &mut shutdown).await {
                    break 'claim;
                }
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(next_look) => {}
            }
        }

        // Graceful shutdown.
        shared.metrics.worker_stopping();
        let running = shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        tracing::info!(running, grace = ?shared.config.shutdown_grace, "shutting down: claiming stopped");
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        if tokio::time::timeout(shared.config.shutdown_grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            let leftover: Vec<(i64, (u64, AbortHandle))> = shared
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .collect();
            for (id, (attempt, handle)) in leftover {
                handle.abort();
                tracing::warn!(
                    action_id = id,
                    "not finished within the grace period: requeued"
                );
                let _ = done_tx.send(Outcome {
                    attempt,
                    completion: Completion::requeue(id),
                });
            }
        }
        maintenance_task.abort();
        listen_task.abort();
        drop(done_tx);
        if let Err(err) = writer_task.await {
            tracing::error!("completion writer stopped abnormally: {err}");
        }
        if let Err(err) = queue::remove_host(&pool, &owner).await {
            tracing::warn!("deregistering host: {}", one_line(&err));
        }
        let completed = written.load(Ordering::Relaxed);
        tracing::info!(host = %owner, completed, "worker stopped");
        Ok(())
    }
}

/// Wait, while every permit is taken, until a quarter of them are free or
/// [`CLAIM_GATHER`] has passed since the first came back. Returns `false`
/// when `shutdown` resolved meanwhile.
async fn gather_capacity(
    permits: &Semaphore,
    shared: &Shared,
    concurrency: usize,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    while permits.available_permits() == 0 {
        tokio::select! {
            _ = shutdown.as_mut() => return false,
            _ = shared.finished.notified() => {}
            // Belt and braces: re-check capacity now and then.
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
    let gather_until = tokio::time::Instant::now() + CLAIM_GATHER;
    while permits.available_permits() < (concurrency / 4).max(1) {
        tokio::select! {
            _ = shutdown.as_mut() => return false,
            _ = shared.finished.notified() => {}
            _ = tokio::time::sleep_until(gather_until) => break,
        }
    }
    true
}

/// The claim loop's own connection ([`Session`]), with `synchronous_commit
/// = off`: a claim's commit does not wait for the WAL flush (one fsync less
/// between enqueue and result, and no commit latency in the claim loop).
/// Safe because a claim is not an outcome: if the server crashes before the
/// claim is flushed, its rows are simply queued again (their attempt not
/// counted) — this host has lost its lease on them, and its completions are
/// refused by the lease guard unless it claims the row again itself. Every
/// completion commits synchronously, and flushing its commit record flushes
/// every claim before it. Replaced after any error.
struct ClaimConnection {
    session: Session,
}

impl ClaimConnection {
    fn new(pool: &PgPool) -> Self {
        ClaimConnection {
            session: Session::new(
                pool,
                "worker claim connection",
                &[("synchronous_commit", "off")],
            ),
        }
    }

    /// [`queue::claim`] on this connection, opening it first if needed.
    async fn claim(
        &mut self,
        owner: &str,
        limit: u32,
        lease: Duration,
        served: &[ServedAction],
    ) -> Result<Vec<ClaimedAction>> {
        let conn = self.session.conn().await?;
        let claimed = queue::claim(&mut *conn, owner, limit, lease, served).await;
        if claimed.is_err() {
            // A broken connection, or one in an unknown state: start afresh.
            self.session.reset();
        }
        claimed
    }
}

/// A row claimed beyond the free permits (a `cairn.claim` that returned more
/// than asked for): give it back uncounted for a host with capacity.
fn give_back(shared: &Shared, row: ClaimedAction, done: &mpsc::UnboundedSender<Outcome>) {
    tracing::warn!(
        action_id = row.id,
        action = %row.key,
        "the claim returned more rows than there were free permits: row given back"
    );
    let attempt = shared.next_attempt.fetch_add(1, Ordering::Relaxed);
    shared
        .claims
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(row.id, attempt);
    let _ = done.send(Outcome {
        attempt,
        completion: Completion::requeue(row.id),
    });
}

/// What a task hands the completion writer: its row's outcome, and which
/// attempt (claim) of the row it comes from.
struct Outcome {
    attempt: u64,
    completion: Completion,
}

/// The served actions of the latest registry snapshot, as the claim takes
/// them, and what runs each claimed row (its handler from that snapshot and
/// its metrics); rebuilt only when the registry changes (a claim runs per
/// batch, a change per reload).
#[derive(Default)]
struct ClaimSet {
    generation: Option<u64>,
    served: Vec<ServedAction>,
    runnable: HashMap<ActionKey, Runnable>,
}

/// What runs one claimed row: the handler of the claim's snapshot, and the
/// action's metrics.
#[derive(Clone)]
struct Runnable {
    handler: Arc<ActionHandler>,
    metrics: ActionMetrics,
}

impl ClaimSet {
    /// The served actions of `snapshot`; from then on, [`runnable`](Self::runnable)
    /// answers from that same snapshot.
    fn served(
        &mut self,
        snapshot: &Snapshot,
        default_max_attempts: u32,
        metrics: &Metrics,
    ) -> &[ServedAction] {
        if self.generation != Some(snapshot.generation()) {
            self.served = snapshot
                .iter()
                .map(|(key, h)| ServedAction {
                    key: key.clone(),
                    max_attempts: h
                        .info
                        .retry
                        .map_or(default_max_attempts, |r| r.max_attempts),
                })
                .collect();
            self.runnable = snapshot
                .iter()
                .map(|(key, handler)| {
                    let runnable = Runnable {
                        handler: handler.clone(),
                        metrics: metrics.action(key),
                    };
                    (key.clone(), runnable)
                })
                .collect();
            self.generation = Some(snapshot.generation());
        }
        &self.served
    }

    /// What runs a row of `key`, from the snapshot of the last
    /// [`served`](Self::served).
    fn runnable(&self, key: &ActionKey) -> Option<&Runnable> {
        self.runnable.get(key)
    }
}

fn spawn_action(
    shared: &Arc<Shared>,
    row: ClaimedAction,
    runnable: Option<Runnable>,
    permit: OwnedSemaphorePermit,
    done: mpsc::UnboundedSender<Outcome>,
) {
    let id = row.id;
    let attempt = shared.next_attempt.fetch_add(1, Ordering::Relaxed);
    shared
        .claims
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, attempt);
    // Hold the map's lock while spawning so the task cannot remove its
    // entry before it is inserted.
    let mut inflight = shared.inflight.lock().unwrap_or_else(|p| p.into_inner());
    shared.metrics.started();
    let guard = Running {
        shared: shared.clone(),
        id,
        attempt,
        permit: Some(permit),
    };
    let handle = tokio::spawn(async move {
        let completion = execute(&guard.shared, row, runnable).await;
        let _ = done.send(Outcome {
            attempt,
            completion,
        });
        drop(guard);
    });
    if let Some((_, earlier)) = inflight.insert(id, (attempt, handle.abort_handle())) {
        // This host claimed a row it was still running: its earlier claim
        // never reached the disk (claims commit asynchronously, and the
        // server crashed), so that attempt lost its lease. Only the newest
        // claim's attempt may complete the row; the earlier one's guard
        // will not touch the newer entry.
        earlier.abort();
        tracing::warn!(
            action_id = id,
            "row claimed again while an earlier attempt still ran here: that attempt lost its \
             lease (its claim was lost in a database crash) and is abandoned"
        );
    }
}

/// Held by a running action's task. Dropping it — when the task finishes or
/// when it is aborted (lost lease, shutdown) — forgets the row, returns the
/// permit and only then tells a waiting claim loop that capacity is back.
/// (Notifying from the code that calls `abort` would race: an abort only
/// schedules the task's drop.)
struct Running {
    shared: Arc<Shared>,
    id: i64,
    /// Which attempt: the row's entry may belong to a newer one (see
    /// [`spawn_action`]), which this guard must leave alone.
    attempt: u64,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Running {
    fn drop(&mut self) {
        {
            let mut inflight = self
                .shared
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if inflight
                .get(&self.id)
                .is_some_and(|(a, _)| *a == self.attempt)
            {
                inflight.remove(&self.id);
            }
        }
        drop(self.permit.take());
        self.shared.metrics.finished();
        self.shared.finished.notify_one();
    }
}

/// Run one claimed row on its handler (from the claim's registry snapshot)
/// and decide its outcome.
async fn execute(shared: &Shared, row: ClaimedAction, runnable: Option<Runnable>) -> Completion {
    let Some(Runnable { handler, metrics }) = runnable else {
        // Cannot happen (only served keys are claimed), but if it did, give
        // the row back, uncounted, for a host that has the action.
        tracing::warn!(
            action_id = row.id,
            "action `{}` missing from the claim snapshot: requeued",
            row.key
        );
        return Completion::requeue(row.id);
    };
    let invocation = Invocation {
        action_id: row.id.to_string(),
        attempt: row.attempt,
        timeout: row.timeout,
    };
    // Queue wait by the database's clock: claimed at `lease_expires_at -
    // lease`.
    let claimed_at = row.lease_expires_at
        - chrono::Duration::from_std(shared.config.lease).unwrap_or(chrono::Duration::zero());
    metrics.queue_wait((claimed_at - row.run_at).to_std().unwrap_or_default());
    let started = std::time::Instant::now();
    let outcome = handler
        .plugin
        .invoke(&shared.engine, &row.key.name, row.args, &invocation)
        .await;
    let run_time = started.elapsed();
    match outcome {
        Ok(result) => {
            metrics.attempt(OutcomeLabel::Succeeded, run_time);
            Completion::succeeded(row.id, result)
        }
        Err(failure) => {
            let config = &shared.config;
            let policy = handler.info.retry;
            let ms = Duration::from_millis;
            let initial = row
                .initial_backoff
                .or(policy.map(|p| ms(p.initial_backoff_ms)))
                .unwrap_or(config.default_initial_backoff);
            let max = row
                .max_backoff
                .or(policy.map(|p| ms(p.max_backoff_ms)))
                .unwrap_or(config.default_max_backoff);
            // Which build ran matters during a reload: name its digest.
            let digest = handler.plugin.digest.short();
            let retrying = failure.retryable && row.attempt < row.max_attempts;
            metrics.attempt(OutcomeLabel::of(Some(failure.kind), retrying), run_time);
            if retrying {
                let delay = backoff::jittered(initial, max, row.attempt);
                tracing::info!(
                    action_id = row.id,
                    attempt = row.attempt,
                    action = %row.key,
                    plugin = %handler.plugin.file_name(),
                    %digest,
                    "action `{}` failed, retrying in {delay:?}: {failure}",
                    row.key
                );
                // The retry becomes due silently: wake the loop then rather
                // than waiting for the next poll (a few ms late is fine: the
                // completion must be written first).
                let wake = shared.wake.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay + RETRY_WAKE_SLACK).await;
                    wake.notify_one();
                });
                Completion::retry(row.id, failure.payload(), delay)
            } else {
                tracing::warn!(
                    action_id = row.id,
                    attempt = row.attempt,
                    action = %row.key,
                    plugin = %handler.plugin.file_name(),
                    %digest,
                    "action `{}` failed: {failure}",
                    row.key
                );
                Completion::failed(row.id, failure.payload())
            }
        }
    }
}

/// Wake the claim loop on every notification. `PgListener` reconnects by
/// itself; while it is down the poll interval covers.
async fn listen(mut listener: PgListener, wake: Arc<Notify>) {
    loop {
        match listener.recv().await {
            Ok(_) => wake.notify_one(),
            Err(err) => {
                tracing::warn!("LISTEN connection: {err}; relying on polling until it reconnects");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Write completions in batches until every sender is gone, counting the
/// rows this host finished for good (for the final log line), on a
/// connection of the writer's own ([`Session`]). A batch that fails to write
/// is retried — never dropped — so a database outage loses nothing: every
/// [`RECONNECT_EVERY`](crate::db::session::RECONNECT_EVERY) while the
/// database is away (the first write after it is back commits within that),
/// with backoff when the server rejects the statement (see [`Retry`]).
///
/// Only the newest claim of a row may complete it. The lease guard in SQL
/// knows only the owner, and a claim lost in a database crash can be
/// followed by this same host claiming the row again: before every attempt
/// to write, outcomes of an attempt older than the row's newest claim here
/// are dropped (that attempt lost its lease) and logged.
async fn write_completions(
    mut session: Session,
    owner: Arc<str>,
    shared: Arc<Shared>,
    mut done: mpsc::UnboundedReceiver<Outcome>,
    written_count: Arc<AtomicU64>,
) {
    let metrics = &shared.metrics;
    let mut batch: Vec<Outcome> = Vec::with_capacity(MAX_COMPLETION_BATCH);
    let mut retry = Retry::new("completing rows");
    while let Some(first) = done.recv().await {
        batch.push(first);
        while batch.len() < MAX_COMPLETION_BATCH {
            match done.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut retried = false;
        loop {
            drop_stale(&shared, &mut batch);
            if batch.is_empty() {
                break;
            }
            let completions = || batch.iter().map(|o| &o.completion);
            let written = match session.conn().await {
                Ok(conn) => queue::complete(&mut *conn, &owner, completions()).await,
                Err(err) => Err(err),
            };
            match written {
                Ok(written) => {
                    metrics.completion_batch(batch.len());
                    retry.succeeded();
                    forget_claims(&shared, &batch);
                    let finished = completions()
                        .filter(|c| written.contains(&c.id) && c.outcome.is_final())
                        .count();
                    written_count.fetch_add(finished as u64, Ordering::Relaxed);
                    let lost: Vec<_> = completions()
                        .map(|c| c.id)
                        .filter(|id| !written.contains(id))
                        .collect();
                    if !lost.is_empty() && retried {
                        tracing::warn!(
                            ?lost,
                            "completions not written: this host no longer holds those rows \
                             (or the attempt that failed had committed them)"
                        );
                    } else if !lost.is_empty() {
                        metrics.leases_lost(lost.len());
                        tracing::warn!(
                            ?lost,
                            "completions not written: this host no longer holds those rows"
                        );
                    }
                    break;
                }
                Err(err) => {
                    session.reset();
                    retried = true;
                    tokio::time::sleep(retry.failed(&err)).await;
                }
            }
        }
        batch.clear();
    }
}

/// Drop the outcomes of attempts that are not their row's newest claim on
/// this host (see [`write_completions`]).
fn drop_stale(shared: &Shared, batch: &mut Vec<Outcome>) {
    let claims = shared.claims.lock().unwrap_or_else(|p| p.into_inner());
    batch.retain(|o| match claims.get(&o.completion.id) {
        Some(newest) if *newest == o.attempt => true,
        Some(_) => {
            tracing::warn!(
                action_id = o.completion.id,
                "an attempt finished after its row was claimed again here: it lost its lease \
                 (its claim was lost in a database crash); its outcome is dropped"
            );
            false
        }
        // Already written: a shutdown's requeue racing the attempt's own
        // outcome (the first one written wins, as in `queue::complete`).
        None => false,
    });
}

/// After a write: the rows of `batch` need no claim record any more (unless
/// claimed again meanwhile).
fn forget_claims(shared: &Shared, batch: &[Outcome]) {
    let mut claims = shared.claims.lock().unwrap_or_else(|p| p.into_inner());
    for o in batch {
        if claims.get(&o.completion.id) == Some(&o.attempt) {
            claims.remove(&o.completion.id);
        }
    }
}

/// Renew, rescue, heartbeat, fail unknown actions — each on its own period —
/// and announce registry changes at once; republish the plugin files on
/// every reload event.
async fn maintain(
    pool: PgPool,
    owner: Arc<str>,
    shared: Arc<Shared>,
    mut changes: broadcast::Receiver<crate::registry::Change>,
    mut reloads: Option<broadcast::Receiver<ReloadEvent>>,
) {
    let config = &shared.config;
    let mut renew = tokio::time::interval(config.renew_every);
    let mut rescue = tokio::time::interval(config.rescue_every);
    let mut heartbeat = tokio::time::interval(config.heartbeat_every);
    for timer in [&mut renew, &mut rescue, &mut heartbeat] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    // The worker holds the registry, so its channel cannot close while this
    // runs; if it ever did, stop listening rather than spin on it.
    let mut closed = false;
    loop {
        tokio::select! {
            _ = renew.tick() => renew_leases(&pool, &owner, &shared).await,
            _ = rescue.tick() => {
                rescue_expired(&pool, &shared.metrics).await;
                fail_unknown(&pool, config).await;
            }
            _ = heartbeat.tick() => send_heartbeat(&pool, &owner, &shared).await,
            changed = reloaded(&mut reloads) => {
                // The file list changed (a rejection changes no key, so the
                // registry would not say): publish it now.
                if changed {
                    send_heartbeat(&pool, &owner, &shared).await;
                }
            }
            change = changes.recv(), if !closed => {
                let keys = match change {
                    Ok(change) => change.served().map(ToString::to_string).collect(),
                    Err(broadcast::error::RecvError::Lagged(_)) => shared.registry.names(),
                    Err(broadcast::error::RecvError::Closed) => {
                        closed = true;
                        continue;
                    }
                };
                announce(&pool, &owner, &shared, &keys).await;
            }
        }
    }
}

/// Extend the leases of the rows running here; abandon the ones this host no
/// longer holds (rescued by another host, or cancelled).
async fn renew_leases(pool: &PgPool, owner: &str, shared: &Shared) {
    let ids: Vec<i64> = shared
        .inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .copied()
        .collect();
    if ids.is_empty() {
        return;
    }
    match queue::renew(pool, owner, &ids, shared.config.lease).await {
        Ok(owned) => {
            // Abort outside the lock: the aborted task's guard takes it when
            // it is dropped.
            let lost: Vec<(i64, AbortHandle)> = {
                let mut inflight = shared.inflight.lock().unwrap_or_else(|p| p.into_inner());
                ids.iter()
                    .filter(|id| !owned.contains(id))
                    .filter_map(|id| inflight.remove(id).map(|(_, h)| (*id, h)))
                    .collect()
            };
            shared.metrics.leases_lost(lost.len());
            let mut claims = shared.claims.lock().unwrap_or_else(|p| p.into_inner());
            for (id, _) in &lost {
                claims.remove(id);
            }
            drop(claims);
            for (id, handle) in lost {
                handle.abort();
                tracing::warn!(
                    action_id = id,
                    "lost the lease (another host may run it): attempt abandoned"
                );
            }
        }
        Err(err) => tracing::error!("{}", one_line(&err)),
    }
}

/// Take back the rows of hosts whose leases expired.
async fn rescue_expired(pool: &PgPool, metrics: &Metrics) {
    let lease_expired = sandbox::host_error_payload(
        "LeaseExpired",
        "the host running this attempt stopped renewing its lease (it died or lost the database)",
    );
    match queue::requeue_expired(pool, &lease_expired).await {
        Ok(rescued) => {
            metrics.leases_rescued(rescued.len());
            for r in rescued {
                tracing::warn!(
                    action_id = r.id,
                    previous_owner = %r.previous_owner,
                    status = %r.status,
                    "rescued a row whose lease expired"
                );
            }
        }
        Err(err) => tracing::error!("{}", one_line(&err)),
    }
}

/// Fail the rows whose action no live host has served for too long.
async fn fail_unknown(pool: &PgPool, config: &WorkerConfig) {
    let error_for = |module: &str, name: &str| {
        sandbox::host_error_payload(
            "UnknownActionError",
            &format!(
                "no live host serves action `{module}:{name}` (waited {:?})",
                config.unknown_after
            ),
        )
    };
    match queue::fail_unknown(pool, config.unknown_after, config.host_ttl, error_for).await {
        Ok(ids) if !ids.is_empty() => {
            tracing::warn!(?ids, "failed rows whose action no host serves")
        }
        Ok(_) => {}
        Err(err) => tracing::error!("{}", one_line(&err)),
    }
}

/// Waits for the reloader's next event, if the worker follows one (pending
/// forever otherwise, or once its channel closed); returns whether the file
/// list may have changed. A lagged receiver missed events: it may have.
async fn reloaded(reloads: &mut Option<broadcast::Receiver<ReloadEvent>>) -> bool {
    let Some(receiver) = reloads else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(event) => !matches!(event.outcome, FileOutcome::Unchanged { .. }),
        Err(broadcast::error::RecvError::Lagged(_)) => true,
        Err(broadcast::error::RecvError::Closed) => {
            *reloads = None;
            std::future::pending().await
        }
    }
}

/// Write this host's row in `cairn.hosts`: what it serves now and, if the
/// worker follows a plugin directory, its plugin files.
async fn write_heartbeat(pool: &PgPool, owner: &str, shared: &Shared) -> Result<()> {
    let keys = shared.registry.names();
    match &shared.plugin_dir {
        Some(dir) => queue::heartbeat_with_plugins(pool, owner, &keys, &published(dir)).await,
        None => queue::heartbeat(pool, owner, &keys).await,
    }
}

/// What this host publishes of its plugin files: names, digests, modules,
/// action names and rejections — never settings or secrets.
fn published(dir: &PluginDir) -> Vec<LoadedPlugin> {
    dir.files()
        .iter()
        .map(|f| LoadedPlugin {
            file: display_name(&f.file),
            digest: f.serving.as_ref().map(|p| p.digest.hex()),
            module: f.serving.as_ref().map(|p| p.module.clone()),
            actions: f
                .serving
                .as_ref()
                .map(|p| p.actions.iter().map(|a| a.name.clone()).collect())
                .unwrap_or_default(),
            rejected: f.rejected.as_ref().map(|r| RejectedVersion {
                digest: r.digest.map(|d| d.hex()),
                reason: format!("({}) {}", r.error.phase, r.error.message),
            }),
        })
        .collect()
}

/// Refresh this host's row in `cairn.hosts` (see [`write_heartbeat`]).
async fn send_heartbeat(pool: &PgPool, owner: &str, shared: &Shared) {
    if let Err(err) = write_heartbeat(pool, owner, shared).await {
        tracing::error!("{}", one_line(&err));
    }
}

/// The registry changed: publish what this host serves now, then wake every
/// host for the rows of `keys` that may have waited for it.
async fn announce(pool: &PgPool, owner: &str, shared: &Shared, keys: &[String]) {
    send_heartbeat(pool, owner, shared).await;
    if !keys.is_empty() {
        if let Err(err) = notify::actions_available(pool, keys).await {
            tracing::warn!("after a reload: {}", one_line(&err));
        }
    }
}
