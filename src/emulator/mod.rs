//! A local Mesos agent emulator: the agent side of the v1 executor HTTP API
//! (as Apache Mesos' agent implements it), for the integration tests (which run the
//! real executor binary against it) and for `make demo`.
//!
//! It is a behavioural model, not a mock: requests are answered with the status
//! codes and bodies of `Http::executor` in the §2.3 order, calls are validated by
//! the §4.4 rules, and SUBSCRIBE / UPDATE / ACKNOWLEDGED follow `Slave::subscribe`
//! and the status-update pipeline (dedup by uuid, first terminal update wins,
//! foreign `agent_id` silently dropped, events written to a closed stream lost).
//! Tests drive it with [`AgentEmulator::launch`], [`AgentEmulator::kill`],
//! [`AgentEmulator::restart`] and friends, and observe it through the recorded
//! calls, the status log and the list of protocol [`violations`]: things the
//! real agent would reject, crash on, or that break the connection model.
//!
//! The HTTP side lives in `server`; this file holds the agent's state machine.
//!
//! [`violations`]: AgentEmulator::violations

pub mod marathon;
mod server;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use prost::Message;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::proto::{
    executor::{call, event, Call, Event},
    v1::{
        executor_info, framework_info, resource, task_status, value, AgentId, AgentInfo,
        CommandInfo, ContainerId, ExecutorId, ExecutorInfo, FrameworkId, FrameworkInfo, KillPolicy,
        Resource, TaskId, TaskInfo, TaskState, TaskStatus,
    },
};

/// Framework id used by [`EmulatorOptions::default`] and [`task_info`].
pub const DEFAULT_FRAMEWORK_ID: &str = "framework-1";
/// Executor id used by [`EmulatorOptions::default`].
pub const DEFAULT_EXECUTOR_ID: &str = "executor-1";
/// Agent id used by [`EmulatorOptions::default`] and [`task_info`].
pub const DEFAULT_AGENT_ID: &str = "agent-1";
/// The `PATH` the Mesos containerizer's `launch` helper sets for an executor
/// when its environment has none, which is always the case on a real agent:
/// the executor's environment is built from empty, not inherited from the
/// agent (seen under a real Mesos 1.12 agent, tests/mesos).
pub const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Opens a sandbox's `stdout` or `stderr` file as the agent's default
/// container logger hands it to the executor: created when missing,
/// write-only and `O_APPEND`, never truncated (the fetcher may have written
/// to it first). Seen under a real Mesos 1.12 agent (tests/mesos): the
/// executor's descriptors 1 and 2 have flags `O_WRONLY|O_APPEND`.
pub fn open_sandbox_output(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// How the emulated agent is configured; the executor sees most of it through
/// [`AgentEmulator::executor_env`] and the SUBSCRIBED event.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// `FrameworkInfo.id`; calls naming another framework get 400.
    pub framework_id: String,
    /// `ExecutorInfo.executor_id`; calls naming another executor get 400.
    pub executor_id: String,
    /// `AgentInfo.id`; updates carrying another `agent_id` are dropped unACKed.
    pub agent_id: String,
    /// `FrameworkInfo.checkpoint` and `MESOS_CHECKPOINT` (default off, as in
    /// Mesos). Without it the executor is not recovered across
    /// [`AgentEmulator::restart`].
    pub checkpoint: bool,
    /// `FrameworkInfo.capabilities` sent in SUBSCRIBED (e.g. `TaskKillingState`).
    pub capabilities: Vec<framework_info::capability::Type>,
    /// When set, every request needs `Authorization: Bearer <token>` (else 401)
    /// and the token is exported as `MESOS_EXECUTOR_AUTHENTICATION_TOKEN`.
    pub auth_token: Option<String>,
    /// The ExecutorInfo in SUBSCRIBED and in LAUNCHed tasks; by default a
    /// CUSTOM executor with the ids above.
    pub executor_info: Option<ExecutorInfo>,
    /// Also serve on this Unix socket (`MESOS_DOMAIN_SOCKET`).
    pub unix_socket: Option<PathBuf>,
    /// `MESOS_RECOVERY_TIMEOUT` (exported only with checkpointing).
    pub recovery_timeout: String,
    /// `MESOS_SUBSCRIPTION_BACKOFF_MAX` (exported only with checkpointing).
    pub backoff_max: String,
    /// `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD` unless the ExecutorInfo sets one.
    pub shutdown_grace: String,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            framework_id: DEFAULT_FRAMEWORK_ID.to_owned(),
            executor_id: DEFAULT_EXECUTOR_ID.to_owned(),
            agent_id: DEFAULT_AGENT_ID.to_owned(),
            checkpoint: false,
            capabilities: Vec::new(),
            auth_token: None,
            executor_info: None,
            unix_socket: None,
            recovery_timeout: "15mins".to_owned(),
            backoff_max: "2secs".to_owned(),
            shutdown_grace: "5secs".to_owned(),
        }
    }
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The TCP listener on 127.0.0.1.
    Tcp,
    /// The Unix socket of [`EmulatorOptions::unix_socket`].
    Unix,
}

/// One HTTP request as the emulator saw and answered it.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// When the request was answered.
    pub at: Instant,
    /// Connection number (unique per emulator), to check the connection model.
    pub connection: u64,
    /// Listener it arrived on.
    pub transport: Transport,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// `Content-Type` header, verbatim.
    pub content_type: Option<String>,
    /// `Accept` header, verbatim.
    pub accept: Option<String>,
    /// Whether an `Authorization` header was present.
    pub authorization: bool,
    /// The decoded call, if the body decoded.
    pub call: Option<Call>,
    /// Response status; 0 when the connection was dropped without an answer.
    pub status: u16,
    /// Response body (error text; empty for 200/202).
    pub body: String,
}

