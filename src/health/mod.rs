//! Mesos health checks (`TaskInfo.health_check`) and generic checks
//! (`TaskInfo.check`), as the Mesos command executor runs them
//! (`src/checks/health_checker.cpp`, `checker.cpp`, `checker_process.cpp`;
//! `mesos-executor-api.md` §5.3), but without a helper process per probe: HTTP,
//! HTTPS and TCP probes are made in-process, only COMMAND checks fork.
//!
//! # Shape
//! A *checker* is one spawned tokio task per check. It sleeps `delay`, runs the
//! probe under its timeout, hands the raw [`Observation`] to the executor's
//! inbox, then sleeps `interval` counted from the end of the probe (fixed delay,
//! as Mesos), so a slow check is never run twice at once. It never decides
//! anything: the owner ([`crate::executor`]) feeds each observation to
//! [`Checks`], whose pure parts ([`HealthState::observe`],
//! [`CheckState::observe`]) decide what to report, and then sends the update.
//! A checker ends when the owner aborts it (the task is being killed or has
//! ended); a COMMAND check's process group dies with the run that spawned it
//! ([`crate::task::process::GroupGuard`]), so no check process outlives its run, let alone the
//! executor.
//!
//! # Semantics (Mesos' own)
//! * Health: COMMAND exit 0, HTTP status in `[200, 400)` (`statuses` is ignored),
//!   TCP connected. A probe that cannot be performed (timeout, refused HTTP
//!   connection, a command killed by a signal) is a failure.
//! * A failure is ignored while no success has been seen yet and the check is
//!   inside `grace_period_seconds` (counted from the checker's start). Every
//!   counted failure reports `healthy = false` (each time, not only on the
//!   transition); the `consecutive_failures`-th one (default 3; 0 means the
//!   first) also kills the task. A success reports `healthy = true` only the
//!   first time ever and the first time after failures.
//! * Generic checks report a `CheckStatusInfo` only when it differs from the
//!   previous one (initially the empty typed message); an error yields the
//!   empty typed message.
//! * Each report is a copy of the last status sent for the task (TASK_RUNNING,
//!   its message, `check_status`, `healthy`…) with a new uuid and timestamp and
//!   reason `REASON_TASK_HEALTH_CHECK_STATUS_UPDATED` or
//!   `REASON_TASK_CHECK_STATUS_UPDATED`. Every status created from scratch for
//!   a task with a `CheckInfo` carries the empty typed `check_status`.
//! * An invalid check (negative durations, unknown type, missing fields) is
//!   logged and the task runs without it, as Mesos does.
//!
//! Our additions: port 0 means the task's first port resource; a port above
//! 65535 or a NaN/infinite duration is invalid (Mesos would crash or build a
//! bad URL). Redirects are followed at most [`MAX_REDIRECTS`] times (curl `-L`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::mpsc, task::JoinHandle, time::Instant};
use tracing::{debug, error, info, warn};

use crate::{
    agent::updates,
    proto::v1::{self, check_info, check_status_info, health_check, network_info::Protocol, task_status::Reason},
    task::launch::{self, Program},
    task::process::{AuxiliaryStdio, Reaper},
    task::termination::{self, ExitOutcome},
};

/// Most redirects an HTTP probe follows before giving up (an error, as curl's
/// "maximum redirects followed").
pub const MAX_REDIRECTS: usize = 5;

/// What one run of a check saw, before any interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A COMMAND check's process exited with this code.
    Exited(i32),
    /// An HTTP(S) check got this status (after redirects).
    Http(u16),
    /// A TCP check connected (`true`) or could not (`false`).
    Tcp(bool),
    /// The check could not be performed: timeout, failed HTTP connection,
    /// command not started or killed by a signal.
    Error(String),
}

/// Why a health observation is a failure; `None` means healthy
/// (`interpretCheckStatusInfo` plus "an error is a failure").
#[must_use]
pub fn health_failure(observation: &Observation) -> Option<String> {
    match observation {
        Observation::Exited(0) | Observation::Tcp(true) => None,
        Observation::Http(status) if (200..400).contains(status) => None,
        Observation::Exited(code) => Some(format!("Command exited with status {code}")),
        Observation::Http(status) => Some(format!("Unexpected HTTP response code: {status}")),
        Observation::Tcp(false) => Some("TCP connection failed".to_owned()),
        Observation::Error(e) => Some(e.clone()),
    }
}

/// The empty typed `CheckStatusInfo` Mesos puts in every status of a task with
/// a check before (and outside) a result; `None` for the UNKNOWN type.
#[must_use]
pub fn empty_check_status(kind: check_info::Type) -> Option<v1::CheckStatusInfo> {
    let mut status = v1::CheckStatusInfo { r#type: Some(kind as i32), ..Default::default() };
    match kind {
        check_info::Type::Command => status.command = Some(check_status_info::Command::default()),
        check_info::Type::Http => status.http = Some(check_status_info::Http::default()),
        check_info::Type::Tcp => status.tcp = Some(check_status_info::Tcp::default()),
        check_info::Type::Unknown => return None,
    }
    Some(status)
}

/// The `CheckStatusInfo` for an observation of a check of type `kind`: the
/// result when there is one, the empty typed message on an error.
#[must_use]
pub fn check_status(kind: check_info::Type, observation: &Observation) -> Option<v1::CheckStatusInfo> {
    let mut status = empty_check_status(kind)?;
    match (kind, observation) {
        (check_info::Type::Command, Observation::Exited(code)) => {
            status.command = Some(check_status_info::Command { exit_code: Some(*code) })
        }
        (check_info::Type::Http, Observation::Http(code)) => {
            status.http = Some(check_status_info::Http { status_code: Some(u32::from(*code)) })
        }
        (check_info::Type::Tcp, Observation::Tcp(ok)) => status.tcp = Some(check_status_info::Tcp { succeeded: Some(*ok) }),
        _ => {}
    }
    Some(status)
}

/// What the owner should do after a health observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Send a health update with this `healthy` value.
    pub report: Option<bool>,
    /// The allowed consecutive failures are used up: kill the task.
    pub kill: bool,
    /// This is the first healthy result ever (the after-healthy event).
    pub first_healthy: bool,
}

