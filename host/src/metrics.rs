//! The host's Prometheus metrics: what the worker, the reloader and the
//! queue-depth refresher record, and what `GET /metrics` encodes.
//!
//! # Strategy
//!
//! One [`Metrics`] per host, built before the worker and shared (`Arc`) with
//! whoever records. Recording is what the hot path pays, so every call there
//! is a few atomic operations on counters, gauges and histogram buckets from
//! `prometheus-client` (the Prometheus project's own Rust client), with no
//! allocation and no label lookup: the worker takes an [`ActionMetrics`] per
//! registered action once per registry change ([`Metrics::action`]) and
//! records each attempt through it. Nothing is computed or read from the
//! database per scrape: the scrape only encodes (see
//! [`Metrics::encode`]), and queue depth is a gauge a background task
//! refreshes from the database every few seconds
//! ([`spawn_depth_refresher`]), so a scraper hammering `/metrics` cannot load
//! the database.
//!
//! **Labels come only from registered actions, never from row data.** The
//! worker records an attempt through the [`ActionMetrics`] of the handler
//! that ran it (an action some plugin declared), and queue depth keeps a separate series only
//! for keys this host serves; rows of any other `module:name` — anyone with
//! database access can enqueue any string — are summed under
//! `action="other"` (a real key always holds a `:`). So the number of series
//! is bounded by what the operator deployed.
//!
//! # The metrics
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `cairn_attempts_total` | counter | `action`, `outcome` | finished attempts, by [`OutcomeLabel`] |
//! | `cairn_run_seconds` | histogram | `action` | time in the sandbox per attempt |
//! | `cairn_queue_wait_seconds` | histogram | `action` | due (`run_at`) → claimed, by the database's clock |
//! | `cairn_claim_batch_rows` | histogram | | rows per claim statement (non-empty claims) |
//! | `cairn_completion_batch_rows` | histogram | | completions per write statement |
//! | `cairn_worker_running` | gauge | | 1 while the worker claims, 0 before it starts and once it shuts down |
//! | `cairn_inflight_actions` | gauge | | attempts running on this host |
//! | `cairn_free_permits` | gauge | | room for more (`--concurrency` − in flight) |
//! | `cairn_queue_depth_rows` | gauge | `action`, `status` | live rows (`queued`, `running`) in the whole queue |
//! | `cairn_queue_depth_refreshed_timestamp_seconds` | gauge | | when depth was last read |
//! | `cairn_plugin_loads_total` | counter | | plugin files that started serving (at start or added) |
//! | `cairn_plugin_reloads_total` | counter | | plugin files replaced by a new version |
//! | `cairn_plugin_unloads_total` | counter | | plugin files removed |
//! | `cairn_plugin_rejections_total` | counter | | plugin versions refused (any phase) |
//! | `cairn_leases_lost_total` | counter | | rows this host lost while running them (not renewed in time, cancelled) |
//! | `cairn_leases_rescued_total` | counter | | rows this host took back from a host whose lease expired |
//!
//! # Failure modes
//!
//! None on the recording side (no I/O, no allocation). A
//! depth refresh that fails is logged and the previous values stay, with
//! `cairn_queue_depth_refreshed_timestamp_seconds` showing their age.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::error::one_line;
use crate::key::ActionKey;
use crate::queue::admin::Depth;
use crate::queue::ActionStatus;
use crate::registry::ChangeKind;
use crate::reload::{FileOutcome, PluginDir, ReloadEvent};
use crate::sandbox::FailureKind;

/// The `outcome` label of `cairn_attempts_total`: what became of one
/// attempt. Each attempt counts exactly once: the way it failed wins over
/// whether it is retried, so `timed_out` + `trapped` + `out_of_memory` +
/// `retried` + `failed` + `succeeded` is every attempt that finished on this
/// host. (The queue's [`AttemptOutcome`](crate::queue::AttemptOutcome) is
/// what gets written to the row; this is how it is counted.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeLabel {
    /// The action returned a result.
    Succeeded,
    /// The action returned an error (or panicked) and the row failed for good.
    Failed,
    /// The action returned a retryable error and the row will run again.
    Retried,
    /// The attempt ran past its deadline (retried or not).
    TimedOut,
    /// The guest trapped, or its instance could not be created.
    Trapped,
    /// The guest hit its memory cap.
    OutOfMemory,
}