impl RecordedCall {
    /// The call's type, if it decoded and the type is known.
    #[must_use]
    pub fn call_type(&self) -> Option<call::Type> {
        self.call
            .as_ref()
            .and_then(|c| c.r#type)
            .and_then(|t| call::Type::try_from(t).ok())
    }
}

/// Where a status in the agent's log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOrigin {
    /// An UPDATE call.
    Update,
    /// `Subscribe.unacknowledged_updates` of a (re)SUBSCRIBE.
    Resubscribe,
    /// Generated by the agent itself (TASK_LOST on resubscribe, executor
    /// terminated, killed during launch, re-registration timeout).
    Agent,
}

/// One status as the agent's status-update path saw it.
#[derive(Debug, Clone)]
pub struct StatusRecord {
    /// When it was processed.
    pub at: Instant,
    /// The status as received (agent-generated ones carry `SOURCE_AGENT`).
    pub status: TaskStatus,
    /// Where it came from.
    pub origin: StatusOrigin,
    /// Same uuid seen before: ignored but still ACKed.
    pub duplicate: bool,
    /// The task already had a terminal update: dropped but still ACKed.
    pub after_terminal: bool,
    /// `agent_id` named another agent: silently dropped, never ACKed.
    pub foreign_agent: bool,
    /// Arrived while the framework was being torn down: answered 202 but
    /// ignored, never ACKed (the real agent's "Ignoring status update … for
    /// terminating framework").
    pub framework_terminating: bool,
}

impl StatusRecord {
    /// Whether this status changed the task's state in the agent (what the
    /// scheduler would eventually see).
    #[must_use]
    pub fn effective(&self) -> bool {
        !self.duplicate
            && !self.after_terminal
            && !self.foreign_agent
            && !self.framework_terminating
    }

    /// The state, if it is a known one.
    #[must_use]
    pub fn state(&self) -> Option<TaskState> {
        TaskState::try_from(self.status.state).ok()
    }
}

/// The agent's view of the executor (`Executor::state` in slave.hpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorPhase {
    /// Launched (or recovered) but not subscribed: non-SUBSCRIBE calls get 403.
    Registering,
    /// Subscribed.
    Running,
    /// SHUTDOWN sent; a new SUBSCRIBE only gets SHUTDOWN.
    Terminating,
    /// Destroyed (re-registration timeout): calls get "Executor cannot be found".
    Gone,
}

/// A handle on a running emulator; clones share it.
#[derive(Clone)]
pub struct AgentEmulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentEmulator")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// Shared by the handles, the accept loops and every connection task.
struct Inner {
    opts: EmulatorOptions,
    executor_info: ExecutorInfo,
    container_id: ContainerId,
    addr: SocketAddr,
    state: Mutex<State>,
    notify: tokio::sync::Notify,
    next_id: AtomicU64,
}

/// Per-task bookkeeping of the agent.
#[derive(Debug, Default, Clone)]
struct TaskTrack {
    /// LAUNCH was written to the executor (successfully or not).
    launched: bool,
    /// At least one (non-dropped) update arrived: no longer TASK_STAGING.
    got_update: bool,
    /// A terminal update was accepted.
    terminal: bool,
}

/// The current SUBSCRIBE stream.
struct StreamSlot {
    id: u64,
    tx: mpsc::UnboundedSender<Bytes>,
    json: bool,
}

/// A connection's flags, shared by its I/O wrapper, its service and its stream.
struct ConnShared {
    id: u64,
    transport: Transport,
    /// A SUBSCRIBE response is streaming on this connection.
    streaming: AtomicBool,
    /// A request on the streaming connection was already reported.
    flagged: AtomicBool,
}

struct State {
    starting: bool,
    containerizer_recovering: bool,
    /// Agent state RECOVERING until then (non-SUBSCRIBE calls get 503).
    recovering_until: Option<Instant>,
    framework_known: bool,
    /// The framework is being torn down: updates are ignored, never ACKed.
    framework_terminating: bool,
    phase: ExecutorPhase,
    stream: Option<StreamSlot>,
    queued: Vec<TaskInfo>,
    tasks: HashMap<String, TaskTrack>,
    seen_uuids: HashSet<Vec<u8>>,
    withhold_acks: bool,
    pending_acks: Vec<event::Acknowledged>,
    fail_next: Option<(u16, usize)>,
    drop_next: Option<(bool, usize)>,
    calls: Vec<RecordedCall>,
    log: Vec<StatusRecord>,
    subscriptions: Vec<call::Subscribe>,
    subscribed: usize,
    messages: Vec<Vec<u8>>,
    violations: Vec<String>,
    listeners: Vec<JoinHandle<()>>,
    conns: HashMap<u64, JoinHandle<()>>,
    /// Bumped on every come-back, so a stale re-registration timer does nothing.
    epoch: u64,
    enforce_reregistration: bool,
}

/// A TaskInfo for `task_id` as the default emulator would LAUNCH it: agent id
/// [`DEFAULT_AGENT_ID`], the default CUSTOM ExecutorInfo, and small cpus/mem
/// resources allocated to role `*`. See [`AgentEmulator::task_info`] for one
/// matching a configured emulator.
#[must_use]
pub fn task_info(task_id: &str, command: Option<CommandInfo>) -> TaskInfo {
    let opts = EmulatorOptions::default();
    build_task_info(
        task_id,
        command,
        &opts.agent_id,
        &default_executor_info(&opts),
    )
}