/// The health interpretation state of one task (`HealthChecker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    grace: Duration,
    max_failures: u32,
    failures: u32,
    /// No success seen yet.
    initializing: bool,
}

impl HealthState {
    /// A fresh state: failures within `grace` of the start are ignored until
    /// the first success; `max_failures` consecutive failures kill.
    #[must_use]
    pub fn new(grace: Duration, max_failures: u32) -> Self {
        Self { grace, max_failures, failures: 0, initializing: true }
    }

    /// Consecutive failures counted so far.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Applies one result, `since_start` after the checker started.
    pub fn observe(&mut self, healthy: bool, since_start: Duration) -> Verdict {
        if healthy {
            let report = self.initializing || self.failures > 0;
            let first_healthy = self.initializing;
            self.initializing = false;
            self.failures = 0;
            return Verdict { report: report.then_some(true), kill: false, first_healthy };
        }
        if self.initializing && !self.grace.is_zero() && since_start <= self.grace {
            return Verdict::default();
        }
        self.failures = self.failures.saturating_add(1);
        Verdict { report: Some(false), kill: self.failures >= self.max_failures, first_healthy: false }
    }
}

/// The generic check state of one task (`Checker`): the last status reported.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckState {
    kind: check_info::Type,
    previous: Option<v1::CheckStatusInfo>,
}

impl CheckState {
    /// Starts from the empty typed status, as Mesos does.
    #[must_use]
    pub fn new(kind: check_info::Type) -> Self {
        Self { kind, previous: empty_check_status(kind) }
    }

    /// The status to report for `observation`, if it differs from the last one.
    pub fn observe(&mut self, observation: &Observation) -> Option<v1::CheckStatusInfo> {
        let status = check_status(self.kind, observation)?;
        if self.previous.as_ref() == Some(&status) {
            return None;
        }
        self.previous = Some(status);
        Some(status)
    }
}

/// When a checker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Before the first probe.
    pub delay: Duration,
    /// Between the end of one probe and the start of the next.
    pub interval: Duration,
    /// Per probe; `None` (`timeout_seconds` 0) means none.
    pub timeout: Option<Duration>,
}

/// What a checker probes.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// GET `path` on the loopback address.
    Http {
        /// `https` scheme (no certificate verification, like `curl -k`).
        tls: bool,
        /// `[::1]` instead of `127.0.0.1`.
        ipv6: bool,
        /// Port.
        port: u16,
        /// Path, starting with `/`.
        path: String,
    },
    /// TCP connect to the loopback address.
    Tcp {
        /// `[::1]` instead of `127.0.0.1`.
        ipv6: bool,
        /// Port.
        port: u16,
    },
    /// A command in the task's environment and sandbox.
    Command(Box<v1::CommandInfo>),
}

/// A validated `HealthCheck`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    /// What to probe.
    pub probe: Probe,
    /// When.
    pub schedule: Schedule,
    /// Failures ignored until the first success while within it.
    pub grace: Duration,
    /// Consecutive failures that kill the task.
    pub consecutive_failures: u32,
}

/// A validated `CheckInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// The check's type (also the `check_status` type).
    pub kind: check_info::Type,
    /// What to probe.
    pub probe: Probe,
    /// When.
    pub schedule: Schedule,
}

/// A non-negative, finite number of seconds (`validateHealthCheck` rejects
/// negative values; NaN or overflow would crash Mesos, here it is invalid too).
fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    if value < 0.0 {
        return Err(format!("Expecting '{name}' to be non-negative"));
    }
    Duration::try_from_secs_f64(value).map_err(|_| format!("'{name}' is not a usable number of seconds: {value}"))
}

/// `timeout_seconds`: 0 means no timeout.
fn timeout(value: f64) -> Result<Option<Duration>, String> {
    seconds("timeout_seconds", value).map(|d| (!d.is_zero()).then_some(d))
}

/// The port to probe: the given one, or (0) the task's first port.
fn probe_port(port: u32, task_port: Option<u16>) -> Result<u16, String> {
    match port {
        0 => task_port.ok_or_else(|| "port 0 and the task has no port resource".to_owned()),
        p => u16::try_from(p).map_err(|_| format!("port {p} is out of range")),
    }
}

fn http_path(path: Option<&str>, what: &str) -> Result<String, String> {
    match path {
        None | Some("") => Ok("/".to_owned()),
        Some(p) if p.starts_with('/') => Ok(p.to_owned()),
        Some(p) => Err(format!("The path '{p}' of {what} must start with '/'")),
    }
}

