//! The executor's metrics: one registry of families, each a set of atomic
//! counters, gauges or histograms, served as `GET /metrics` (Prometheus text
//! format 0.0.4) on the remote API and optionally pushed to Graphite.
//!
//! Events are counted where they happen, one line each
//! (`metrics::get().hooks.runs.with_label_values(..).inc()`); nothing else is
//! shared. What is read rather than counted (the task's process tree from
//! `/proc`, its state and health from the owner's status snapshot, the
//! executor's own usage) is refreshed right before each scrape or push by
//! [`refresh`]. Every name starts with [`NAMESPACE`]; labels take a bounded
//! set of values (task states, hook and event names, check kinds), never
//! pids or command lines. The table is in `docs/metrics.md`.
//!
//! Adding a family group (say, the log pipeline's): a struct of its families
//! with a `new(&Registry)` built from the helpers below, one field in
//! [`Metrics`], one line in [`Metrics::new`].

pub mod graphite;
pub(crate) mod procfs;

use std::{
    collections::HashSet,
    sync::{LazyLock, OnceLock},
};

use prometheus::{
    core::{Atomic, GenericCounter, GenericGauge},
    Counter, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::status::StatusSnapshot;

/// The prefix of every metric name.
pub const NAMESPACE: &str = "mesos_hook_executor";

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Probe latency buckets, seconds.
const PROBE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Hook duration buckets, seconds.
const HOOK_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Every family, grouped by what it watches.
pub struct Metrics {
    registry: Registry,
    /// The task: state, uptime, process tree, scheduled end.
    pub task: TaskMetrics,
    /// Health checks and generic checks.
    pub health: HealthMetrics,
    /// Hook chains.
    pub hooks: HookMetrics,
    /// The agent link and status updates.
    pub agent: AgentMetrics,
    /// The remote-execution API.
    pub remote: RemoteMetrics,
    /// The executor process itself.
    pub executor: ExecutorMetrics,
    /// The Graphite push.
    pub graphite: GraphiteMetrics,
    /// The task's output pipeline (`logs`), mirrored from its own counters.
    pub output: OutputMetrics,
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        Self {
            task: TaskMetrics::new(&r),
            health: HealthMetrics::new(&r),
            hooks: HookMetrics::new(&r),
            agent: AgentMetrics::new(&r),
            remote: RemoteMetrics::new(&r),
            executor: ExecutorMetrics::new(&r),
            graphite: GraphiteMetrics::new(&r),
            output: OutputMetrics::new(&r),
            registry: r,
        }
    }

    /// Every family's current values.
    pub(crate) fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}

/// The task, refreshed from `/proc` and the status snapshot at each scrape.
pub struct TaskMetrics {
    /// 1 for the task's current Mesos state (label `state`).
    pub state: IntGaugeVec,
    /// 1, labelled with the task's and executor's ids.
    pub info: IntGaugeVec,
    /// Seconds since the task's root process started.
    pub uptime: Gauge,
    /// CPU seconds of the task's process tree (reaped children included).
    pub cpu: Counter,
    /// Resident memory of the task's process tree.
    pub rss: IntGauge,
    /// Processes in the task's tree.
    pub processes: IntGauge,
    /// When the task will be killed on schedule (label `reason`).
    pub scheduled_end: GaugeVec,
}

impl TaskMetrics {
    fn new(r: &Registry) -> Self {
        Self {
            state: int_gauge_vec(r, "task_state", "1 for the task's current Mesos state.", &["state"]),
            info: int_gauge_vec(r, "task_info", "1, labelled with the ids of the executor's task.", &["framework_id", "executor_id", "task_id"]),
            uptime: gauge(r, "task_uptime_seconds", "Seconds since the task's root process started."),
            cpu: counter(r, "task_cpu_seconds_total", "CPU time (user + system) of the task's process tree, including its reaped children."),
            rss: gauge(r, "task_memory_rss_bytes", "Resident memory of the task's process tree."),
            processes: gauge(r, "task_processes", "Processes in the task's tree."),
            scheduled_end: gauge_vec(r, "task_scheduled_end_timestamp_seconds", "Unix time at which the task is killed on schedule.", &["reason"]),
        }
    }
}