fn build_task_info(
    task_id: &str,
    command: Option<CommandInfo>,
    agent_id: &str,
    executor: &ExecutorInfo,
) -> TaskInfo {
    let scalar = |name: &str, amount: f64| Resource {
        name: name.to_owned(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: amount }),
        allocation_info: Some(resource::AllocationInfo {
            role: Some("*".to_owned()),
        }),
        ..Default::default()
    };
    TaskInfo {
        name: task_id.to_owned(),
        task_id: TaskId {
            value: task_id.to_owned(),
        },
        agent_id: AgentId {
            value: agent_id.to_owned(),
        },
        resources: vec![scalar("cpus", 0.1), scalar("mem", 32.0)],
        executor: Some(executor.clone()),
        command,
        ..Default::default()
    }
}

fn default_executor_info(opts: &EmulatorOptions) -> ExecutorInfo {
    ExecutorInfo {
        executor_id: ExecutorId {
            value: opts.executor_id.clone(),
        },
        framework_id: Some(FrameworkId {
            value: opts.framework_id.clone(),
        }),
        name: Some("mesos-hook-executor (emulated agent)".to_owned()),
        r#type: Some(executor_info::Type::Custom as i32),
        command: Some(CommandInfo {
            value: Some("mesos-hook-executor".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// 16 bytes with an RFC 4122 version nibble of 1–5: what `UUID::fromBytes`
/// (boost `uuid::version()`) accepts.
fn valid_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 16 && (1..=5).contains(&(bytes[6] >> 4))
}

fn is_terminal(state: i32) -> bool {
    TaskState::try_from(state).is_ok_and(crate::task::termination::is_terminal)
}

fn state_name(state: i32) -> &'static str {
    TaskState::try_from(state).map_or("UNKNOWN_STATE", |s| s.as_str_name())
}

fn event(kind: event::Type) -> Event {
    Event {
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

impl AgentEmulator {
    /// Binds 127.0.0.1 on a free port (and the Unix socket, if configured) and
    /// starts serving. The agent starts RUNNING with the executor REGISTERING.
    pub async fn start(opts: EmulatorOptions) -> std::io::Result<Self> {
        let tcp = server::bind_tcp(0)?;
        let addr = tcp.local_addr()?;
        let unix = match &opts.unix_socket {
            Some(path) => Some(server::bind_unix(path)?),
            None => None,
        };
        let executor_info = opts
            .executor_info
            .clone()
            .unwrap_or_else(|| default_executor_info(&opts));
        let inner = Arc::new(Inner {
            executor_info,
            container_id: ContainerId {
                value: uuid::Uuid::new_v4().to_string(),
                parent: None,
            },
            addr,
            state: Mutex::new(State {
                starting: false,
                containerizer_recovering: false,
                recovering_until: None,
                framework_known: true,
                framework_terminating: false,
                phase: ExecutorPhase::Registering,
                stream: None,
                queued: Vec::new(),
                tasks: HashMap::new(),
                seen_uuids: HashSet::new(),
                withhold_acks: false,
                pending_acks: Vec::new(),
                fail_next: None,
                drop_next: None,
                calls: Vec::new(),
                log: Vec::new(),
                subscriptions: Vec::new(),
                subscribed: 0,
                messages: Vec::new(),
                violations: Vec::new(),
                listeners: Vec::new(),
                conns: HashMap::new(),
                epoch: 0,
                enforce_reregistration: false,
            }),
            notify: tokio::sync::Notify::new(),
            next_id: AtomicU64::new(1),
            opts,
        });
        inner.listen(tcp, unix);
        info!(%addr, "agent emulator listening");
        Ok(Self { inner })
    }

    /// The TCP address (always 127.0.0.1); stable across restarts.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// What the agent and its containerizer give the executor process:
    /// [`executor_env`](Self::executor_env) plus `MESOS_SANDBOX` and
    /// `MESOS_DIRECTORY` set to `sandbox`, and the `PATH` the Mesos
    /// containerizer gives every executor (the agent's own is not inherited).
    #[must_use]
    pub fn executor_env_in(&self, sandbox: &std::path::Path) -> Vec<(String, String)> {
        let mut env = self.executor_env();
        let sandbox = sandbox.display().to_string();
        env.push(("MESOS_SANDBOX".into(), sandbox.clone()));
        env.push(("MESOS_DIRECTORY".into(), sandbox));
        env.push(("PATH".into(), CONTAINER_PATH.into()));
        env
    }

    /// The environment the agent would give the executor (§1.1), without the
    /// sandbox variables; [`executor_env_in`](Self::executor_env_in) adds them.
    #[must_use]
    pub fn executor_env(&self) -> Vec<(String, String)> {
        let opts = &self.inner.opts;
        let addr = self.inner.addr;
        let grace = self.inner.executor_info.shutdown_grace_period.map_or_else(
            || opts.shutdown_grace.clone(),
            |d| {
                crate::config::duration::format_mesos(Duration::from_nanos(
                    u64::try_from(d.nanoseconds).unwrap_or(0),
                ))
            },
        );
        let mut env = vec![
            ("MESOS_FRAMEWORK_ID", opts.framework_id.clone()),
            ("MESOS_EXECUTOR_ID", opts.executor_id.clone()),
            ("MESOS_SLAVE_ID", opts.agent_id.clone()),
            ("MESOS_SLAVE_PID", format!("slave(1)@{addr}")),
            ("MESOS_AGENT_ENDPOINT", addr.to_string()),
            (
                "MESOS_CHECKPOINT",
                if opts.checkpoint { "1" } else { "0" }.to_owned(),
            ),
        ];
        if opts.checkpoint {
            env.push(("MESOS_RECOVERY_TIMEOUT", opts.recovery_timeout.clone()));
            env.push(("MESOS_SUBSCRIPTION_BACKOFF_MAX", opts.backoff_max.clone()));
        }
        env.push(("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", grace));
        env.push(("MESOS_HTTP_COMMAND_EXECUTOR", "0".to_owned()));
        env.push(("LIBPROCESS_PORT", "0".to_owned()));
        if let Some(path) = &opts.unix_socket {
            env.push(("MESOS_DOMAIN_SOCKET", path.display().to_string()));
        }
        if let Some(token) = &opts.auth_token {
            env.push(("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", token.clone()));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// A TaskInfo for this emulator (its agent id and ExecutorInfo).
    #[must_use]
    pub fn task_info(&self, task_id: &str, command: Option<CommandInfo>) -> TaskInfo {
        build_task_info(
            task_id,
            command,
            &self.inner.opts.agent_id,
            &self.inner.executor_info,
        )
    }

    // ----- driving events -------------------------------------------------

    /// Launches a task. An empty `agent_id` and a missing `executor` are filled
    /// in. While the executor is REGISTERING the LAUNCH is queued and delivered
    /// after the next SUBSCRIBED; while RUNNING it is written to the current
    /// stream, and if there is none it is lost, as with the real agent: the task
    /// then stays STAGING and gets TASK_LOST on resubscribe unless the executor
    /// lists it.
    pub fn launch(&self, task: TaskInfo) {
        let mut task = task;
        if task.agent_id.value.is_empty() {
            task.agent_id.value.clone_from(&self.inner.opts.agent_id);
        }
        if task.executor.is_none() {
            task.executor = Some(self.inner.executor_info.clone());
        }
        let id = task.task_id.value.clone();
        let mut st = self.inner.lock();
        match st.phase {
            ExecutorPhase::Registering => {
                info!(task = %id, "executor not subscribed yet: queueing LAUNCH");
                st.tasks.entry(id).or_default();
                st.queued.push(task);
            }
            ExecutorPhase::Running => {
                st.tasks.entry(id.clone()).or_default().launched = true;
                let ev = Event {
                    launch: Some(event::Launch { task }),
                    ..event(event::Type::Launch)
                };
                self.inner.send_locked(&mut st, &ev);
            }
            ExecutorPhase::Terminating | ExecutorPhase::Gone => {
                warn!(task = %id, phase = ?st.phase, "dropping LAUNCH for a terminating executor");
            }
        }
        drop(st);
        self.inner.changed();
    }

    /// Kills a task. A still-queued task is answered by the agent itself with
    /// TASK_KILLED / REASON_TASK_KILLED_DURING_LAUNCH; for a RUNNING executor the
    /// KILL goes on the current stream (lost if none); otherwise it is dropped.
    pub fn kill(&self, task_id: &str, kill_policy: Option<KillPolicy>) {
        let mut st = self.inner.lock();
        if let Some(pos) = st.queued.iter().position(|t| t.task_id.value == task_id) {
            st.queued.remove(pos);
            info!(task = task_id, "killing a queued task in the agent");
            self.inner.agent_status(
                &mut st,
                task_id,
                TaskState::TaskKilled,
                task_status::Reason::TaskKilledDuringLaunch,
                "Killed before delivery to the executor",
            );
        } else if st.phase == ExecutorPhase::Running {
            let kill = event::Kill {
                task_id: TaskId {
                    value: task_id.to_owned(),
                },
                kill_policy,
            };
            let ev = Event {
                kill: Some(kill),
                ..event(event::Type::Kill)
            };
            self.inner.send_locked(&mut st, &ev);
        } else {
            warn!(task = task_id, phase = ?st.phase, "dropping KILL: executor is not running");
        }
        drop(st);
        self.inner.changed();
    }

    /// Marks the executor TERMINATING and sends SHUTDOWN on the current stream
    /// (a later SUBSCRIBE gets SHUTDOWN as its only event).
    pub fn shutdown(&self) {
        let mut st = self.inner.lock();
        if st.phase != ExecutorPhase::Gone {
            st.phase = ExecutorPhase::Terminating;
        }
        info!("shutting down the executor");
        self.inner
            .send_locked(&mut st, &event(event::Type::Shutdown));
        drop(st);
        self.inner.changed();
    }

    /// Framework teardown (the scheduler's TEARDOWN): as [`shutdown`](Self::shutdown),
    /// and from now on the executor's status updates are answered 202 but
    /// ignored and never acknowledged, as a real agent does for a terminating
    /// framework (seen in tests/mesos `framework_teardown`); the executor can
    /// only end by its shutdown budget.
    pub fn teardown_framework(&self) {
        self.inner.lock().framework_terminating = true;
        info!("tearing down the framework");
        self.shutdown();
    }

    /// Sends a framework MESSAGE; dropped unless the executor is RUNNING and
    /// the agent is not recovering (`Slave::schedulerMessage`).
    pub fn message(&self, data: &[u8]) {
        let mut st = self.inner.lock();
        if st.phase == ExecutorPhase::Running && !st.recovering() {
            let ev = Event {
                message: Some(event::Message {
                    data: data.to_vec(),
                }),
                ..event(event::Type::Message)
            };
            self.inner.send_locked(&mut st, &ev);
        } else {
            warn!(phase = ?st.phase, "dropping MESSAGE: executor not running or agent recovering");
        }
    }

    /// Sends a HEARTBEAT event now (the real agent does so every 30 min).
    pub fn heartbeat(&self) {
        self.send_event(event(event::Type::Heartbeat));
    }

    /// Sends any event on the current stream (or logs that there is none).
    pub fn send_event(&self, event: Event) {
        let mut st = self.inner.lock();
        self.inner.send_locked(&mut st, &event);
    }

    /// Writes raw bytes into the current stream as one chunk (malformed frames).
    pub fn send_raw(&self, bytes: &[u8]) {
        let mut st = self.inner.lock();
        self.inner
            .send_bytes_locked(&mut st, Bytes::copy_from_slice(bytes), "raw bytes");
    }

    /// Ends the current SUBSCRIBE stream (terminating chunk, i.e. EOF), as the
    /// agent does when a newer SUBSCRIBE replaces it. The executor stays RUNNING.
    pub fn close_stream(&self) {
        let slot = self.inner.lock().stream.take();
        if slot.is_some() {
            info!("closing the SUBSCRIBE stream");
        }
        drop(slot);
        self.inner.changed();
    }

    /// Agent restart: drops the stream and every connection, refuses
    /// connections for `down_for`, then listens on the same port again in
    /// RECOVERING state with the executor REGISTERING. SUBSCRIBE is accepted at
    /// once; UPDATE and MESSAGE get 503 until `reregistration_window` has passed.
    /// Without checkpointing the framework is forgotten: every call then gets
    /// 400 "Framework cannot be found". See
    /// [`enforce_reregistration`](Self::enforce_reregistration) for what
    /// happens to an executor that misses the window.
    pub async fn restart(
        &self,
        down_for: Duration,
        reregistration_window: Duration,
    ) -> std::io::Result<()> {
        info!(?down_for, ?reregistration_window, "agent restarting");
        self.go_down().await;
        {
            let mut st = self.inner.lock();
            if matches!(
                st.phase,
                ExecutorPhase::Running | ExecutorPhase::Registering
            ) {
                st.phase = ExecutorPhase::Registering;
            }
            st.framework_known = self.inner.opts.checkpoint;
        }
        tokio::time::sleep(down_for).await;
        self.come_back_recovering(reregistration_window).await
    }

    /// Closes the stream, every connection and the listeners: connections are
    /// refused until [`come_back`](Self::come_back). The agent's state is kept.
    pub async fn go_down(&self) {
        // Stop accepting first: the executor reconnects as soon as its stream
        // ends, and a connection accepted while the listeners were still up
        // would otherwise be registered after `conns` was taken and survive the
        // outage (the executor then "subscribes" to the agent that went away).
        let listeners = std::mem::take(&mut self.inner.lock().listeners);
        for handle in &listeners {
            handle.abort();
        }
        for handle in listeners {
            // Awaiting makes sure the sockets are closed before we go on.
            let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
        }
        let (conns, slot) = {
            let mut st = self.inner.lock();
            (std::mem::take(&mut st.conns), st.stream.take())
        };
        drop(slot);
        for handle in conns.values() {
            handle.abort();
        }
        for handle in conns.into_values() {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
        }
        info!("agent emulator down: connections refused");
        self.inner.changed();
    }

    /// Listens again on the same port (and Unix socket) with the state as it
    /// was. Binding is retried for a few seconds while the port is held.
    pub async fn come_back(&self) -> std::io::Result<()> {
        let (tcp, unix) = server::rebind(
            self.inner.addr.port(),
            self.inner.opts.unix_socket.as_deref(),
        )
        .await?;
        self.inner.lock().epoch += 1;
        self.inner.listen(tcp, unix);
        info!(addr = %self.inner.addr, "agent emulator back");
        self.inner.changed();
        Ok(())
    }

    /// [`come_back`](Self::come_back) in RECOVERING state for `window` (see
    /// [`restart`](Self::restart)).
    pub async fn come_back_recovering(&self, window: Duration) -> std::io::Result<()> {
        self.inner.lock().recovering_until = Some(Instant::now() + window);
        self.come_back().await?;
        let epoch = self.inner.lock().epoch;
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            inner.reregistration_timeout(epoch);
        });
        Ok(())
    }

    /// Off by default. When on, an executor still not re-subscribed when the
    /// re-registration window of [`restart`](Self::restart) closes is destroyed
    /// as by the real agent (`reregisterExecutorTimeout`): its non-terminal
    /// tasks get TASK_LOST / REASON_EXECUTOR_REREGISTRATION_TIMEOUT, later calls
    /// get "Executor cannot be found", and a violation is recorded. Off, the
    /// executor simply stays REGISTERING, which keeps tests whose window is
    /// about one backoff period free of timing races.
    pub fn enforce_reregistration(&self, on: bool) {
        self.inner.lock().enforce_reregistration = on;
    }

    /// Withholds ACKNOWLEDGED events; turning it off sends the pending ones on
    /// the current stream (or drops them, logged, if there is none).
    pub fn withhold_acks(&self, on: bool) {
        let mut st = self.inner.lock();
        st.withhold_acks = on;
        if !on {
            for ack in std::mem::take(&mut st.pending_acks) {
                let ev = Event {
                    acknowledged: Some(ack),
                    ..event(event::Type::Acknowledged)
                };
                self.inner.send_locked(&mut st, &ev);
            }
        }
    }

    /// Answers the next `count` UPDATE calls (that would otherwise be accepted)
    /// with `status` and do not process them.
    pub fn fail_next_updates(&self, status: u16, count: usize) {
        self.inner.lock().fail_next = (count > 0).then_some((status, count));
    }

    /// Drops the connection of the next `count` accepted UPDATE calls without
    /// answering. With `process` the update is still processed (and ACKed on
    /// the stream): the executor only lost the 202.
    pub fn drop_next_updates(&self, count: usize, process: bool) {
        self.inner.lock().drop_next = (count > 0).then_some((process, count));
    }

    /// While on, every request gets 404 (the agent's route is not installed).
    pub fn set_starting(&self, on: bool) {
        self.inner.lock().starting = on;
    }

    /// While on, every request gets 503 (containerizer recovery not finished).
    pub fn set_containerizer_recovering(&self, on: bool) {
        self.inner.lock().containerizer_recovering = on;
    }

    // ----- observation ----------------------------------------------------

    /// Every request, in the order answered.
    #[must_use]
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.inner.lock().calls.clone()
    }

    /// Statuses the executor sent that reached the status-update path (UPDATE
    /// calls answered 202 and `unacknowledged_updates`), in order, including
    /// duplicates and dropped ones; see [`status_log`](Self::status_log) for
    /// the flags and the agent-generated statuses.
    #[must_use]
    pub fn updates(&self) -> Vec<TaskStatus> {
        self.inner
            .lock()
            .log
            .iter()
            .filter(|r| r.origin != StatusOrigin::Agent)
            .map(|r| r.status.clone())
            .collect()
    }

    /// Everything the status-update path saw, with dedup/drop flags.
    #[must_use]
    pub fn status_log(&self) -> Vec<StatusRecord> {
        self.inner.lock().log.clone()
    }

    /// The task's effective states in order (deduplicated by uuid, nothing after
    /// the first terminal one, agent-generated ones included).
    #[must_use]
    pub fn states(&self, task_id: &str) -> Vec<TaskState> {
        self.inner
            .lock()
            .log
            .iter()
            .filter(|r| r.effective() && r.status.task_id.value == task_id)
            .filter_map(StatusRecord::state)
            .collect()
    }

    /// Every SUBSCRIBE answered 200, in order.
    #[must_use]
    pub fn subscriptions(&self) -> Vec<call::Subscribe> {
        self.inner.lock().subscriptions.clone()
    }

    /// Number of SUBSCRIBEs answered 200.
    #[must_use]
    pub fn subscribed_count(&self) -> usize {
        self.inner.lock().subscribed
    }

    /// `data` of every MESSAGE call accepted.
    #[must_use]
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.inner.lock().messages.clone()
    }

    /// Protocol violations: requests the agent rejected with 4xx/501 (other
    /// than injected failures), requests on the SUBSCRIBE connection, bad
    /// `unacknowledged_updates`, foreign `agent_id`s, unknown
    /// `unacknowledged_tasks`, missed re-registration.
    #[must_use]
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().violations.clone()
    }

    /// The agent's view of the executor.
    #[must_use]
    pub fn executor_phase(&self) -> ExecutorPhase {
        self.inner.lock().phase
    }

    /// Whether a SUBSCRIBE stream is open.
    #[must_use]
    pub fn stream_open(&self) -> bool {
        self.inner
            .lock()
            .stream
            .as_ref()
            .is_some_and(|s| !s.tx.is_closed())
    }

    /// Calls `f` whenever the emulator's state changes (and at least every
    /// 50 ms) until it returns `Some`, or fails after `timeout` with a summary
    /// of the emulator's state.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = f(self) {
                return Ok(v);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(format!("timed out after {timeout:?}; {}", self.summary()));
            }
            let tick = deadline.min(now + Duration::from_millis(50));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(tick) => {}
            }
        }
    }

    /// Waits until `n` SUBSCRIBEs in total were answered 200.
    pub async fn wait_subscribed(&self, n: usize, timeout: Duration) -> Result<(), String> {
        self.wait_for(timeout, |e| (e.subscribed_count() >= n).then_some(()))
            .await
            .map_err(|e| format!("waiting for {n} SUBSCRIBE(s): {e}"))
    }

    /// Waits until the task effectively reached `state`; returns that status.
    pub async fn wait_state(
        &self,
        task_id: &str,
        state: TaskState,
        timeout: Duration,
    ) -> Result<TaskStatus, String> {
        self.wait_for(timeout, |e| {
            e.inner
                .lock()
                .log
                .iter()
                .find(|r| {
                    r.effective()
                        && r.status.task_id.value == task_id
                        && r.status.state == state as i32
                })
                .map(|r| r.status.clone())
        })
        .await
        .map_err(|e| {
            format!(
                "waiting for {task_id} to reach {}: {e}",
                state.as_str_name()
            )
        })
    }

    /// One paragraph describing the state, for timeout messages.
    #[must_use]
    pub fn summary(&self) -> String {
        let st = self.inner.lock();
        let calls: Vec<String> = st
            .calls
            .iter()
            .rev()
            .take(8)
            .rev()
            .map(|c| {
                let kind = c.call_type().map_or("-", |t| t.as_str_name());
                format!("{kind}→{}", c.status)
            })
            .collect();
        let mut tasks: Vec<String> = st
            .tasks
            .keys()
            .map(|id| {
                let states: Vec<&str> = st
                    .log
                    .iter()
                    .filter(|r| r.effective() && &r.status.task_id.value == id)
                    .map(|r| state_name(r.status.state))
                    .collect();
                format!("{id}: [{}]", states.join(", "))
            })
            .collect();
        tasks.sort();
        format!(
            "emulator: executor {:?}, stream {}, {} subscribe(s), {} call(s) (last: {}), tasks {{{}}}, violations {:?}",
            st.phase,
            if st.stream.is_some() { "open" } else { "closed" },
            st.subscribed,
            st.calls.len(),
            calls.join(" "),
            tasks.join("; "),
            st.violations
        )
    }
}