fn command_probe_spec(command: Option<&v1::CommandInfo>, what: &str) -> Result<Probe, String> {
    let command = command.ok_or_else(|| format!("Expecting 'command' to be set for COMMAND {what}"))?;
    if command.value.is_none() {
        let kind = if command.shell() { "'shell command'" } else { "'executable path'" };
        return Err(format!("Command {what} must contain {kind}"));
    }
    Ok(Probe::Command(Box::new(command.clone())))
}

/// The first port of the task's `ports` resource, for checks with port 0.
#[must_use]
pub fn task_port(task: &v1::TaskInfo) -> Option<u16> {
    task.resources
        .iter()
        .filter(|r| r.name == "ports")
        .filter_map(|r| r.ranges.as_ref())
        .flat_map(|r| r.range.iter())
        .find_map(|r| u16::try_from(r.begin).ok().filter(|p| *p != 0))
}

/// Validates a `HealthCheck` (`validateHealthCheck`) and fills in Mesos'
/// defaults: delay 15 s, interval 10 s, timeout 20 s, 3 consecutive
/// failures, grace 10 s.
pub fn health_spec(check: &v1::HealthCheck, task_port: Option<u16>) -> Result<HealthSpec, String> {
    let kind = check.r#type.ok_or_else(|| "HealthCheck must specify 'type'".to_owned())?;
    let probe = match health_check::Type::try_from(kind) {
        Ok(health_check::Type::Command) => command_probe_spec(check.command.as_ref(), "health check")?,
        Ok(health_check::Type::Http) => {
            let http = check.http.as_ref().ok_or_else(|| "Expecting 'http' to be set for HTTP health check".to_owned())?;
            let tls = match http.scheme.as_deref() {
                None | Some("http") => false,
                Some("https") => true,
                Some(other) => return Err(format!("Unsupported HTTP health check scheme: '{other}'")),
            };
            Probe::Http {
                tls,
                ipv6: http.protocol() == Protocol::IPv6,
                port: probe_port(http.port, task_port)?,
                path: http_path(http.path.as_deref(), "HTTP health check")?,
            }
        }
        Ok(health_check::Type::Tcp) => {
            let tcp = check.tcp.as_ref().ok_or_else(|| "Expecting 'tcp' to be set for TCP health check".to_owned())?;
            Probe::Tcp { ipv6: tcp.protocol() == Protocol::IPv6, port: probe_port(tcp.port, task_port)? }
        }
        Ok(health_check::Type::Unknown) | Err(_) => return Err(format!("'{kind}' is not a valid health check type")),
    };
    Ok(HealthSpec {
        probe,
        schedule: Schedule {
            delay: seconds("delay_seconds", check.delay_seconds())?,
            interval: seconds("interval_seconds", check.interval_seconds())?,
            timeout: timeout(check.timeout_seconds())?,
        },
        grace: seconds("grace_period_seconds", check.grace_period_seconds())?,
        consecutive_failures: check.consecutive_failures(),
    })
}

/// Validates a `CheckInfo` (`validateCheckInfo`) and fills in Mesos'
/// defaults: delay 15 s, interval 10 s, timeout 20 s. HTTP is plain `http`
/// on IPv4 (CheckInfo has neither scheme nor protocol).
pub fn check_spec(check: &v1::CheckInfo, task_port: Option<u16>) -> Result<CheckSpec, String> {
    let raw = check.r#type.ok_or_else(|| "CheckInfo must specify 'type'".to_owned())?;
    let kind = check_info::Type::try_from(raw).unwrap_or(check_info::Type::Unknown);
    let probe = match kind {
        check_info::Type::Command => command_probe_spec(check.command.as_ref().map(|c| &c.command), "check")?,
        check_info::Type::Http => {
            let http = check.http.as_ref().ok_or_else(|| "Expecting 'http' to be set for HTTP check".to_owned())?;
            Probe::Http {
                tls: false,
                ipv6: false,
                port: probe_port(http.port, task_port)?,
                path: http_path(http.path.as_deref(), "HTTP check")?,
            }
        }
        check_info::Type::Tcp => {
            let tcp = check.tcp.as_ref().ok_or_else(|| "Expecting 'tcp' to be set for TCP check".to_owned())?;
            Probe::Tcp { ipv6: false, port: probe_port(tcp.port, task_port)? }
        }
        check_info::Type::Unknown => return Err(format!("'{raw}' is not a valid check type")),
    };
    Ok(CheckSpec {
        kind,
        probe,
        schedule: Schedule {
            delay: seconds("delay_seconds", check.delay_seconds())?,
            interval: seconds("interval_seconds", check.interval_seconds())?,
            timeout: timeout(check.timeout_seconds())?,
        },
    })
}

/// A status derived from the last one sent (`protobuf::createTaskStatus` with
/// a previous status): everything kept, new uuid and timestamp, and the given
/// reason, `healthy` and `check_status` where set.
#[must_use]
pub fn derived_status(last: &v1::TaskStatus, reason: Reason, healthy: Option<bool>, check: Option<v1::CheckStatusInfo>) -> v1::TaskStatus {
    let mut status = last.clone();
    status.uuid = Some(uuid::Uuid::new_v4().into_bytes().to_vec());
    status.timestamp = Some(updates::now_secs());
    status.reason = Some(reason as i32);
    if healthy.is_some() {
        status.healthy = healthy;
    }
    if check.is_some() {
        status.check_status = check;
    }
    status
}

// ----- the owner's side ------------------------------------------------------

/// A health update to send, and what follows from it.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthUpdate {
    /// The TASK_RUNNING update with `healthy` set.
    pub status: v1::TaskStatus,
    /// Kill the task (after sending the update).
    pub kill: bool,
    /// The first healthy result of the task.
    pub first_healthy: bool,
}