/// Health checks (`check="health"`) and generic checks (`check="check"`).
pub struct HealthMetrics {
    /// Probe results by check and result (`success`, `failure`).
    pub probes: IntCounterVec,
    /// Failed probes in a row, reset by a success.
    pub consecutive_failures: IntGaugeVec,
    /// How long each probe took.
    pub probe_duration: HistogramVec,
    /// 1 healthy, 0 unhealthy, absent until the first health result.
    pub healthy: IntGaugeVec,
}

impl HealthMetrics {
    fn new(r: &Registry) -> Self {
        Self {
            probes: counter_vec(
                r,
                "health_probes_total",
                "Check probes by check (health, check) and result (success, failure).",
                &["check", "result"],
            ),
            consecutive_failures: int_gauge_vec(
                r,
                "health_consecutive_failures",
                "Failed probes in a row, per check.",
                &["check"],
            ),
            probe_duration: histogram_vec(
                r,
                "health_probe_duration_seconds",
                "Duration of each check probe.",
                &["check"],
                PROBE_BUCKETS,
            ),
            healthy: int_gauge_vec(
                r,
                "task_healthy",
                "1 healthy, 0 unhealthy, as last reported to the agent.",
                &["check"],
            ),
        }
    }
}

/// Hook chains, by event and hook.
pub struct HookMetrics {
    /// Hook calls.
    pub runs: IntCounterVec,
    /// Hook calls that failed or timed out.
    pub failures: IntCounterVec,
    /// Duration of each hook call.
    pub duration: HistogramVec,
}

impl HookMetrics {
    fn new(r: &Registry) -> Self {
        let labels = &["event", "hook"];
        Self {
            runs: counter_vec(
                r,
                "hook_runs_total",
                "Hook calls by event and hook.",
                labels,
            ),
            failures: counter_vec(
                r,
                "hook_failures_total",
                "Hook calls that failed or timed out, by event and hook.",
                labels,
            ),
            duration: histogram_vec(
                r,
                "hook_duration_seconds",
                "Duration of each hook call, by event and hook.",
                labels,
                HOOK_BUCKETS,
            ),
        }
    }
}

/// The agent link and status updates.
pub struct AgentMetrics {
    /// Updates the agent accepted (`202`), by state.
    pub updates_sent: IntCounterVec,
    /// Update deliveries retried after an error.
    pub updates_retried: IntCounter,
    /// Updates the agent acknowledged.
    pub updates_acknowledged: IntCounter,
    /// Event streams that ended.
    pub disconnects: IntCounter,
    /// SUBSCRIBED after an earlier subscription.
    pub reconnects: IntCounter,
    /// SUBSCRIBED events.
    pub subscriptions: IntCounter,
    /// SUBSCRIBE attempts that failed.
    pub subscribe_failures: IntCounter,
}

impl AgentMetrics {
    fn new(r: &Registry) -> Self {
        Self {
            updates_sent: counter_vec(
                r,
                "status_updates_sent_total",
                "Status updates the agent accepted, by state.",
                &["state"],
            ),
            updates_retried: counter(
                r,
                "status_updates_retried_total",
                "Status update deliveries retried after an error.",
            ),
            updates_acknowledged: counter(
                r,
                "status_updates_acknowledged_total",
                "Status updates the agent acknowledged.",
            ),
            disconnects: counter(
                r,
                "agent_disconnects_total",
                "Event streams from the agent that ended.",
            ),
            reconnects: counter(
                r,
                "agent_reconnects_total",
                "Subscriptions after the first (the agent came back).",
            ),
            subscriptions: counter(
                r,
                "agent_subscriptions_total",
                "SUBSCRIBED events received.",
            ),
            subscribe_failures: counter(
                r,
                "agent_subscribe_failures_total",
                "SUBSCRIBE attempts that failed.",
            ),
        }
    }
}

/// The remote-execution API.
pub struct RemoteMetrics {
    /// Commands started.
    pub started: IntCounter,
    /// Execute requests refused, by reason.
    pub rejected: IntCounterVec,
    /// Commands running now.
    pub running: IntGauge,
    /// Executes waiting for a running slot now.
    pub queued: IntGauge,
    /// Finished results retained.
    pub retained: IntGauge,
}