impl OutcomeLabel {
    /// The outcome of an attempt that failed with `kind` (`None`: it
    /// succeeded), `retried` saying whether the row runs again.
    pub fn of(kind: Option<FailureKind>, retried: bool) -> Self {
        match kind {
            None => OutcomeLabel::Succeeded,
            Some(FailureKind::Timeout) => OutcomeLabel::TimedOut,
            Some(FailureKind::Trap | FailureKind::Instantiate) => OutcomeLabel::Trapped,
            Some(FailureKind::OutOfMemory) => OutcomeLabel::OutOfMemory,
            Some(FailureKind::Action | FailureKind::Panic) if retried => OutcomeLabel::Retried,
            Some(FailureKind::Action | FailureKind::Panic) => OutcomeLabel::Failed,
            // Never retried: the guest's bytes would not change.
            Some(FailureKind::InvalidResult) => OutcomeLabel::Failed,
        }
    }

    /// Every outcome, in the order of [`ActionMetrics`]' counters.
    pub const ALL: [OutcomeLabel; 6] = [
        OutcomeLabel::Succeeded,
        OutcomeLabel::Failed,
        OutcomeLabel::Retried,
        OutcomeLabel::TimedOut,
        OutcomeLabel::Trapped,
        OutcomeLabel::OutOfMemory,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeLabel::Succeeded => "succeeded",
            OutcomeLabel::Failed => "failed",
            OutcomeLabel::Retried => "retried",
            OutcomeLabel::TimedOut => "timed_out",
            OutcomeLabel::Trapped => "trapped",
            OutcomeLabel::OutOfMemory => "out_of_memory",
        }
    }
}

impl EncodeLabelValue for OutcomeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    action: String,
    outcome: OutcomeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    action: String,
    status: String,
}

/// The `action` label of queue-depth rows whose action this host does not
/// serve (a real key always holds a `:`, so it cannot collide).
pub const OTHER_ACTION: &str = "other";

/// Seconds buckets for run time and queue wait: 0.5 ms to 5 minutes, about
/// ×2.5 apart — no-op actions take well under a millisecond, real ones up to
/// the 30 s default timeout, and queue waits under a backlog run to minutes.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0,
    300.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// Powers of two from 1 to 1024 (the largest completion batch).