/// Where COMMAND checks run: the task's environment and sandbox.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's complete environment.
    pub env: BTreeMap<String, String>,
    /// The task's working directory.
    pub cwd: PathBuf,
    /// The executor's child reaper.
    pub reaper: Reaper,
}

/// The executor's view of its task's checks: the checkers, their
/// interpretation state and the last status sent (which reports copy).
#[derive(Debug, Default)]
pub struct Checks {
    task_id: Option<v1::TaskId>,
    check_kind: Option<check_info::Type>,
    last_status: Option<v1::TaskStatus>,
    health: Option<(HealthState, Instant)>,
    check: Option<CheckState>,
    checkers: Vec<JoinHandle<()>>,
}

impl Drop for Checks {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Checks {
    /// For a task just received: remembers its id and check type so every
    /// status of it carries `check_status`. Nothing runs yet.
    #[must_use]
    pub fn for_task(task: &v1::TaskInfo) -> Self {
        let check_kind = task
            .check
            .as_ref()
            .and_then(|c| c.r#type)
            .and_then(|t| check_info::Type::try_from(t).ok())
            .filter(|t| *t != check_info::Type::Unknown);
        Self { task_id: Some(task.task_id.clone()), check_kind, last_status: None, health: None, check: None, checkers: Vec::new() }
    }

    /// The task's health as last reported (`None` until a health check has).
    #[must_use]
    pub fn healthy(&self) -> Option<bool> {
        self.last_status.as_ref().and_then(|s| s.healthy)
    }

    /// Whether a health checker runs for the task (a valid `health_check`);
    /// without one, after-healthy follows after-start.
    #[must_use]
    pub fn has_health_checker(&self) -> bool {
        self.health.is_some()
    }

    /// Called for every status the executor records: a status of our task
    /// created from scratch gets the empty typed `check_status` (as Mesos'
    /// `createTaskStatus`), and the status becomes the one reports copy.
    pub fn on_status(&mut self, status: &mut v1::TaskStatus) {
        if self.task_id.as_ref() != Some(&status.task_id) {
            return;
        }
        if status.check_status.is_none() {
            status.check_status = self.check_kind.and_then(empty_check_status);
        }
        self.last_status = Some(status.clone());
    }

    /// Starts the task's checkers (right after TASK_RUNNING). An invalid
    /// check is logged and skipped; the task runs without it, as with Mesos.
    pub fn start<T: Send + 'static>(
        &mut self,
        task: &v1::TaskInfo,
        ctx: TaskContext,
        inbox: &mpsc::Sender<T>,
        health_input: fn(Observation) -> T,
        check_input: fn(Observation) -> T,
    ) {
        let port = task_port(task);
        let task_id = task.task_id.value.as_str();
        if let Some(hc) = &task.health_check {
            match health_spec(hc, port) {
                Ok(spec) => {
                    info!(task_id, probe = ?spec.probe, schedule = ?spec.schedule, grace = ?spec.grace,
                        consecutive_failures = spec.consecutive_failures, "starting the health check");
                    self.health = Some((HealthState::new(spec.grace, spec.consecutive_failures), Instant::now()));
                    let runner = ProbeRunner::new("health check", spec.probe, &ctx);
                    self.checkers.push(spawn_checker(runner, spec.schedule, inbox.clone(), health_input));
                }
                Err(e) => error!(task_id, cause = %e, "invalid health check; the task runs without it"),
            }
        }
        if let Some(ci) = &task.check {
            match check_spec(ci, port) {
                Ok(spec) => {
                    info!(task_id, probe = ?spec.probe, schedule = ?spec.schedule, "starting the check");
                    self.check = Some(CheckState::new(spec.kind));
                    let runner = ProbeRunner::new("check", spec.probe, &ctx);
                    self.checkers.push(spawn_checker(runner, spec.schedule, inbox.clone(), check_input));
                }
                Err(e) => error!(task_id, cause = %e, "invalid check; the task runs without it"),
            }
        }
    }

    /// Stops every checker (the task is being killed or has ended); a COMMAND
    /// check in flight has its process group killed. Later results are ignored.
    pub fn stop(&mut self) {
        if !self.checkers.is_empty() {
            debug!(count = self.checkers.len(), "stopping checkers");
        }
        for handle in self.checkers.drain(..) {
            handle.abort();
        }
        self.health = None;
        self.check = None;
    }

    /// Interprets a health observation; the update to send, if any.
    pub fn health_update(&mut self, observation: &Observation, now: Instant) -> Option<HealthUpdate> {
        let (state, started) = self.health.as_mut()?;
        let failure = health_failure(observation);
        let since_start = now.saturating_duration_since(*started);
        let verdict = state.observe(failure.is_none(), since_start);
        match (&failure, verdict.report) {
            (Some(cause), None) => info!(cause = %cause, "ignoring a health check failure: still in the grace period"),
            (Some(cause), Some(_)) => warn!(cause = %cause, failures = state.failures(), "health check failed"),
            (None, Some(_)) => info!("health check passed; task is healthy"),
            (None, None) => debug!("health check passed"),
        }
        let healthy = verdict.report?;
        let Some(last) = &self.last_status else {
            warn!("a health result before any status was sent; ignored");
            return None;
        };
        let status = derived_status(last, Reason::TaskHealthCheckStatusUpdated, Some(healthy), None);
        Some(HealthUpdate { status, kill: verdict.kill, first_healthy: verdict.first_healthy })
    }