impl RemoteMetrics {
    fn new(r: &Registry) -> Self {
        Self {
            started: counter(
                r,
                "remote_commands_started_total",
                "Remote commands started.",
            ),
            rejected: counter_vec(
                r,
                "remote_commands_rejected_total",
                "Execute requests refused, by reason (queue_full, queue_timeout, shutting_down, spawn_error, unauthorized, invalid).",
                &["reason"],
            ),
            running: gauge(r, "remote_commands_running", "Remote commands running now."),
            queued: gauge(
                r,
                "remote_commands_queued",
                "Execute requests waiting for a running slot now.",
            ),
            retained: gauge(
                r,
                "remote_results_retained",
                "Finished remote command results retained.",
            ),
        }
    }
}

/// The executor process itself.
pub struct ExecutorMetrics {
    /// Its CPU seconds.
    pub cpu: Counter,
    /// Its resident memory.
    pub rss: IntGauge,
    /// Scrapes of `/metrics` answered.
    pub scrapes: IntCounter,
}

impl ExecutorMetrics {
    fn new(r: &Registry) -> Self {
        Self {
            cpu: counter(
                r,
                "executor_cpu_seconds_total",
                "CPU time (user + system) of the executor process.",
            ),
            rss: gauge(
                r,
                "executor_memory_rss_bytes",
                "Resident memory of the executor process.",
            ),
            scrapes: counter(
                r,
                "metrics_scrapes_total",
                "GET /metrics requests answered.",
            ),
        }
    }
}

/// The Graphite push.
pub struct GraphiteMetrics {
    /// Lines written to Graphite.
    pub sent: IntCounter,
    /// Lines dropped, by cause (`connect`, `write`, `busy`).
    pub dropped: IntCounterVec,
}

impl GraphiteMetrics {
    fn new(r: &Registry) -> Self {
        Self {
            sent: counter(r, "graphite_lines_sent_total", "Lines written to Graphite."),
            dropped: counter_vec(
                r,
                "graphite_lines_dropped_total",
                "Lines not delivered to Graphite, by cause (connect, write, busy).",
                &["cause"],
            ),
        }
    }
}

/// The task's output pipeline: the `logs` module keeps its own atomic
/// counters (they also feed `GET /remote/status`); these families mirror
/// them at each scrape or push, through the source set by
/// [`set_output_source`]. They stay at zero when the output is not captured.
pub struct OutputMetrics {
    /// Bytes of the task's output written to the sandbox files, by stream.
    pub bytes: IntCounterVec,
    /// Lines seen by the scraper.
    pub lines: IntCounter,
    /// Lines cut at the line limit.
    pub truncated: IntCounter,
    /// Lines neither JSON nor logfmt, not shipped.
    pub not_shipped: IntCounter,
    /// Entries handed to the transport.
    pub shipped: IntCounter,
    /// Entries dropped, by cause.
    pub dropped: IntCounterVec,
    /// Sandbox file rotations.
    pub rotations: IntCounter,
    /// Failed writes to the sandbox files.
    pub sandbox_write_errors: IntCounter,
}

impl OutputMetrics {
    fn new(r: &Registry) -> Self {
        Self {
            bytes: counter_vec(
                r,
                "task_output_bytes_total",
                "Bytes of the task's output passed to the sandbox files, by stream (stdout, stderr).",
                &["stream"],
            ),
            lines: counter(r, "task_output_lines_total", "Lines of the task's output seen by the scraper."),
            truncated: counter(
                r,
                "task_output_lines_truncated_total",
                "Lines cut at HOOK_EXECUTOR_LOG_MAX_LINE.",
            ),
            not_shipped: counter(
                r,
                "task_output_lines_not_shipped_total",
                "Lines neither JSON nor logfmt, not shipped (no log-scraping-all).",
            ),
            shipped: counter(
                r,
                "task_output_entries_shipped_total",
                "Entries handed to the Logstash transport.",
            ),
            dropped: counter_vec(
                r,
                "task_output_entries_dropped_total",
                "Entries not shipped, by cause (queue_full, rate, size, send_error, at_exit).",
                &["cause"],
            ),
            rotations: counter(r, "task_output_rotations_total", "Sandbox file rotations."),
            sandbox_write_errors: counter(
                r,
                "task_output_sandbox_write_errors_total",
                "Failed writes of the task's output to the sandbox files.",
            ),
        }
    }