fn batch_histogram() -> Histogram {
    Histogram::new((0..=10).map(|i| f64::from(1u32 << i)))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The host's metrics. Cheap to record into from any thread; see the module
/// docs for the names.
pub struct Metrics {
    registry: Registry,
    attempts: Family<AttemptLabels, Counter>,
    run_seconds: HistogramFamily<ActionLabels>,
    queue_wait_seconds: HistogramFamily<ActionLabels>,
    claim_batch: Histogram,
    completion_batch: Histogram,
    worker_running: Gauge,
    inflight: Gauge,
    free_permits: Gauge,
    depth: Family<DepthLabels, Gauge>,
    /// The actions `depth` has series for, so that a key no longer served
    /// loses its series.
    depth_actions: std::sync::Mutex<HashSet<String>>,
    depth_refreshed: Gauge<f64, AtomicU64>,
    plugin_loads: Counter,
    plugin_reloads: Counter,
    plugin_unloads: Counter,
    plugin_rejections: Counter,
    leases_lost: Counter,
    leases_rescued: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let attempts = Family::<AttemptLabels, Counter>::default();
        let run_seconds: HistogramFamily<ActionLabels> =
            Family::new_with_constructor(seconds_histogram);
        let queue_wait_seconds: HistogramFamily<ActionLabels> =
            Family::new_with_constructor(seconds_histogram);
        let claim_batch = batch_histogram();
        let completion_batch = batch_histogram();
        let depth = Family::<DepthLabels, Gauge>::default();
        let depth_refreshed = Gauge::<f64, AtomicU64>::default();
        let m = Metrics {
            registry: Registry::default(),
            attempts,
            run_seconds,
            queue_wait_seconds,
            claim_batch,
            completion_batch,
            worker_running: Gauge::default(),
            inflight: Gauge::default(),
            free_permits: Gauge::default(),
            depth,
            depth_actions: Default::default(),
            depth_refreshed,
            plugin_loads: Counter::default(),
            plugin_reloads: Counter::default(),
            plugin_unloads: Counter::default(),
            plugin_rejections: Counter::default(),
            leases_lost: Counter::default(),
            leases_rescued: Counter::default(),
        };
        registry.register(
            "attempts",
            "Finished attempts by action and outcome",
            m.attempts.clone(),
        );
        registry.register_with_unit(
            "run",
            "Time an attempt spent in the sandbox",
            Unit::Seconds,
            m.run_seconds.clone(),
        );
        registry.register_with_unit(
            "queue_wait",
            "Time from a row being due (run_at) to its claim, by the database's clock",
            Unit::Seconds,
            m.queue_wait_seconds.clone(),
        );
        registry.register_with_unit(
            "claim_batch",
            "Rows per claim statement (claims that found rows)",
            Unit::Other("rows".into()),
            m.claim_batch.clone(),
        );
        registry.register_with_unit(
            "completion_batch",
            "Completions per write statement",
            Unit::Other("rows".into()),
            m.completion_batch.clone(),
        );
        registry.register(
            "worker_running",
            "1 while this host's worker claims rows",
            m.worker_running.clone(),
        );
        registry.register(
            "inflight_actions",
            "Attempts running on this host",
            m.inflight.clone(),
        );
        registry.register(
            "free_permits",
            "Attempts this host could start now (--concurrency minus in flight)",
            m.free_permits.clone(),
        );
        registry.register_with_unit(
            "queue_depth",
            "Live rows in the queue by action (`other`: actions this host does not serve) and status",
            Unit::Other("rows".into()),
            m.depth.clone(),
        );
        registry.register(
            "queue_depth_refreshed_timestamp_seconds",
            "When cairn_queue_depth_rows was last read from the database (Unix time)",
            m.depth_refreshed.clone(),
        );
        registry.register(
            "plugin_loads",
            "Plugin files that started serving",
            m.plugin_loads.clone(),
        );
        registry.register(
            "plugin_reloads",
            "Plugin files replaced by a new version",
            m.plugin_reloads.clone(),
        );
        registry.register(
            "plugin_unloads",
            "Plugin files removed",
            m.plugin_unloads.clone(),
        );
        registry.register(
            "plugin_rejections",
            "Plugin versions refused",
            m.plugin_rejections.clone(),
        );
        registry.register(
            "leases_lost",
            "Rows this host lost while running them",
            m.leases_lost.clone(),
        );
        registry.register(
            "leases_rescued",
            "Rows this host took back from hosts whose lease expired",
            m.leases_rescued.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The series of one registered action, created (at zero, for every
    /// outcome) if they do not exist yet. The worker calls this once per
    /// action per registry change and records through the handle, so the
    /// per-attempt cost has no label lookup and no allocation.
    pub fn action(&self, key: &ActionKey) -> ActionMetrics {
        let action = key.to_string();
        let attempts = OutcomeLabel::ALL.map(|outcome| {
            self.attempts
                .get_or_create(&AttemptLabels {
                    action: action.clone(),
                    outcome,
                })
                .clone()
        });
        let labels = ActionLabels { action };
        ActionMetrics {
            attempts,
            run_seconds: self.run_seconds.get_or_create(&labels).clone(),
            queue_wait_seconds: self.queue_wait_seconds.get_or_create(&labels).clone(),
        }
    }

    /// A claim statement returned `rows` rows (call only when it found some).
    pub fn claimed(&self, rows: usize) {
        self.claim_batch.observe(rows as f64);
    }

    /// A completion statement wrote a batch of `rows`.
    pub fn completion_batch(&self, rows: usize) {
        self.completion_batch.observe(rows as f64);
    }

    /// The worker started (registered, listening) with `permits` free.
    pub fn worker_started(&self, permits: usize) {
        self.free_permits.set(permits as i64);
        self.inflight.set(0);
        self.worker_running.set(1);
    }

    /// The worker stopped claiming (shutdown began).
    pub fn worker_stopping(&self) {
        self.worker_running.set(0);
    }

    /// Whether the worker is claiming rows (for `/healthz`).
    pub fn worker_running(&self) -> bool {
        self.worker_running.get() == 1
    }

    /// An attempt took a permit.
    pub fn started(&self) {
        self.inflight.inc();
        self.free_permits.dec();
    }

    /// An attempt gave its permit back (finished, aborted or lost).
    pub fn finished(&self) {
        self.inflight.dec();
        self.free_permits.inc();
    }

    /// This host lost `n` rows it was running.
    pub fn leases_lost(&self, n: usize) {
        self.leases_lost.inc_by(n as u64);
    }

    /// This host rescued `n` rows from hosts whose lease expired.
    pub fn leases_rescued(&self, n: usize) {
        self.leases_rescued.inc_by(n as u64);
    }

    /// A plugin file started serving.
    pub fn plugin_loaded(&self) {
        self.plugin_loads.inc();
    }

    /// A plugin file was replaced by a new version.
    pub fn plugin_reloaded(&self) {
        self.plugin_reloads.inc();
    }

    /// A plugin file was removed.
    pub fn plugin_unloaded(&self) {
        self.plugin_unloads.inc();
    }

    /// A plugin version was refused.
    pub fn plugin_rejected(&self) {
        self.plugin_rejections.inc();
    }

    /// Replace the queue-depth gauges with `depth`, keeping a series per key
    /// in `served` and summing every other key under [`OTHER_ACTION`]. Series
    /// that disappeared read 0 from now on (Prometheus keeps a vanished
    /// series' last value for a while; 0 is the truth).
    pub fn set_depth(&self, depth: &[Depth], served: &HashSet<ActionKey>) {
        let mut sums: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for d in depth {
            let action = if served.contains(&d.action) {
                d.action.to_string()
            } else {
                OTHER_ACTION.to_owned()
            };
            *sums.entry((action, d.status.as_str())).or_default() += d.rows;
        }
        // Every series seen before and not now goes to 0 (the label set stays
        // bounded: only served keys, `other`, and two statuses).
        for status in [ActionStatus::Queued, ActionStatus::Running] {
            for action in served
                .iter()
                .map(ToString::to_string)
                .chain([OTHER_ACTION.to_owned()])
            {
                sums.entry((action, status.as_str())).or_default();
            }
        }
        let now_actions: HashSet<String> = sums.keys().map(|(a, _)| a.clone()).collect();
        let mut before = self.depth_actions.lock().unwrap_or_else(|p| p.into_inner());
        for gone in before.difference(&now_actions) {
            for status in [ActionStatus::Queued, ActionStatus::Running] {
                self.depth.remove(&DepthLabels {
                    action: gone.clone(),
                    status: status.as_str().to_owned(),
                });
            }
        }
        *before = now_actions;
        drop(before);
        for ((action, status), rows) in sums {
            self.depth
                .get_or_create(&DepthLabels {
                    action,
                    status: status.to_owned(),
                })
                .set(rows);
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.depth_refreshed.set(now);
    }

    /// Everything in the Prometheus text (OpenMetrics) format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug
        // in a label value, which would show up as a truncated scrape.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            let _ = writeln!(out, "# encoding failed: {err}");
        }
        out
    }
}

/// The series of one registered action (see [`Metrics::action`]): handles
/// onto the shared counters and histograms, so recording is atomic
/// operations only. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ActionMetrics {
    /// By [`OutcomeLabel::ALL`] order.
    attempts: [Counter; 6],
    run_seconds: Histogram,
    queue_wait_seconds: Histogram,
}

impl ActionMetrics {
    /// One attempt finished with `outcome` after `run_time` in the sandbox.
    pub fn attempt(&self, outcome: OutcomeLabel, run_time: Duration) {
        // `ALL` lists the variants in declaration order.
        self.attempts[outcome as usize].inc();
        self.run_seconds.observe(run_time.as_secs_f64());
    }

    /// A row waited `wait` from due to claimed.
    pub fn queue_wait(&self, wait: Duration) {
        self.queue_wait_seconds.observe(wait.as_secs_f64());
    }
}

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often [`spawn_depth_refresher`] reads queue depth when not told
/// otherwise: often enough for a dashboard, rare enough that the two
/// index scans it costs are noise (`CAIRN_METRICS_DEPTH_MS` overrides).
pub const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// The depth refresh period from `CAIRN_METRICS_DEPTH_MS`, or [`DEPTH_EVERY`].
///
/// # Errors
///
/// The variable is set but not a positive number of milliseconds.
pub fn depth_every_from_env() -> anyhow::Result<Duration> {
    match std::env::var("CAIRN_METRICS_DEPTH_MS") {
        Err(_) => Ok(DEPTH_EVERY),
        Ok(v) if v.trim().is_empty() => Ok(DEPTH_EVERY),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => anyhow::bail!(
                "metrics config: CAIRN_METRICS_DEPTH_MS must be a positive number of milliseconds, got {v:?}"
            ),
        },
    }
}