    /// Interprets a generic check observation; the update to send, if any.
    pub fn check_update(&mut self, observation: &Observation) -> Option<v1::TaskStatus> {
        let state = self.check.as_mut()?;
        if let Observation::Error(e) = observation {
            warn!(cause = %e, "check failed");
        }
        let changed = state.observe(observation)?;
        info!(check_status = ?changed, "check status changed");
        let last = self.last_status.as_ref()?;
        Some(derived_status(last, Reason::TaskCheckStatusUpdated, None, Some(changed)))
    }
}

// ----- checkers ---------------------------------------------------------------

/// One check, ready to probe repeatedly.
struct ProbeRunner {
    name: &'static str,
    kind: RunnerKind,
}

enum RunnerKind {
    Http { target: Target, tls: Option<tokio_rustls::TlsConnector> },
    Tcp { addr: SocketAddr },
    Command { program: Program, env: BTreeMap<String, String>, cwd: PathBuf, reaper: Reaper },
}

impl ProbeRunner {
    fn new(name: &'static str, probe: Probe, ctx: &TaskContext) -> Self {
        let loopback = |ipv6: bool| if ipv6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
        let kind = match probe {
            Probe::Http { tls, ipv6, port, path } => {
                let host = if ipv6 { "[::1]".to_owned() } else { "127.0.0.1".to_owned() };
                let connector = match crate::net::transport::shared(crate::net::transport::Trust::Insecure) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        warn!(cause = %e, "TLS client setup failed; https probes will fail");
                        None
                    }
                };
                RunnerKind::Http { target: Target { tls, host, port, path }, tls: connector }
            }
            Probe::Tcp { ipv6, port } => RunnerKind::Tcp { addr: SocketAddr::new(loopback(ipv6), port) },
            Probe::Command(info) => {
                let mut env = ctx.env.clone();
                launch::apply_environment(&mut env, info.environment.as_ref());
                RunnerKind::Command { program: launch::command_program(&info), env, cwd: ctx.cwd.clone(), reaper: ctx.reaper.clone() }
            }
        };
        Self { name, kind }
    }

    async fn probe(&self) -> Observation {
        match &self.kind {
            RunnerKind::Http { target, tls } => http_probe(target.clone(), tls.as_ref()).await,
            RunnerKind::Tcp { addr } => Observation::Tcp(TcpStream::connect(addr).await.is_ok()),
            RunnerKind::Command { program, env, cwd, reaper } => command_probe(program, env, cwd, reaper).await,
        }
    }
}

/// Spawns the checker loop; see the module docs.
fn spawn_checker<T: Send + 'static>(
    runner: ProbeRunner,
    schedule: Schedule,
    inbox: mpsc::Sender<T>,
    input: fn(Observation) -> T,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(schedule.delay).await;
        loop {
            let run = runner.probe();
            let observation = match schedule.timeout {
                Some(limit) => tokio::time::timeout(limit, run)
                    .await
                    .unwrap_or_else(|_| Observation::Error(format!("{} timed out after {limit:?}", runner.name))),
                None => run.await,
            };
            debug!(check = runner.name, ?observation, "probe done");
            if inbox.send(input(observation)).await.is_err() {
                return;
            }
            tokio::time::sleep(schedule.interval).await;
        }
    })
}

/// Runs a COMMAND check: through the reaper (never `Child::wait`), in its own
/// process group, stdin from `/dev/null`, stdout and stderr to the
/// executor's stderr, in the task's environment and sandbox.
async fn command_probe(program: &Program, env: &BTreeMap<String, String>, cwd: &Path, reaper: &Reaper) -> Observation {
    let mut cmd = crate::task::process::program_command(program);
    cmd.env_clear().envs(env).current_dir(cwd);
    let stdio = AuxiliaryStdio { stdin: Stdio::null(), stdout: executor_stderr(), stderr: executor_stderr() };
    // Dropped on every way out (the check's timeout drops this future): the group goes with it.
    let mut check = match reaper.spawn_auxiliary(cmd, stdio) {
        Ok(check) => check,
        Err(e) => return Observation::Error(format!("cannot start the check command `{}`: {e}", program.display())),
    };
    match check.wait().await {
        Ok(ExitOutcome::Exited(code)) => Observation::Exited(code),
        Ok(ExitOutcome::Signaled { signal, .. }) => {
            Observation::Error(format!("Command terminated with signal {}", termination::signal_description(signal)))
        }
        Err(_) => Observation::Error("the check command's exit status was lost".to_owned()),
    }
}

/// The executor's stderr (the sandbox `stderr` file) for a child's output.
fn executor_stderr() -> Stdio {
    use std::os::fd::AsFd;
    std::io::stderr().as_fd().try_clone_to_owned().map_or_else(|_| Stdio::inherit(), Stdio::from)
}

// ----- HTTP -------------------------------------------------------------------

/// Where an HTTP probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https`.
    pub tls: bool,
    /// Host as written in a URL (`127.0.0.1`, `[::1]`, `example.org`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Resolves a `Location` header against the request it answered (RFC 3986