impl State {
    fn recovering(&self) -> bool {
        self.recovering_until.is_some_and(|t| Instant::now() < t)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::util::lock(&self.state)
    }

    fn changed(&self) {
        self.notify.notify_waiters();
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn violation(&self, what: String) {
        warn!(violation = %what, "protocol violation");
        self.lock().violations.push(what);
        self.changed();
    }

    fn encode(ev: &Event, json: bool) -> Option<Bytes> {
        if json {
            match serde_json::to_vec(ev) {
                Ok(v) => Some(crate::agent::recordio::frame(&v)),
                Err(e) => {
                    warn!(error = %e, "cannot encode event as JSON");
                    None
                }
            }
        } else {
            Some(crate::agent::recordio::frame(&ev.encode_to_vec()))
        }
    }

    /// Writes an event to the current stream; like `Executor::send`, a missing
    /// or closed stream only gets a log line.
    fn send_locked(&self, st: &mut State, ev: &Event) -> bool {
        let kind = ev
            .r#type
            .and_then(|t| event::Type::try_from(t).ok())
            .map_or("UNKNOWN", |t| t.as_str_name());
        let Some(json) = st.stream.as_ref().map(|s| s.json) else {
            warn!(event = kind, "unable to send event: no SUBSCRIBE stream");
            return false;
        };
        match Self::encode(ev, json) {
            Some(bytes) => self.send_bytes_locked(st, bytes, kind),
            None => false,
        }
    }

    fn send_bytes_locked(&self, st: &mut State, bytes: Bytes, what: &str) -> bool {
        let Some(slot) = &st.stream else {
            warn!(event = what, "unable to send event: no SUBSCRIBE stream");
            return false;
        };
        if slot.tx.send(bytes).is_ok() {
            debug!(event = what, stream = slot.id, "event sent");
            true
        } else {
            warn!(event = what, "unable to send event: connection closed");
            st.stream = None;
            false
        }
    }

    fn emit_ack(&self, st: &mut State, ack: event::Acknowledged) {
        if st.withhold_acks {
            st.pending_acks.push(ack);
        } else {
            let ev = Event {
                acknowledged: Some(ack),
                ..event(event::Type::Acknowledged)
            };
            self.send_locked(st, &ev);
        }
    }

    /// The status-update path (`Slave::statusUpdate` … `___statusUpdate`):
    /// foreign agent → dropped without ACK; duplicate uuid → ACKed again; after
    /// the task's first terminal update → dropped but ACKed. Returns the ACK.
    fn process_status(
        &self,
        st: &mut State,
        status: TaskStatus,
        origin: StatusOrigin,
    ) -> Option<event::Acknowledged> {
        let uuid = status.uuid.clone().unwrap_or_default();
        let task_id = status.task_id.clone();
        let mut record = StatusRecord {
            at: Instant::now(),
            status,
            origin,
            duplicate: false,
            after_terminal: false,
            foreign_agent: false,
            framework_terminating: false,
        };
        if st.framework_terminating {
            warn!(task = %task_id.value, "ignoring status update for a terminating framework: no ACK");
            record.framework_terminating = true;
            st.log.push(record);
            return None;
        }
        if let Some(agent) = record
            .status
            .agent_id
            .as_ref()
            .filter(|a| a.value != self.opts.agent_id)
        {
            let what = format!(
                "status update for task {} carries agent_id '{}' (this agent is '{}'): dropped without ACK",
                task_id.value, agent.value, self.opts.agent_id
            );
            warn!(violation = %what, "protocol violation");
            st.violations.push(what);
            record.foreign_agent = true;
            st.log.push(record);
            return None;
        }
        if st.seen_uuids.contains(&uuid) {
            debug!(task = %task_id.value, "ignoring duplicate status update");
            record.duplicate = true;
        } else {
            st.seen_uuids.insert(uuid.clone());
            let track = st.tasks.entry(task_id.value.clone()).or_default();
            track.got_update = true;
            if track.terminal {
                debug!(task = %task_id.value, "task already terminated: update dropped");
                record.after_terminal = true;
            } else if is_terminal(record.status.state) {
                track.terminal = true;
            }
            info!(task = %task_id.value, state = state_name(record.status.state), ?origin, "status update");
        }
        st.log.push(record);
        Some(event::Acknowledged { task_id, uuid })
    }

    /// Records an agent-generated status (`SOURCE_AGENT`, never sent anywhere).
    fn agent_status(
        &self,
        st: &mut State,
        task_id: &str,
        state: TaskState,
        reason: task_status::Reason,
        message: &str,
    ) {
        let status = TaskStatus {
            task_id: TaskId {
                value: task_id.to_owned(),
            },
            state: state as i32,
            message: Some(message.to_owned()),
            agent_id: Some(AgentId {
                value: self.opts.agent_id.clone(),
            }),
            executor_id: Some(ExecutorId {
                value: self.opts.executor_id.clone(),
            }),
            timestamp: Some(crate::agent::updates::now_secs()),
            source: Some(task_status::Source::Agent as i32),
            reason: Some(reason as i32),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            ..Default::default()
        };
        info!(
            task = task_id,
            state = state.as_str_name(),
            reason = reason.as_str_name(),
            "agent-generated status"
        );
        self.process_status(st, status, StatusOrigin::Agent);
    }

    /// `Slave::subscribe`: returns the receiving side of the new stream and its
    /// id (`None` for the SHUTDOWN-only stream of a terminating executor).
    fn subscribe(
        &self,
        st: &mut State,
        sub: call::Subscribe,
        json: bool,
    ) -> (mpsc::UnboundedReceiver<Bytes>, Option<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        st.subscriptions.push(sub.clone());
        st.subscribed += 1;
        if matches!(st.phase, ExecutorPhase::Terminating | ExecutorPhase::Gone) {
            info!("SUBSCRIBE from a terminating executor: SHUTDOWN only");
            if let Some(bytes) = Self::encode(&event(event::Type::Shutdown), json) {
                let _ = tx.send(bytes);
            }
            return (rx, None); // `tx` dropped here: the stream ends after SHUTDOWN.
        }
        if st.stream.take().is_some() {
            info!("closing already existing SUBSCRIBE stream");
        }
        st.phase = ExecutorPhase::Running;

        // Step 4: unacknowledged updates through the normal path, unvalidated.
        let mut acks = Vec::new();
        let mut shutdown = false;
        for update in sub.unacknowledged_updates {
            let mut status = update.status;
            let task = status.task_id.value.clone();
            match status.uuid.as_deref() {
                None => {
                    st.violations.push(format!(
                        "unacknowledged update for task {task} has no uuid (ignored)"
                    ));
                    continue;
                }
                Some(u) if !valid_uuid(u) => {
                    st.violations.push(format!(
                        "unacknowledged update for task {task} has an invalid uuid ({} bytes): would abort the real agent",
                        u.len()
                    ));
                    continue;
                }
                Some(_) => {}
            }
            if status.state == TaskState::TaskStaging as i32 {
                st.violations.push(format!("unacknowledged update for task {task} is TASK_STAGING: the agent shuts the executor down"));
                shutdown = true;
                continue;
            }
            status.source = Some(task_status::Source::Executor as i32);
            acks.extend(self.process_status(st, status, StatusOrigin::Resubscribe));
        }

        // Step 5: launched tasks still STAGING that the executor did not list.
        let listed: HashSet<String> = sub
            .unacknowledged_tasks
            .iter()
            .map(|t| t.task_id.value.clone())
            .collect();
        for id in &listed {
            if !st.tasks.get(id).is_some_and(|t| t.launched) {
                st.violations.push(format!(
                    "unacknowledged_tasks lists task {id}, which was never launched"
                ));
            }
        }
        let mut lost: Vec<String> = st
            .tasks
            .iter()
            .filter(|(id, t)| t.launched && !t.got_update && !t.terminal && !listed.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        lost.sort();
        let partition_aware = self
            .opts
            .capabilities
            .contains(&framework_info::capability::Type::PartitionAware);
        for id in lost {
            let state = if partition_aware {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            self.agent_status(
                st,
                &id,
                state,
                task_status::Reason::AgentRestarted,
                "Task launched during agent restart",
            );
        }

        // Step 7: SUBSCRIBED, queued LAUNCHes, then the ACKs.
        let stream_id = self.next_id();
        st.stream = Some(StreamSlot {
            id: stream_id,
            tx,
            json,
        });
        let subscribed = event::Subscribed {
            executor_info: self.executor_info.clone(),
            framework_info: self.framework_info(),
            agent_info: AgentInfo {
                hostname: "localhost".to_owned(),
                id: Some(AgentId {
                    value: self.opts.agent_id.clone(),
                }),
                port: Some(i32::from(self.addr.port())),
                ..Default::default()
            },
            container_id: Some(self.container_id.clone()),
        };
        self.send_locked(
            st,
            &Event {
                subscribed: Some(subscribed),
                ..event(event::Type::Subscribed)
            },
        );
        for task in std::mem::take(&mut st.queued) {
            st.tasks
                .entry(task.task_id.value.clone())
                .or_default()
                .launched = true;
            self.send_locked(
                st,
                &Event {
                    launch: Some(event::Launch { task }),
                    ..event(event::Type::Launch)
                },
            );
        }
        for ack in acks {
            self.emit_ack(st, ack);
        }
        if shutdown {
            st.phase = ExecutorPhase::Terminating;
            self.send_locked(st, &event(event::Type::Shutdown));
        }
        (rx, Some(stream_id))
    }

    fn framework_info(&self) -> FrameworkInfo {
        FrameworkInfo {
            user: std::env::var("USER").unwrap_or_else(|_| "root".to_owned()),
            name: "emulated-framework".to_owned(),
            id: Some(FrameworkId {
                value: self.opts.framework_id.clone(),
            }),
            checkpoint: Some(self.opts.checkpoint),
            capabilities: self
                .opts
                .capabilities
                .iter()
                .map(|c| framework_info::Capability {
                    r#type: Some(*c as i32),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A stream's body went away (executor closed the connection, or the agent
    /// closed the stream): forget it if it is still the current one.
    fn stream_gone(&self, id: u64) {
        let mut st = self.lock();
        if st.stream.as_ref().is_some_and(|s| s.id == id) {
            info!(stream = id, "SUBSCRIBE stream closed by the executor");
            st.stream = None;
        }
        drop(st);
        self.changed();
    }

    /// `reregisterExecutorTimeout`: an executor still REGISTERING when the
    /// window closes is destroyed.
    fn reregistration_timeout(&self, epoch: u64) {
        let mut st = self.lock();
        if st.epoch != epoch || !st.enforce_reregistration {
            return;
        }
        if st.phase == ExecutorPhase::Registering && st.framework_known {
            st.violations
                .push("executor did not re-subscribe within the re-registration window".to_owned());
            let mut ids: Vec<String> = st
                .tasks
                .iter()
                .filter(|(_, t)| t.launched && !t.terminal)
                .map(|(id, _)| id.clone())
                .collect();
            ids.sort();
            let partition_aware = self
                .opts
                .capabilities
                .contains(&framework_info::capability::Type::PartitionAware);
            for id in ids {
                let state = if partition_aware {
                    TaskState::TaskGone
                } else {
                    TaskState::TaskLost
                };
                self.agent_status(
                    &mut st,
                    &id,
                    state,
                    task_status::Reason::ExecutorReregistrationTimeout,
                    "Executor did not reregister within the reregistration timeout",
                );
            }
            st.phase = ExecutorPhase::Gone;
        }
        drop(st);
        self.changed();
    }
}