    /// Raises every family to the pipeline's current figures.
    fn observe(&self, f: &OutputFigures) {
        raise_int(&self.bytes.with_label_values(&["stdout"]), f.stdout_bytes);
        raise_int(&self.bytes.with_label_values(&["stderr"]), f.stderr_bytes);
        raise_int(&self.lines, f.lines);
        raise_int(&self.truncated, f.truncated);
        raise_int(&self.not_shipped, f.not_shipped);
        raise_int(&self.shipped, f.shipped);
        for (cause, n) in f.dropped {
            raise_int(&self.dropped.with_label_values(&[cause]), n);
        }
        raise_int(&self.rotations, f.rotations);
        raise_int(&self.sandbox_write_errors, f.sandbox_write_errors);
    }
}

/// The output pipeline's cumulative figures, as the `logs` module reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputFigures {
    /// Bytes of the task's stdout passed to the sandbox file.
    pub stdout_bytes: u64,
    /// Bytes of the task's stderr passed to the sandbox file.
    pub stderr_bytes: u64,
    /// Lines seen by the scraper.
    pub lines: u64,
    /// Lines cut at the line limit.
    pub truncated: u64,
    /// Lines neither JSON nor logfmt, not shipped.
    pub not_shipped: u64,
    /// Entries handed to the transport.
    pub shipped: u64,
    /// `(cause, count)` for every drop cause.
    pub dropped: [(&'static str, u64); 5],
    /// Sandbox file rotations.
    pub rotations: u64,
    /// Failed writes to the sandbox files.
    pub sandbox_write_errors: u64,
}

/// Where [`refresh`] reads the output pipeline's figures (`None` while the
/// output is not captured).
type OutputSource = Box<dyn Fn() -> Option<OutputFigures> + Send + Sync>;

static OUTPUT_SOURCE: OnceLock<OutputSource> = OnceLock::new();

/// Names the output pipeline's figures for every later scrape or push; the
/// first call wins (one pipeline per executor).
pub fn set_output_source(source: impl Fn() -> Option<OutputFigures> + Send + Sync + 'static) {
    let _ = OUTPUT_SOURCE.set(Box::new(source));
}

/// Raises an integer counter that mirrors a cumulative count to `value`.
fn raise_int(counter: &IntCounter, value: u64) {
    let delta = value.saturating_sub(counter.get());
    if delta > 0 {
        counter.inc_by(delta);
    }
}

// Family constructors. Names and labels are constants of this module, so a
// failure here is a programming error that every test run would hit first.

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn counter<P: Atomic + 'static>(r: &Registry, name: &str, help: &str) -> GenericCounter<P> {
    register(
        r,
        GenericCounter::with_opts(opts(name, help)).expect("valid counter"),
    )
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(opts(name, help), labels).expect("valid counter"),
    )
}

fn gauge<P: Atomic + 'static>(r: &Registry, name: &str, help: &str) -> GenericGauge<P> {
    register(
        r,
        GenericGauge::with_opts(opts(name, help)).expect("valid gauge"),
    )
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(
        r,
        GaugeVec::new(opts(name, help), labels).expect("valid gauge"),
    )
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(opts(name, help), labels).expect("valid gauge"),
    )
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .buckets(buckets.to_vec());
    register(r, HistogramVec::new(opts, labels).expect("valid histogram"))
}

/// Raises a counter that mirrors a cumulative reading to `value`: counters
/// only go up, so a reading that fell (a process left the tree) is ignored.
fn raise_to(counter: &Counter, value: f64) {
    let delta = value - counter.get();
    if delta > 0.0 && delta.is_finite() {
        counter.inc_by(delta);
    }
}