/// for the forms servers send: absolute `http(s)://` URLs, `//host` ones,
/// absolute paths and relative paths). Fragments are dropped.
pub fn resolve_location(base: &Target, location: &str) -> Result<Target, String> {
    let location = location.trim();
    let location = location.split_once('#').map_or(location, |(l, _)| l);
    let lower = location.to_ascii_lowercase();
    let absolute = if lower.starts_with("http://") || lower.starts_with("https://") {
        Some(location.to_owned())
    } else if location.starts_with("//") {
        Some(format!("{}:{location}", if base.tls { "https" } else { "http" }))
    } else {
        None
    };
    if let Some(url) = absolute {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad redirect location {location:?}: {e}"))?;
        let tls = uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let authority = uri.authority().ok_or_else(|| format!("redirect location {location:?} has no host"))?;
        let host = authority.host().to_owned();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let path = if path.is_empty() { "/".to_owned() } else { path };
        return Ok(Target { tls, host, port, path });
    }
    if lower.contains("://") || lower.split('/').next().is_some_and(|first| first.contains(':') && !first.contains('?')) {
        return Err(format!("unsupported redirect location {location:?}"));
    }
    let path = if location.starts_with('/') {
        location.to_owned()
    } else if location.is_empty() {
        base.path.clone()
    } else {
        let base_path = base.path.split(['?']).next().unwrap_or("/");
        let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    Ok(Target { path, ..base.clone() })
}

/// Whether curl `-L` follows this status.
fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// GETs `target`, following redirects; the final status.
async fn http_probe(mut target: Target, tls: Option<&tokio_rustls::TlsConnector>) -> Observation {
    for _ in 0..=MAX_REDIRECTS {
        let (status, location) = match http_get(&target, tls).await {
            Ok(answer) => answer,
            Err(e) => return Observation::Error(e),
        };
        match location {
            Some(location) if is_redirect(status) => match resolve_location(&target, &location) {
                Ok(next) => target = next,
                Err(e) => return Observation::Error(e),
            },
            _ => return Observation::Http(status.as_u16()),
        }
    }
    Observation::Error(format!("maximum ({MAX_REDIRECTS}) redirects followed"))
}

/// One request on a fresh connection (a health probe checks that the server
/// accepts connections, as curl does); the response body is not read.
async fn http_get(target: &Target, tls: Option<&tokio_rustls::TlsConnector>) -> Result<(StatusCode, Option<String>), String> {
    let url = || format!("{}://{}{}", if target.tls { "https" } else { "http" }, target.authority(), target.path);
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} {}: {e}", url());
    let bare_host = target.host.trim_start_matches('[').trim_end_matches(']');
    let stream = match bare_host.parse::<IpAddr>() {
        Ok(ip) => TcpStream::connect(SocketAddr::new(ip, target.port)).await,
        Err(_) => TcpStream::connect((bare_host, target.port)).await,
    }
    .map_err(|e| fail("connecting to", &e))?;
    let _ = stream.set_nodelay(true);
    let io: Box<dyn crate::net::transport::Io> = if target.tls {
        let connector = tls.ok_or_else(|| format!("no TLS client for {}", url()))?;
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned()).map_err(|e| fail("server name of", &e))?;
        Box::new(connector.connect(name, stream).await.map_err(|e| fail("TLS handshake with", &e))?)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| fail("HTTP handshake with", &e))?;
    let request = Request::get(target.path.as_str())
        .header(header::HOST, target.authority())
        .header(header::USER_AGENT, concat!("mesos-hook-executor/", env!("CARGO_PKG_VERSION")))
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail("building the request for", &e))?;
    // The connection task is driven here rather than spawned. It may finish
    // (`Connection: close`) just as it hands the response over; the request
    // future then resolves at once, with the response or the error.
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        response = &mut send => response,
        ended = &mut conn => match ended {
            Ok(()) => send.await,
            Err(e) => return Err(fail("requesting", &e)),
        },
    }
    .map_err(|e| fail("requesting", &e))?;
    let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok((response.status(), location))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn first_success_and_first_success_after_failures_are_reported() {
        let mut h = HealthState::new(Duration::ZERO, 3);
        assert_eq!(h.observe(true, S), Verdict { report: Some(true), kill: false, first_healthy: true });
        assert_eq!(h.observe(true, S), Verdict::default());
        assert_eq!(h.observe(false, S), Verdict { report: Some(false), kill: false, first_healthy: false });
        assert_eq!(h.observe(true, S), Verdict { report: Some(true), kill: false, first_healthy: false });
        assert_eq!(h.observe(true, S), Verdict::default());
    }

    #[test]
    fn every_counted_failure_is_reported_and_the_nth_consecutive_kills() {
        let mut h = HealthState::new(Duration::ZERO, 3);
        let v: Vec<Verdict> = (0..4).map(|_| h.observe(false, S)).collect();
        assert!(v.iter().all(|v| v.report == Some(false)));
        assert_eq!(v.iter().map(|v| v.kill).collect::<Vec<_>>(), vec![false, false, true, true]);
        // A success resets the count.
        let mut h = HealthState::new(Duration::ZERO, 2);
        assert!(!h.observe(false, S).kill);
        h.observe(true, S);
        assert!(!h.observe(false, S).kill);
        assert!(h.observe(false, S).kill);
    }

    #[test]
    fn zero_consecutive_failures_kills_on_the_first() {
        let mut h = HealthState::new(Duration::ZERO, 0);
        assert_eq!(h.observe(false, S), Verdict { report: Some(false), kill: true, first_healthy: false });
    }

    #[test]
    fn failures_in_the_grace_period_are_ignored_until_the_first_success() {
        let grace = Duration::from_secs(10);
        let mut h = HealthState::new(grace, 1);
        assert_eq!(h.observe(false, Duration::from_secs(1)), Verdict::default());
        assert_eq!(h.observe(false, grace), Verdict::default(), "the grace bound is inclusive");
        assert_eq!(h.failures(), 0);
        assert_eq!(h.observe(false, grace + Duration::from_millis(1)), Verdict { report: Some(false), kill: true, first_healthy: false });
        // After a success the grace no longer applies, even inside it.
        let mut h = HealthState::new(grace, 3);
        assert!(h.observe(true, Duration::from_secs(1)).first_healthy);
        assert_eq!(h.observe(false, Duration::from_secs(2)).report, Some(false));
        // A zero grace ignores nothing.
        let mut h = HealthState::new(Duration::ZERO, 3);
        assert_eq!(h.observe(false, Duration::ZERO).report, Some(false));
    }

    #[test]
    fn health_interpretation_matches_mesos() {
        assert_eq!(health_failure(&Observation::Exited(0)), None);
        assert_eq!(health_failure(&Observation::Exited(1)).as_deref(), Some("Command exited with status 1"));
        for ok in [200, 204, 302, 399] {
            assert_eq!(health_failure(&Observation::Http(ok)), None, "{ok}");
        }
        for bad in [100, 199, 400, 404, 500] {
            assert!(health_failure(&Observation::Http(bad)).is_some(), "{bad}");
        }
        assert_eq!(health_failure(&Observation::Tcp(true)), None);
        assert!(health_failure(&Observation::Tcp(false)).is_some());
        assert_eq!(health_failure(&Observation::Error("timed out".into())).as_deref(), Some("timed out"));
    }

    #[test]
    fn check_status_is_reported_on_change_and_errors_give_the_empty_typed_message() {
        let mut c = CheckState::new(check_info::Type::Http);
        // An error before any result equals the initial empty message: nothing.
        assert_eq!(c.observe(&Observation::Error("refused".into())), None);
        let ok = c.observe(&Observation::Http(200)).expect("first result");
        assert_eq!(ok.r#type, Some(check_info::Type::Http as i32));
        assert_eq!(ok.http.and_then(|h| h.status_code), Some(200));
        assert_eq!(c.observe(&Observation::Http(200)), None);
        assert!(c.observe(&Observation::Http(503)).is_some());
        let empty = c.observe(&Observation::Error("timed out".into())).expect("back to empty");
        assert_eq!(Some(empty), empty_check_status(check_info::Type::Http));
        let mut t = CheckState::new(check_info::Type::Tcp);
        assert_eq!(t.observe(&Observation::Tcp(false)).and_then(|s| s.tcp).and_then(|t| t.succeeded), Some(false));
        let mut k = CheckState::new(check_info::Type::Command);
        assert_eq!(k.observe(&Observation::Exited(3)).and_then(|s| s.command).and_then(|c| c.exit_code), Some(3));
        assert_eq!(empty_check_status(check_info::Type::Unknown), None);
    }

    fn http_health(port: u32, path: Option<&str>, scheme: Option<&str>) -> v1::HealthCheck {
        v1::HealthCheck {
            r#type: Some(health_check::Type::Http as i32),
            http: Some(health_check::HttpCheckInfo {
                port,
                path: path.map(Into::into),
                scheme: scheme.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn health_spec_has_mesos_defaults() {
        let spec = health_spec(&http_health(8080, None, None), None).expect("valid");
        assert_eq!(spec.probe, Probe::Http { tls: false, ipv6: false, port: 8080, path: "/".into() });
        assert_eq!(
            spec.schedule,
            Schedule { delay: Duration::from_secs(15), interval: Duration::from_secs(10), timeout: Some(Duration::from_secs(20)) }
        );
        assert_eq!((spec.grace, spec.consecutive_failures), (Duration::from_secs(10), 3));
        let mut hc = http_health(443, Some("/health?x=1"), Some("https"));
        hc.timeout_seconds = Some(0.0);
        hc.interval_seconds = Some(0.25);
        if let Some(h) = hc.http.as_mut() {
            h.protocol = Some(Protocol::IPv6 as i32);
        }
        let spec = health_spec(&hc, None).expect("valid");
        assert_eq!(spec.probe, Probe::Http { tls: true, ipv6: true, port: 443, path: "/health?x=1".into() });
        assert_eq!((spec.schedule.timeout, spec.schedule.interval), (None, Duration::from_millis(250)));
    }

    #[test]
    fn invalid_health_checks_are_refused() {
        let refuse = |hc: v1::HealthCheck| health_spec(&hc, None).expect_err("invalid");
        assert!(refuse(v1::HealthCheck::default()).contains("must specify 'type'"));
        assert!(refuse(http_health(80, Some("health"), None)).contains("must start with '/'"));
        assert!(refuse(http_health(80, None, Some("ftp"))).contains("Unsupported"));
        assert!(refuse(http_health(70000, None, None)).contains("out of range"));
        assert!(refuse(http_health(0, None, None)).contains("no port"));
        assert!(refuse(v1::HealthCheck { r#type: Some(health_check::Type::Http as i32), ..Default::default() }).contains("'http'"));
        for field in 0..4 {
            let mut hc = http_health(80, None, None);
            match field {
                0 => hc.delay_seconds = Some(-1.0),
                1 => hc.interval_seconds = Some(-0.5),
                2 => hc.timeout_seconds = Some(-2.0),
                _ => hc.grace_period_seconds = Some(f64::NAN),
            }
            assert!(health_spec(&hc, None).is_err(), "field {field}");
        }
        let cmd = v1::HealthCheck {
            r#type: Some(health_check::Type::Command as i32),
            command: Some(v1::CommandInfo { shell: Some(false), ..Default::default() }),
            ..Default::default()
        };
        assert!(refuse(cmd).contains("'executable path'"));
        assert!(refuse(v1::HealthCheck { r#type: Some(0), ..Default::default() }).contains("not a valid"));
    }

    #[test]
    fn port_zero_means_the_tasks_first_port() {
        let task = v1::TaskInfo {
            resources: vec![v1::Resource {
                name: "ports".into(),
                r#type: v1::value::Type::Ranges as i32,
                ranges: Some(v1::value::Ranges { range: vec![v1::value::Range { begin: 31000, end: 31001 }] }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(task_port(&task), Some(31000));
        let hc = v1::HealthCheck {
            r#type: Some(health_check::Type::Tcp as i32),
            tcp: Some(health_check::TcpCheckInfo { port: 0, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(health_spec(&hc, task_port(&task)).map(|s| s.probe), Ok(Probe::Tcp { ipv6: false, port: 31000 }));
    }

    #[test]
    fn check_spec_validates_and_defaults() {
        let ci =
            v1::CheckInfo { r#type: Some(check_info::Type::Tcp as i32), tcp: Some(check_info::Tcp { port: 9000 }), ..Default::default() };
        let spec = check_spec(&ci, None).expect("valid");
        assert_eq!((spec.kind, spec.probe), (check_info::Type::Tcp, Probe::Tcp { ipv6: false, port: 9000 }));
        assert_eq!(spec.schedule.delay, Duration::from_secs(15));
        assert!(check_spec(&v1::CheckInfo { r#type: Some(check_info::Type::Command as i32), ..Default::default() }, None).is_err());
        let bad_path = v1::CheckInfo {
            r#type: Some(check_info::Type::Http as i32),
            http: Some(check_info::Http { port: 80, path: Some("x".into()) }),
            ..Default::default()
        };
        assert!(check_spec(&bad_path, None).is_err());
        assert!(check_spec(&v1::CheckInfo { timeout_seconds: Some(-1.0), ..ci }, None).is_err());
    }

    #[test]
    fn redirect_locations_resolve() {
        let base = Target { tls: false, host: "127.0.0.1".into(), port: 8080, path: "/a/b?q=1".into() };
        let at = |l: &str| resolve_location(&base, l);
        assert_eq!(at("/ok").map(|t| t.path), Ok("/ok".into()));
        assert_eq!(at("c").map(|t| t.path), Ok("/a/c".into()));
        assert_eq!(at("c?d#frag").map(|t| t.path), Ok("/a/c?d".into()));
        assert_eq!(at("https://[::1]:8443/x"), Ok(Target { tls: true, host: "[::1]".into(), port: 8443, path: "/x".into() }));
        assert_eq!(at("http://localhost"), Ok(Target { tls: false, host: "localhost".into(), port: 80, path: "/".into() }));
        assert_eq!(at("//127.0.0.2:81/y"), Ok(Target { tls: false, host: "127.0.0.2".into(), port: 81, path: "/y".into() }));
        assert!(at("ftp://host/x").is_err());
        assert!(at("mailto:x@y").is_err());
    }

    #[test]
    fn fresh_statuses_of_a_checked_task_carry_the_empty_typed_check_status() {
        let task = v1::TaskInfo {
            task_id: v1::TaskId { value: "t".into() },
            check: Some(v1::CheckInfo { r#type: Some(check_info::Type::Command as i32), ..Default::default() }),
            ..Default::default()
        };
        let mut checks = Checks::for_task(&task);
        let mut running = updates::new_status(&task.task_id, v1::TaskState::TaskRunning, "e");
        checks.on_status(&mut running);
        assert_eq!(running.check_status, empty_check_status(check_info::Type::Command));
        let mut other = updates::new_status(&v1::TaskId { value: "other".into() }, v1::TaskState::TaskFailed, "e");
        checks.on_status(&mut other);
        assert_eq!(other.check_status, None);
        // Without checkers nothing is reported.
        assert_eq!(checks.health_update(&Observation::Exited(0), Instant::now()), None);
        assert_eq!(checks.check_update(&Observation::Exited(0)), None);
    }

    #[test]
    fn derived_status_copies_the_last_one() {
        let mut last = updates::new_status(&v1::TaskId { value: "t".into() }, v1::TaskState::TaskRunning, "e");
        last.message = Some("m".into());
        last.check_status = empty_check_status(check_info::Type::Tcp);
        let s = derived_status(&last, Reason::TaskHealthCheckStatusUpdated, Some(false), None);
        assert_eq!((s.state(), s.message.as_deref(), s.healthy), (v1::TaskState::TaskRunning, Some("m"), Some(false)));
        assert_eq!(s.reason, Some(Reason::TaskHealthCheckStatusUpdated as i32));
        assert_eq!(s.check_status, last.check_status);
        assert_ne!(s.uuid, last.uuid);
        let c = derived_status(&s, Reason::TaskCheckStatusUpdated, None, check_status(check_info::Type::Tcp, &Observation::Tcp(true)));
        assert_eq!(c.healthy, Some(false), "health is kept from the last status");
        assert_eq!(c.check_status.and_then(|s| s.tcp).and_then(|t| t.succeeded), Some(true));
    }
}