/// Reads queue depth into `metrics` every `every` until the returned task is
/// aborted. `served` gives the keys this host serves at each refresh.
pub fn spawn_depth_refresher(
    pool: sqlx::PgPool,
    metrics: Arc<Metrics>,
    served: impl Fn() -> HashSet<ActionKey> + Send + 'static,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match crate::queue::admin::depth(&pool).await {
                Ok(depth) => metrics.set_depth(&depth, &served()),
                Err(err) => tracing::warn!(
                    "metrics: reading queue depth: {}; keeping the previous values",
                    one_line(&err)
                ),
            }
        }
    })
}

/// Counts the plugin directory's changes into `metrics` (loads, reloads,
/// unloads, rejections): first what `dir` holds now, then every
/// [`ReloadEvent`] until the returned task is aborted. Runs off the data
/// path, on the reloader's events. A subscriber that lagged behind the
/// reloader's event buffer undercounts (logged).
pub fn follow_plugins(dir: &PluginDir, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    // Subscribe before reading the files, so no change falls in between
    // (one may be counted twice; none is missed).
    let mut events = dir.subscribe();
    for file in dir.files() {
        if file.serving.is_some() {
            metrics.plugin_loaded();
        }
        if file.rejected.is_some() {
            metrics.plugin_rejected();
        }
    }
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => count_plugin_event(&metrics, &event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => tracing::warn!(
                    "metrics: missed {n} plugin reload events; the plugin counters undercount them"
                ),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

fn count_plugin_event(metrics: &Metrics, event: &ReloadEvent) {
    match &event.outcome {
        FileOutcome::Applied(change) => match change.kind() {
            ChangeKind::Added => metrics.plugin_loaded(),
            ChangeKind::Replaced => metrics.plugin_reloaded(),
            ChangeKind::Removed => metrics.plugin_unloaded(),
            ChangeKind::Unchanged => {}
        },
        FileOutcome::Rejected { .. } => metrics.plugin_rejected(),
        FileOutcome::Unchanged { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ActionKey {
        ActionKey::parse(text).unwrap()
    }

    fn depth(module: &str, name: &str, status: ActionStatus, rows: i64) -> Depth {
        Depth {
            action: ActionKey::new(module, name),
            status,
            rows,
        }
    }

    #[test]
    fn attempts_are_labelled_by_action_and_outcome() {
        let m = Metrics::new();
        let hello = m.action(&key("greet:hello"));
        hello.attempt(OutcomeLabel::Succeeded, Duration::from_millis(2));
        // A second handle onto the same series (a registry change).
        m.action(&key("greet:hello"))
            .attempt(OutcomeLabel::Succeeded, Duration::from_millis(3));
        m.action(&key("math:divide")).attempt(
            OutcomeLabel::of(Some(FailureKind::Action), false),
            Duration::ZERO,
        );
        let text = m.encode();
        assert!(
            text.contains(r#"cairn_attempts_total{action="greet:hello",outcome="succeeded"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cairn_attempts_total{action="math:divide",outcome="failed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cairn_run_seconds_count{action="greet:hello"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cairn_attempts_total{action="greet:hello",outcome="timed_out"} 0"#),
            "every outcome of a registered action is a series from the start: {text}"
        );
    }

    #[test]
    fn outcome_labels_index_their_counters() {
        for (i, outcome) in OutcomeLabel::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
    }

    #[test]
    fn failure_kind_wins_over_retrying() {
        use OutcomeLabel::*;
        assert_eq!(OutcomeLabel::of(Some(FailureKind::Timeout), true), TimedOut);
        assert_eq!(
            OutcomeLabel::of(Some(FailureKind::OutOfMemory), false),
            OutOfMemory
        );
        assert_eq!(
            OutcomeLabel::of(Some(FailureKind::Instantiate), true),
            Trapped
        );
        assert_eq!(OutcomeLabel::of(Some(FailureKind::Action), true), Retried);
        assert_eq!(OutcomeLabel::of(Some(FailureKind::Panic), false), Failed);
        assert_eq!(OutcomeLabel::of(None, false), Succeeded);
    }

    #[test]
    fn depth_of_unserved_actions_is_summed_under_other() {
        let m = Metrics::new();
        let served: HashSet<ActionKey> = [key("greet:hello")].into();
        m.set_depth(
            &[
                depth("greet", "hello", ActionStatus::Queued, 4),
                depth("<script>", "x", ActionStatus::Queued, 2),
                depth("evil", "y", ActionStatus::Queued, 3),
            ],
            &served,
        );
        let text = m.encode();
        assert!(
            text.contains(r#"cairn_queue_depth_rows{action="greet:hello",status="queued"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cairn_queue_depth_rows{action="other",status="queued"} 5"#),
            "{text}"
        );
        assert!(
            !text.contains("script"),
            "row data never becomes a label: {text}"
        );
        // Gone rows read 0, not their old value.
        m.set_depth(&[], &served);
        let text = m.encode();
        assert!(
            text.contains(r#"cairn_queue_depth_rows{action="greet:hello",status="queued"} 0"#),
            "{text}"
        );
        // A key no longer served loses its series.
        m.set_depth(&[], &HashSet::new());
        let text = m.encode();
        assert!(!text.contains("greet:hello"), "{text}");
    }

    #[test]
    fn inflight_and_free_permits_move_together() {
        let m = Metrics::new();
        m.worker_started(4);
        m.started();
        m.started();
        m.finished();
        let text = m.encode();
        assert!(text.contains("cairn_inflight_actions 1"), "{text}");
        assert!(text.contains("cairn_free_permits 3"), "{text}");
    }
}