/// Reads what is read rather than counted: the task's state, health and
/// schedule from `status`, its process tree (excluding the executor's
/// `auxiliary` children: hooks, probes, remote commands) and the executor's
/// own usage from `/proc`. Blocking (walks `/proc`): call it off the loop.
pub(crate) fn refresh(status: &StatusSnapshot, auxiliary: &HashSet<i32>) {
    let m = get();
    m.task.state.reset();
    m.task.info.reset();
    if let Some(task_id) = &status.task_id {
        m.task
            .info
            .with_label_values(&[&status.framework_id, &status.executor_id, task_id])
            .set(1);
    }
    if let Some(state) = &status.state {
        m.task.state.with_label_values(&[state]).set(1);
    }
    m.health.healthy.reset();
    if let Some(healthy) = status.healthy {
        m.health
            .healthy
            .with_label_values(&["health"])
            .set(i64::from(healthy));
    }
    m.task.scheduled_end.reset();
    if let Some((at, why)) = &status.scheduled_end {
        if let Ok(t) = humantime::parse_rfc3339(at) {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            m.task.scheduled_end.with_label_values(&[why]).set(secs);
        }
    }
    let tree = status
        .pid
        .map(|root| procfs::tree_usage(root, auxiliary))
        .unwrap_or_default();
    raise_to(&m.task.cpu, tree.cpu_seconds);
    m.task
        .rss
        .set(i64::try_from(tree.rss_bytes).unwrap_or(i64::MAX));
    m.task
        .processes
        .set(i64::try_from(tree.processes).unwrap_or(i64::MAX));
    m.task.uptime.set(tree.root_uptime_seconds);
    if let Some(figures) = OUTPUT_SOURCE.get().and_then(|source| source()) {
        m.output.observe(&figures);
    }
    if let Some(own) = procfs::own_usage() {
        raise_to(&m.executor.cpu, own.cpu_seconds);
        m.executor
            .rss
            .set(i64::try_from(own.rss_bytes).unwrap_or(i64::MAX));
    }
}

/// The exposition in Prometheus text format 0.0.4.
#[must_use]
pub fn render() -> String {
    let mut out = Vec::with_capacity(16 * 1024);
    // Encoding into memory fails only on families the registry would not
    // have accepted in the first place.
    if let Err(e) = TextEncoder::new().encode(&get().gather(), &mut out) {
        tracing::warn!(cause = %e, "encoding the metrics failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The label value of a probe result.
#[must_use]
pub fn result_label(success: bool) -> &'static str {
    if success {
        "success"
    } else {
        "failure"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_the_prefix_and_help() {
        let m = get();
        m.hooks
            .runs
            .with_label_values(&["before-start", "exec"])
            .inc();
        m.health
            .probe_duration
            .with_label_values(&["health"])
            .observe(0.02);
        let text = render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("mesos_hook_executor_"), "{line}");
        }
        assert!(text.contains("# HELP mesos_hook_executor_hook_runs_total "));
        assert!(text.contains(
            "mesos_hook_executor_hook_runs_total{event=\"before-start\",hook=\"exec\"} "
        ));
        assert!(text.contains("mesos_hook_executor_health_probe_duration_seconds_bucket{check=\"health\",le=\"0.05\"} "));
    }

    #[test]
    fn a_counter_mirroring_a_reading_never_goes_down() {
        let c = Counter::new("c", "c").expect("counter");
        raise_to(&c, 5.0);
        raise_to(&c, 3.0);
        raise_to(&c, f64::NAN);
        assert!((c.get() - 5.0).abs() < f64::EPSILON);
        raise_to(&c, 7.5);
        assert!((c.get() - 7.5).abs() < f64::EPSILON);
    }

    #[test]
    fn refresh_reads_the_snapshot_into_gauges() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        for _ in 0..500 {
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let status = StatusSnapshot {
            framework_id: "fw".into(),
            executor_id: "ex".into(),
            task_id: Some("t".into()),
            state: Some("TASK_RUNNING".into()),
            pid: Some(child.id().try_into().expect("pid")),
            healthy: Some(true),
            scheduled_end: Some(("2030-01-01T00:00:00Z".into(), "max-lifetime")),
        };
        refresh(&status, &HashSet::new());
        let _ = child.kill();
        let _ = child.wait();
        let text = render();
        assert!(text.contains("mesos_hook_executor_task_state{state=\"TASK_RUNNING\"} 1"));
        assert!(text.contains(
            "mesos_hook_executor_task_scheduled_end_timestamp_seconds{reason=\"max-lifetime\"} 1893456000"
        ));
        assert!(text.contains("mesos_hook_executor_task_healthy{check=\"health\"} 1"));
        assert!(get().task.processes.get() >= 1);
        assert!(get().executor.rss.get() > 0);
    }
}
