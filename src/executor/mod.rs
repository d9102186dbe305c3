//! The owner of all executor state, and its event loop.
//!
//! [`Executor`] reads one inbox of [`Input`]s and otherwise wakes only for its
//! nearest deadline. It never awaits I/O: the subscription, the update sender,
//! the task's exit and OS signals are separate tasks that report here. Each
//! handler is a short sequence of decisions from [`crate::policy`] followed by
//! effects (send an update, signal the task tree, arm a deadline).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, error, info, warn};

use crate::{
    agent::subscription,
    agent::updates::{self, Acked, UpdateLog},
    agent::{AgentClient, AgentError},
    config::Config,
    health,
    hooks::{self, ChainResult, HookChain, HookContext, HookEvent},
    proto::{
        executor::{event, Call, Event},
        v1::{self, task_status::Reason, TaskState},
    },
    task::launch::{self, LaunchContext, LaunchSpec},
    task::process::{self, Reaper},
    task::termination::{self, ExitOutcome, KillCause},
};

/// Everything that can change the executor's state.
#[derive(Debug)]
pub enum Input {
    /// The subscription loop is about to SUBSCRIBE and needs the call (carrying
    /// the unacknowledged tasks and updates); `None` stops the loop.
    SubscribeRequest(oneshot::Sender<Option<Call>>),
    /// SUBSCRIBE was answered `200 OK`; events follow.
    StreamOpened,
    /// A SUBSCRIBE attempt failed.
    SubscribeFailed(AgentError),
    /// An event from the agent.
    Agent(Box<Event>),
    /// The event stream ended.
    Disconnected(String),
    /// The task's root process ended.
    TaskExited(ExitOutcome),
    /// The agent answered `202 Accepted` to the UPDATE with this uuid.
    UpdateAccepted(Vec<u8>),
    /// The agent refused an UPDATE (4xx); it stays unacknowledged.
    UpdateRefused {
        /// The update's uuid.
        uuid: Vec<u8>,
        /// What the agent said.
        error: String,
    },
    /// The executor received SIGTERM or SIGINT.
    Signal(&'static str),
    /// A hook chain finished.
    HookDone {
        /// Which chain.
        event: HookEvent,
        /// How it ended.
        result: ChainResult,
    },
    /// A health check's raw result ([`crate::health`]).
    HealthProbe(health::Observation),
    /// A generic check's raw result ([`crate::health`]).
    CheckProbe(health::Observation),
}

/// How the executor run ended; `main` maps it to the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task's terminal update was acknowledged (or SHUTDOWN was honoured).
    Completed,
    /// No acknowledgement for the terminal update within the wait.
    Unacknowledged,
    /// The agent was never reached, or lost past the recovery rules.
    AgentLost,
    /// The executor could not do its job (e.g. no SIGCHLD handler).
    Internal(String),
}

impl Outcome {
    /// The process exit code (documented in the README).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Completed => 0,
            Self::Unacknowledged => 1,
            Self::AgentLost => 3,
            Self::Internal(_) => 4,
        }
    }
}

/// The agent link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Never subscribed yet; give up at `deadline`.
    Registering { deadline: Instant },
    /// SUBSCRIBED received on the current stream.
    Subscribed,
    /// Lost after being subscribed (checkpointing); give up at `deadline`,
    /// measured from the first disconnect.
    Reconnecting { deadline: Instant },
    /// Given up; no more SUBSCRIBE.
    Gone,
}

/// The task's life.
#[derive(Debug)]
enum Task {
    /// No task launched yet.
    Idle,
    /// LAUNCH received; before-start hooks run; no process yet.
    Launching { info: Arc<v1::TaskInfo>, spec: Box<LaunchSpec>, hooks: JoinHandle<()> },
    /// The root process runs.
    Running { info: Arc<v1::TaskInfo>, pid: i32, max_completion: Option<Instant> },
    /// Being killed; SIGKILL at `deadline`.
    Killing {
        info: Arc<v1::TaskInfo>,
        pid: i32,
        cause: KillCause,
        /// Why, for the terminal message (a failed hook).
        detail: Option<String>,
        started: Instant,
        deadline: Instant,
        phase: KillPhase,
        /// The root's exit, if it came while before-terminate hooks ran.
        exited: Option<ExitOutcome>,
    },
    /// The root exited by itself; before-terminate hooks run before the
    /// leftovers are killed and the terminal update is sent.
    Draining { info: Arc<v1::TaskInfo>, pid: i32, outcome: ExitOutcome },
    /// The terminal update was recorded.
    Terminal { task_id: v1::TaskId, state: TaskState },
}

/// Where a kill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPhase {
    /// before-terminate hooks run; SIGTERM at their end or at `until`.
    Hooks { until: Instant },
    /// SIGTERM sent.
    Terminated,
    /// SIGKILL sent.
    Escalated,
}

/// The once-only before-terminate chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    Running,
    Done,
}

/// Why the executor is ending, once it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// SHUTDOWN from the agent: the container is destroyed at `deadline`.
    Shutdown { deadline: Instant },
    /// The agent is gone for good.
    AgentLost,
    /// SIGTERM/SIGINT to the executor.
    Signal,
}

/// The current subscription's update sender.
struct Sender {
    queue: mpsc::UnboundedSender<v1::TaskStatus>,
    handle: JoinHandle<()>,
}

/// The executor's whole state; see the module docs.
pub struct Executor {
    cfg: Arc<Config>,
    client: AgentClient,
    reaper: Reaper,
    inbox_tx: mpsc::Sender<Input>,
    inbox: mpsc::Receiver<Input>,
    log: UpdateLog,
    link: Link,
    framework: Option<v1::FrameworkInfo>,
    executor_info: Option<v1::ExecutorInfo>,
    sender: Option<Sender>,
    /// Uuids carried by the SUBSCRIBE in flight: they need no separate UPDATE.
    in_subscribe: Vec<Vec<u8>>,
    task: Task,
    ending: Option<Ending>,
    /// When to stop waiting for the last acknowledgements.
    ack_deadline: Option<Instant>,
    /// A task that never launched but was killed (lost LAUNCH) is remembered
    /// so a second KILL does not produce a second terminal update.
    killed_unknown: Vec<String>,
    /// The configured hooks.
    hooks: HookChain,
    /// Environment base for hook scripts (no settings, no secrets).
    base_env: Arc<BTreeMap<String, String>>,
    /// From SUBSCRIBED: the agent's id and hostname, for hooks.
    agent_info: Option<v1::AgentInfo>,
    /// before-terminate runs exactly once.
    before_terminate: Stage,
    /// The task's health check and generic check.
    checks: health::Checks,
    /// What the remote API's `/remote/status` shows; published by the owner.
    status: watch::Sender<StatusSnapshot>,
}

/// The part of the executor's state others may read (the remote API's
/// status), published by the owner after each input: readers never touch the
/// owner's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// `MESOS_FRAMEWORK_ID`.
    pub framework_id: String,
    /// `MESOS_EXECUTOR_ID`.
    pub executor_id: String,
    /// The task, once launched.
    pub task_id: Option<String>,
    /// Its last state, e.g. `TASK_RUNNING`.
    pub state: Option<String>,
    /// Its root pid while it runs.
    pub pid: Option<i32>,
    /// Its health, once health checks report it.
    pub healthy: Option<bool>,
}

/// Runs the executor to completion with `cfg`. Installs the child reaper, the
/// subscription loop and signal handlers, then drives the event loop.
pub async fn run(cfg: Config) -> Outcome {
    let cfg = Arc::new(cfg);
    let reaper = match Reaper::install() {
        Ok(r) => r,
        Err(e) => return Outcome::Internal(format!("installing the child reaper: {e}")),
    };
    let client = match AgentClient::new(cfg.agent.clone(), cfg.auth_token.clone(), cfg.settings.call_timeout) {
        Ok(c) => c,
        Err(e) => return Outcome::Internal(e.to_string()),
    };
    let (inbox_tx, inbox) = mpsc::channel(256);
    if let Err(e) = spawn_signal_listener(inbox_tx.clone()) {
        return Outcome::Internal(format!("installing signal handlers: {e}"));
    }
    let backoff_max = if cfg.checkpoint { cfg.subscription_backoff_max } else { Duration::from_secs(1) };
    let (status, status_rx) = watch::channel(StatusSnapshot {
        framework_id: cfg.framework_id.clone(),
        executor_id: cfg.executor_id.clone(),
        ..StatusSnapshot::default()
    });
    let base_env = Arc::new(launch::inherited_env(&cfg.environment.0, &cfg.settings.env_denylist));
    let remote = crate::remote::start(&cfg, reaper.clone(), &base_env, status_rx);
    let subscription =
        tokio::spawn(subscription::subscribe_loop(client.clone(), inbox_tx.clone(), backoff_max, cfg.settings.max_record_size));
    info!(agent = %client.url(), checkpoint = cfg.checkpoint, release = crate::RELEASE, "starting; subscribing to the agent");
    let hooks = hooks::build_chain(&cfg.settings.hooks, cfg.settings.call_timeout);
    if !hooks.is_empty() {
        info!(hooks = ?hooks.names(), "hook chain configured");
    }
    let hooks_empty = hooks.is_empty();
    let executor = Executor {
        link: Link::Registering { deadline: Instant::now() + cfg.settings.registration_timeout },
        cfg,
        client,
        reaper,
        inbox_tx,
        inbox,
        log: UpdateLog::default(),
        framework: None,
        executor_info: None,
        sender: None,
        in_subscribe: Vec::new(),
        task: Task::Idle,
        ending: None,
        ack_deadline: None,
        killed_unknown: Vec::new(),
        hooks,
        base_env,
        agent_info: None,
        // With no hooks there is nothing to run before terminating.
        before_terminate: if hooks_empty { Stage::Done } else { Stage::Pending },
        checks: health::Checks::default(),
        status,
    };
    let outcome = executor.event_loop().await;
    subscription.abort();
    if let Some(remote) = remote {
        remote.stop().await;
    }
    let swept = process::kill_all_descendants();
    if swept > 0 {
        warn!(count = swept, "killed leftover descendant processes before exit");
    }
    outcome
}

fn spawn_signal_listener(inbox: mpsc::Sender<Input>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if inbox.send(Input::Signal(name)).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

impl Executor {
    async fn event_loop(mut self) -> Outcome {
        loop {
            self.progress();
            self.publish_status();
            if let Some(outcome) = self.finished() {
                self.stop_sender();
                return outcome;
            }
            let deadline = self.next_deadline();
            tokio::select! {
                input = self.inbox.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return Outcome::Internal("the executor's inbox closed".into()),
                },
                () = crate::util::sleep_until(deadline) => self.on_deadline(),
            }
        }
    }

    /// The nearest deadline among the link, the kill, max completion and the
    /// acknowledgement wait.
    fn next_deadline(&self) -> Option<Instant> {
        let link = match self.link {
            Link::Registering { deadline } | Link::Reconnecting { deadline } => Some(deadline),
            Link::Subscribed | Link::Gone => None,
        };
        let task = match &self.task {
            Task::Running { max_completion, .. } => *max_completion,
            Task::Killing { deadline, phase: KillPhase::Hooks { until }, .. } => Some((*until).min(*deadline)),
            Task::Killing { deadline, phase: KillPhase::Terminated, .. } => Some(*deadline),
            _ => None,
        };
        [link, task, self.ack_deadline].into_iter().flatten().min()
    }

    fn on_deadline(&mut self) {
        let now = Instant::now();
        match self.link {
            Link::Registering { deadline } if deadline <= now => {
                error!(
                    timeout = ?self.cfg.settings.registration_timeout,
                    "could not subscribe to the agent in time (HOOK_EXECUTOR_REGISTRATION_TIMEOUT); giving up"
                );
                self.agent_lost();
            }
            Link::Reconnecting { deadline } if deadline <= now => {
                error!(timeout = ?self.cfg.recovery_timeout, "agent not back within MESOS_RECOVERY_TIMEOUT; killing the task and exiting");
                self.agent_lost();
            }
            _ => {}
        }
        match &self.task {
            Task::Running { max_completion: Some(at), info, .. } if *at <= now => {
                warn!(task_id = %info.task_id.value, "max completion time reached; killing the task");
                self.start_kill(KillCause::MaxCompletionTime, Duration::ZERO, None);
            }
            Task::Killing { deadline, phase, .. } if *deadline <= now && *phase != KillPhase::Escalated => self.escalate(),
            Task::Killing { phase: KillPhase::Hooks { until }, .. } if *until <= now => {
                warn!("before-terminate hooks still running at the end of their budget; signalling the task anyway");
                self.send_sigterm();
            }
            _ => {}
        }
    }

    /// Starts the once-only before-terminate chain when the executor is about
    /// to end without a task to kill (no task, or it never started).
    fn progress(&mut self) {
        let idle = matches!(self.task, Task::Idle | Task::Terminal { .. });
        let ending = self.ending.is_some() || matches!(self.task, Task::Terminal { .. });
        if idle && ending && self.before_terminate == Stage::Pending {
            let budget = match self.ending {
                Some(Ending::Shutdown { deadline }) => Some(hooks::terminate_budget(deadline.saturating_duration_since(Instant::now()))),
                _ => None,
            };
            self.run_before_terminate(None, budget);
        }
    }

    /// Whether the run is over, and how.
    fn finished(&self) -> Option<Outcome> {
        let now = Instant::now();
        let task_done = matches!(self.task, Task::Idle | Task::Terminal { .. });
        if !task_done || self.before_terminate == Stage::Running {
            return None;
        }
        match self.ending {
            Some(Ending::AgentLost) => return Some(Outcome::AgentLost),
            Some(Ending::Shutdown { .. } | Ending::Signal) if matches!(self.task, Task::Idle) => return Some(Outcome::Completed),
            _ => {}
        }
        if !matches!(self.task, Task::Terminal { .. }) {
            return None;
        }
        if self.log.pending().is_empty() {
            return Some(Outcome::Completed);
        }
        let waited_out = self.ack_deadline.is_some_and(|d| d <= now);
        if !waited_out {
            return None;
        }
        let unaccepted = self.log.unaccepted();
        match self.ending {
            // The agent destroys the container at the end of the shutdown
            // grace anyway; leave once our updates are at least accepted.
            Some(Ending::Shutdown { .. }) if unaccepted == 0 => {
                warn!(pending = self.log.pending().len(), "shutdown budget over; exiting with updates accepted but not acknowledged");
                Some(Outcome::Completed)
            }
            _ => {
                error!(
                    pending = self.log.pending().len(),
                    unaccepted, "no acknowledgement for the terminal update in time (HOOK_EXECUTOR_ACK_TIMEOUT); exiting"
                );
                Some(Outcome::Unacknowledged)
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::SubscribeRequest(reply) => {
                if self.link == Link::Gone {
                    let _ = reply.send(None);
                    return;
                }
                let call = self.log.subscribe_call(&self.cfg.framework_id, &self.cfg.executor_id);
                let sub = call.subscribe.as_ref();
                self.in_subscribe =
                    sub.map(|s| s.unacknowledged_updates.iter().filter_map(|u| u.status.uuid.clone()).collect()).unwrap_or_default();
                debug!(
                    unacknowledged_tasks = sub.map_or(0, |s| s.unacknowledged_tasks.len()),
                    unacknowledged_updates = self.in_subscribe.len(),
                    "sending SUBSCRIBE"
                );
                let _ = reply.send(Some(call));
            }
            Input::StreamOpened => debug!("SUBSCRIBE accepted; event stream open"),
            Input::SubscribeFailed(error) => match self.link {
                Link::Registering { .. } | Link::Reconnecting { .. } => warn!(cause = %error, "SUBSCRIBE failed; will retry"),
                Link::Subscribed | Link::Gone => debug!(cause = %error, "SUBSCRIBE failed"),
            },
            Input::Agent(event) => self.on_event(*event),
            Input::Disconnected(reason) => self.on_disconnected(&reason),
            Input::TaskExited(outcome) => self.on_task_exit(outcome),
            Input::UpdateAccepted(uuid) => self.log.mark_accepted(&uuid),
            Input::UpdateRefused { uuid, error } => {
                error!(uuid = %uuid::Uuid::from_slice(&uuid).map(|u| u.to_string()).unwrap_or_default(), cause = %error,
                    "agent refused a status update; it stays unacknowledged and is resent on the next SUBSCRIBE");
            }
            Input::Signal(name) => self.on_signal(name),
            Input::HookDone { event, result } => self.on_hook_done(event, result),
            Input::HealthProbe(observation) => self.on_health_probe(&observation),
            Input::CheckProbe(observation) => self.on_check_probe(&observation),
        }
    }

    fn on_event(&mut self, event: Event) {
        let kind = event.r#type.map_or(Ok(event::Type::Unknown), event::Type::try_from);
        match kind {
            Ok(event::Type::Subscribed) => match event.subscribed {
                Some(s) => self.on_subscribed(s),
                None => error!("SUBSCRIBED event without its payload; ignored"),
            },
            Ok(event::Type::Launch) => match event.launch {
                Some(l) => self.on_launch(l.task),
                None => error!("LAUNCH event without its payload; ignored"),
            },
            Ok(event::Type::LaunchGroup) => {
                let tasks = event.launch_group.map(|g| g.task_group.tasks).unwrap_or_default();
                for task in tasks {
                    self.log.add_task(task.clone());
                    self.fail_task(
                        &task.task_id,
                        "mesos-hook-executor runs single tasks; task groups (LAUNCH_GROUP) are not supported".into(),
                        Some(Reason::TaskGroupInvalid),
                    );
                }
            }
            Ok(event::Type::Kill) => match event.kill {
                Some(k) => self.on_kill(&k.task_id, k.kill_policy.as_ref()),
                None => error!("KILL event without its payload; ignored"),
            },
            Ok(event::Type::Acknowledged) => match event.acknowledged {
                Some(a) => match self.log.acknowledge(&a.task_id, &a.uuid) {
                    Acked::Update(status) => {
                        debug!(task_id = %a.task_id.value, state = status.state().as_str_name(), uuid = %updates::uuid_text(&status), "update acknowledged");
                    }
                    Acked::Unknown => debug!(task_id = %a.task_id.value, "acknowledgement for an unknown uuid; ignored"),
                },
                None => error!("ACKNOWLEDGED event without its payload; ignored"),
            },
            Ok(event::Type::Message) => {
                let len = event.message.map_or(0, |m| m.data.len());
                info!(bytes = len, "framework message received (no handler; ignored)");
            }
            Ok(event::Type::Error) => {
                error!(detail = %event.error.map(|e| e.message).unwrap_or_default(), "agent sent ERROR");
            }
            Ok(event::Type::Shutdown) => self.on_shutdown(),
            Ok(event::Type::Heartbeat) => debug!("agent heartbeat"),
            Ok(event::Type::Unknown) | Err(_) => warn!(r#type = ?event.r#type, "ignoring an event of unknown type"),
        }
    }

    fn on_subscribed(&mut self, s: event::Subscribed) {
        info!(
            framework_id = %s.framework_info.id.as_ref().map(|i| i.value.as_str()).unwrap_or_default(),
            executor_id = %s.executor_info.executor_id.value,
            agent = %s.agent_info.hostname,
            "subscribed to the agent"
        );
        self.framework = Some(s.framework_info);
        self.executor_info = Some(s.executor_info);
        self.agent_info = Some(s.agent_info);
        self.link = Link::Subscribed;
        self.stop_sender();
        let (queue, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(subscription::send_updates(
            self.client.calls(),
            rx,
            self.inbox_tx.clone(),
            self.cfg.framework_id.clone(),
            self.cfg.executor_id.clone(),
        ));
        // Updates recorded after the SUBSCRIBE body was built still need sending.
        for status in self.log.pending() {
            if !self.in_subscribe.iter().any(|u| Some(u.as_slice()) == status.uuid.as_deref()) {
                let _ = queue.send(status.clone());
            }
        }
        self.sender = Some(Sender { queue, handle });
    }

    fn stop_sender(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.handle.abort();
        }
    }

    fn on_disconnected(&mut self, reason: &str) {
        self.stop_sender();
        match self.link {
            Link::Subscribed if self.cfg.checkpoint => {
                let deadline = Instant::now() + self.cfg.recovery_timeout;
                warn!(cause = %reason, recovery_timeout = ?self.cfg.recovery_timeout, "disconnected from the agent; reconnecting");
                self.link = Link::Reconnecting { deadline };
            }
            Link::Subscribed => {
                error!(cause = %reason, "disconnected from the agent and MESOS_CHECKPOINT is off; killing the task and exiting");
                self.agent_lost();
            }
            Link::Registering { .. } | Link::Reconnecting { .. } => {
                warn!(cause = %reason, "event stream ended before SUBSCRIBED; retrying")
            }
            Link::Gone => debug!(cause = %reason, "event stream ended"),
        }
    }

    fn agent_lost(&mut self) {
        self.link = Link::Gone;
        self.stop_sender();
        if self.ending.is_none() || matches!(self.ending, Some(Ending::Signal)) {
            self.ending = Some(Ending::AgentLost);
        }
        let grace = self.task_grace(None);
        self.start_kill(KillCause::AgentLost, grace, None);
    }

    fn on_signal(&mut self, name: &'static str) {
        match self.task {
            Task::Killing { .. } if self.ending == Some(Ending::Signal) => {
                warn!(signal = name, "second signal; escalating to SIGKILL now");
                self.start_kill(KillCause::ExecutorSignal, Duration::ZERO, None);
            }
            _ => {
                info!(signal = name, "executor signalled; killing the task gracefully");
                if self.ending.is_none() {
                    self.ending = Some(Ending::Signal);
                }
                let grace = self.task_grace(None);
                self.start_kill(KillCause::ExecutorSignal, grace, None);
            }
        }
    }

    fn on_shutdown(&mut self) {
        let deadline = Instant::now() + self.cfg.shutdown_grace_period;
        info!(grace = ?self.cfg.shutdown_grace_period, "SHUTDOWN received");
        if !matches!(self.ending, Some(Ending::Shutdown { .. })) {
            self.ending = Some(Ending::Shutdown { deadline });
        }
        let budget = deadline.saturating_duration_since(Instant::now());
        let ack_by = deadline - (budget / 10).min(Duration::from_millis(500));
        self.ack_deadline = Some(self.ack_deadline.map_or(ack_by, |d| d.min(ack_by)));
        let grace = termination::shutdown_grace(self.task_grace(None), self.cfg.shutdown_grace_period);
        self.start_kill(KillCause::Shutdown, grace, None);
    }

    /// The task's kill grace without a per-KILL override.
    fn task_grace(&self, kill_override: Option<&v1::KillPolicy>) -> Duration {
        let task_policy = match &self.task {
            Task::Launching { info, .. } | Task::Running { info, .. } | Task::Killing { info, .. } | Task::Draining { info, .. } => {
                info.kill_policy.as_ref()
            }
            Task::Idle | Task::Terminal { .. } => None,
        };
        termination::kill_grace(kill_override, task_policy, self.cfg.settings.kill_grace_period)
    }

    fn on_launch(&mut self, task: v1::TaskInfo) {
        let task_id = task.task_id.clone();
        info!(task_id = %task_id.value, name = %task.name, "LAUNCH received");
        if !matches!(self.task, Task::Idle) {
            self.log.add_task(task);
            self.fail_task(
                &task_id,
                "Attempted to run multiple tasks using a single-task executor (mesos-hook-executor runs one task)".into(),
                None,
            );
            return;
        }
        self.log.add_task(task.clone());
        self.checks = health::Checks::for_task(&task);
        if self.ending.is_some() {
            self.fail_task(&task_id, "the executor is shutting down".into(), None);
            return;
        }
        self.send_update(updates::new_status(&task_id, TaskState::TaskStarting, &self.cfg.executor_id));
        let executor_info = task.executor.as_ref().or(self.executor_info.as_ref());
        let ctx =
            LaunchContext { executor_env: &self.cfg.environment.0, denylist: &self.cfg.settings.env_denylist, sandbox: &self.cfg.sandbox };
        let spec = match launch::launch_spec(&task, executor_info, ctx) {
            Ok(spec) => spec,
            Err(e) => {
                self.fail_task(&task_id, format!("Cannot launch task: {e}"), Some(Reason::TaskInvalid));
                return;
            }
        };
        let info = Arc::new(task);
        let hooks = self.spawn_chain(HookEvent::BeforeStart, Some(info.clone()), None);
        self.task = Task::Launching { info, spec: Box::new(spec), hooks };
    }

    /// Starts the task's process once the before-start chain allowed it.
    fn start_process(&mut self, info: Arc<v1::TaskInfo>, mut spec: LaunchSpec, added_env: Vec<(String, String)>) {
        let task_id = info.task_id.clone();
        spec.env.extend(added_env);
        let user = match process::resolve_user(spec.user.as_deref()) {
            Ok(u) => u,
            Err(e) => {
                self.fail_task(&task_id, format!("Cannot launch task: {e}"), Some(Reason::TaskInvalid));
                return;
            }
        };
        let mut command = process::task_command(&spec, user);
        let (pid, exit) = match self.reaper.spawn_task(&mut command) {
            Ok(spawned) => spawned,
            Err(cause) => {
                let e = process::SpawnError::Exec { command: spec.program.display(), cwd: spec.cwd.display().to_string(), cause };
                self.fail_task(&task_id, format!("Cannot launch task: {e}"), None);
                return;
            }
        };
        let pid = i32::try_from(pid).unwrap_or(i32::MAX);
        info!(task_id = %task_id.value, pid, source = ?spec.source, command = %spec.program.display(), "task started");
        let inbox = self.inbox_tx.clone();
        tokio::spawn(async move {
            let outcome = exit.await.unwrap_or(ExitOutcome::Exited(-1));
            let _ = inbox.send(Input::TaskExited(outcome)).await;
        });
        self.send_update(updates::new_status(&task_id, TaskState::TaskRunning, &self.cfg.executor_id));
        let ctx = health::TaskContext { env: spec.env, cwd: spec.cwd, reaper: self.reaper.clone() };
        self.checks.start(&info, ctx, &self.inbox_tx, Input::HealthProbe, Input::CheckProbe);
        let max_completion = info
            .max_completion_time
            .as_ref()
            .and_then(|d| u64::try_from(d.nanoseconds).ok())
            .filter(|n| *n > 0)
            .map(|n| Instant::now() + Duration::from_nanos(n));
        self.spawn_chain(HookEvent::AfterStart, Some(info.clone()), None);
        self.task = Task::Running { info, pid, max_completion };
    }

    /// Records a terminal TASK_FAILED for a task that never ran.
    fn fail_task(&mut self, task_id: &v1::TaskId, message: String, reason: Option<Reason>) {
        error!(task_id = %task_id.value, detail = %message, "task failed before starting");
        self.end_without_process(task_id, TaskState::TaskFailed, message, reason);
    }

    /// Sends the terminal update of a task that has no process, and ends the
    /// executor's task with it unless another task is already the executor's
    /// (a refused second LAUNCH).
    fn end_without_process(&mut self, task_id: &v1::TaskId, state: TaskState, message: String, reason: Option<Reason>) {
        let mut status = updates::new_status(task_id, state, &self.cfg.executor_id);
        status.message = Some(message);
        status.reason = reason.map(|r| r as i32);
        self.send_update(status);
        if matches!(self.task, Task::Idle) {
            self.task = Task::Terminal { task_id: task_id.clone(), state };
            self.arm_ack_deadline();
        }
    }

    fn on_kill(&mut self, task_id: &v1::TaskId, kill_policy: Option<&v1::KillPolicy>) {
        let ours = match &self.task {
            Task::Launching { info, .. } | Task::Running { info, .. } | Task::Killing { info, .. } | Task::Draining { info, .. } => {
                info.task_id == *task_id
            }
            Task::Terminal { task_id: t, state } => {
                if t == task_id {
                    debug!(task_id = %task_id.value, state = state.as_str_name(), "KILL for a task that already ended; ignored");
                    return;
                }
                false
            }
            Task::Idle => false,
        };
        if ours {
            let grace = self.task_grace(kill_policy);
            info!(task_id = %task_id.value, ?grace, "KILL received");
            self.start_kill(KillCause::Kill, grace, None);
            return;
        }
        if self.log.knows_task(task_id) {
            debug!(task_id = %task_id.value, "KILL for a task that already ended; ignored");
            return;
        }
        if self.killed_unknown.contains(&task_id.value) {
            return;
        }
        // The agent only forwards KILLs for tasks it gave us; one we never saw
        // means its LAUNCH was lost. Answer so the framework's kill completes.
        warn!(task_id = %task_id.value, "KILL for a task this executor never launched; reporting it killed");
        self.killed_unknown.push(task_id.value.clone());
        let mut status = updates::new_status(task_id, TaskState::TaskKilled, &self.cfg.executor_id);
        status.message = Some("Task was not running on this executor".into());
        self.send_update(status);
    }

    /// Starts, or shortens, the graceful kill of the task: TASK_KILLING when
    /// the framework wants it, then the before-terminate hooks (inside the
    /// grace budget), then SIGTERM to the tree, and SIGKILL at the deadline.
    fn start_kill(&mut self, cause: KillCause, grace: Duration, detail: Option<String>) {
        let now = Instant::now();
        match std::mem::replace(&mut self.task, Task::Idle) {
            Task::Launching { info, hooks, .. } => {
                // Nothing runs yet: stop the before-start chain and report.
                hooks.abort();
                info!(task_id = %info.task_id.value, ?cause, "killed before its process started");
                let message = detail.unwrap_or_else(|| "Task killed before it started".into());
                self.end_without_process(&info.task_id, terminal_state_before_start(cause), message, None);
            }
            Task::Running { info, pid, .. } => {
                // As Mesos pauses its checkers: no check runs or reports while killing.
                self.checks.stop();
                if termination::send_killing(self.framework.as_ref(), cause) {
                    self.send_update(updates::new_status(&info.task_id, TaskState::TaskKilling, &self.cfg.executor_id));
                }
                let deadline = now + grace;
                let hooks_pending = self.before_terminate == Stage::Pending;
                let budget = hooks::terminate_budget(grace);
                let phase =
                    if hooks_pending && !budget.is_zero() { KillPhase::Hooks { until: now + budget } } else { KillPhase::Terminated };
                info!(task_id = %info.task_id.value, ?cause, ?grace, "killing the task");
                self.task = Task::Killing { info: info.clone(), pid, cause, detail, started: now, deadline, phase, exited: None };
                if hooks_pending {
                    // With no budget (a zero grace) the hooks still run, but
                    // concurrently with the kill.
                    self.run_before_terminate(Some(info), Some(if budget.is_zero() { self.cfg.settings.hooks.timeout } else { budget }));
                }
                if phase == KillPhase::Terminated {
                    self.send_sigterm();
                }
            }
            Task::Killing { info, pid, cause: c, detail: d, started, deadline, phase, exited } => {
                let mut deadline = deadline;
                if let Some(new) = termination::shortened_deadline(started, deadline, grace) {
                    info!(task_id = %info.task_id.value, ?grace, "kill grace shortened");
                    deadline = new.max(now);
                }
                self.task = Task::Killing { info, pid, cause: c, detail: d, started, deadline, phase, exited };
            }
            other => self.task = other,
        }
    }

    /// SIGTERM to the task's tree (after the before-terminate hooks).
    fn send_sigterm(&mut self) {
        let Task::Killing { info, pid, phase, exited, .. } = &mut self.task else { return };
        if *phase != KillPhase::Escalated {
            *phase = KillPhase::Terminated;
        }
        if exited.is_some() {
            return;
        }
        let signalled = process::signal_task_tree(
            *pid,
            &self.reaper.auxiliary_pids(),
            nix::sys::signal::Signal::SIGTERM,
            &self.cfg.settings.sigterm_exclude_processes,
        );
        info!(task_id = %info.task_id.value, processes = ?signalled, "sent SIGTERM to the task's process tree");
    }

    /// SIGKILL to the task's tree at the end of the grace period.
    fn escalate(&mut self) {
        let Task::Killing { info, pid, phase, .. } = &mut self.task else { return };
        *phase = KillPhase::Escalated;
        let killed = process::signal_task_tree(*pid, &self.reaper.auxiliary_pids(), nix::sys::signal::Signal::SIGKILL, &[]);
        warn!(task_id = %info.task_id.value, processes = ?killed, "grace period over; sent SIGKILL to the task's process tree");
    }

    fn on_task_exit(&mut self, outcome: ExitOutcome) {
        self.checks.stop();
        match std::mem::replace(&mut self.task, Task::Idle) {
            Task::Running { info, pid, .. } => {
                if self.before_terminate == Stage::Pending {
                    info!(task_id = %info.task_id.value, "task exited; running before-terminate hooks before reporting");
                    self.run_before_terminate(Some(info.clone()), None);
                    self.task = Task::Draining { info, pid, outcome };
                } else {
                    self.finish_terminal(&info, pid, outcome, None, None);
                }
            }
            Task::Killing { info, pid, cause, detail, started, deadline, phase, .. } => {
                if let KillPhase::Hooks { .. } = phase {
                    // The task went away while the hooks ran: report once they are done.
                    self.task = Task::Killing { info, pid, cause, detail, started, deadline, phase, exited: Some(outcome) };
                } else {
                    self.finish_terminal(&info, pid, outcome, Some(cause), detail);
                }
            }
            other => self.task = other,
        }
    }

    /// Kills whatever the root left behind and sends the terminal update.
    fn finish_terminal(&mut self, info: &v1::TaskInfo, pid: i32, outcome: ExitOutcome, cause: Option<KillCause>, detail: Option<String>) {
        let leftovers = process::signal_task_tree(pid, &self.reaper.auxiliary_pids(), nix::sys::signal::Signal::SIGKILL, &[]);
        if !leftovers.is_empty() {
            info!(task_id = %info.task_id.value, processes = ?leftovers, "killed processes the task left behind");
        }
        let terminal = termination::terminal(outcome, cause);
        let message = match detail {
            Some(d) => format!("{d} ({})", terminal.message),
            None => terminal.message,
        };
        info!(task_id = %info.task_id.value, state = terminal.state.as_str_name(), detail = %message, "task ended");
        let mut status = updates::new_status(&info.task_id, terminal.state, &self.cfg.executor_id);
        status.message = Some(message);
        status.reason = terminal.reason.map(|r| r as i32);
        if terminal.unhealthy {
            status.healthy = Some(false);
        }
        updates::add_labels(&mut status, outcome.labels());
        self.send_update(status);
        self.task = Task::Terminal { task_id: info.task_id.clone(), state: terminal.state };
        self.arm_ack_deadline();
        if self.ending == Some(Ending::AgentLost) {
            warn!("the agent is gone; the terminal update cannot be delivered");
        }
    }

    /// The context handed to hooks for `event`.
    fn hook_context(&self, event: HookEvent, task: Option<Arc<v1::TaskInfo>>) -> HookContext {
        HookContext {
            event,
            task,
            framework_id: self.cfg.framework_id.clone(),
            executor_id: self.cfg.executor_id.clone(),
            agent_id: self.agent_info.as_ref().and_then(|a| a.id.as_ref()).map(|i| i.value.clone()).or_else(|| self.cfg.agent_id.clone()),
            agent_hostname: self.agent_info.as_ref().map(|a| a.hostname.clone()),
            sandbox: self.cfg.sandbox.clone(),
            base_env: self.base_env.clone(),
            added_env: Vec::new(),
            reaper: self.reaper.clone(),
        }
    }

    /// Runs a chain off the loop; its result comes back as `Input::HookDone`.
    /// An empty chain completes at once (still through the inbox, so every
    /// path goes through `on_hook_done`).
    fn spawn_chain(&mut self, event: HookEvent, task: Option<Arc<v1::TaskInfo>>, budget: Option<Duration>) -> JoinHandle<()> {
        let ctx = self.hook_context(event, task);
        let chain = self.hooks.clone();
        let inbox = self.inbox_tx.clone();
        tokio::spawn(async move {
            let result = if chain.is_empty() { ChainResult::Ok { env: Vec::new() } } else { chain.run(ctx, budget).await };
            let _ = inbox.send(Input::HookDone { event, result }).await;
        })
    }

    fn run_before_terminate(&mut self, task: Option<Arc<v1::TaskInfo>>, budget: Option<Duration>) {
        self.before_terminate = Stage::Running;
        self.spawn_chain(HookEvent::BeforeTerminate, task, budget);
    }

    fn on_hook_done(&mut self, event: HookEvent, result: ChainResult) {
        match event {
            HookEvent::BeforeStart => {
                let Task::Launching { .. } = &self.task else { return };
                let Task::Launching { info, spec, .. } = std::mem::replace(&mut self.task, Task::Idle) else { return };
                match result {
                    ChainResult::Ok { env } => self.start_process(info, *spec, env),
                    ChainResult::Failed { hook, reason } => {
                        let why = matches!(reason, hooks::HookError::Policy(_)).then_some(Reason::TaskUnauthorized);
                        self.fail_task(&info.task_id, format!("before-start hook `{hook}` refused the launch: {reason}"), why);
                    }
                }
            }
            HookEvent::AfterStart | HookEvent::AfterHealthy => {
                let Task::Running { info, .. } = &self.task else { return };
                match result {
                    ChainResult::Ok { .. } if event == HookEvent::AfterStart && !self.checks.has_health_checker() => {
                        // Without a health check, "healthy" follows "started".
                        let info = info.clone();
                        self.spawn_chain(HookEvent::AfterHealthy, Some(info), None);
                    }
                    ChainResult::Ok { .. } => {}
                    ChainResult::Failed { hook, reason } => {
                        let grace = self.task_grace(None);
                        self.start_kill(KillCause::HookFailure, grace, Some(format!("{event} hook `{hook}` failed: {reason}")));
                    }
                }
            }
            HookEvent::BeforeTerminate => {
                self.before_terminate = Stage::Done;
                if let ChainResult::Failed { hook, reason } = &result {
                    warn!(hook, %reason, "before-terminate hook failed (the kill went on)");
                }
                match std::mem::replace(&mut self.task, Task::Idle) {
                    Task::Killing { info, pid, cause, detail, exited: Some(outcome), .. } => {
                        self.finish_terminal(&info, pid, outcome, Some(cause), detail);
                    }
                    Task::Draining { info, pid, outcome } => self.finish_terminal(&info, pid, outcome, None, None),
                    other => {
                        self.task = other;
                        if matches!(self.task, Task::Killing { phase: KillPhase::Hooks { .. }, .. }) {
                            self.send_sigterm();
                        }
                    }
                }
            }
        }
    }

    /// The first healthy health-check result: the after-healthy chain runs.
    fn on_first_healthy(&mut self) {
        if let Task::Running { info, .. } = &self.task {
            info!(task_id = %info.task_id.value, "task is healthy for the first time (after-healthy)");
            let info = info.clone();
            self.spawn_chain(HookEvent::AfterHealthy, Some(info), None);
        }
    }

    fn arm_ack_deadline(&mut self) {
        let by = Instant::now() + self.cfg.settings.ack_timeout;
        self.ack_deadline = Some(self.ack_deadline.map_or(by, |d| d.min(by)));
    }

    /// Records an update and hands it to the current sender, if subscribed;
    /// otherwise it travels in the next SUBSCRIBE.
    fn send_update(&mut self, mut status: v1::TaskStatus) {
        self.checks.on_status(&mut status);
        debug!(task_id = %status.task_id.value, state = status.state().as_str_name(), uuid = %updates::uuid_text(&status), "status update");
        self.log.record(status.clone());
        if let Some(sender) = &self.sender {
            let _ = sender.queue.send(status);
        }
    }

    /// A health check result: report it as Mesos does and, after the allowed
    /// consecutive failures, kill the task gracefully (its terminal update
    /// then says `healthy = false`). Results after the kill started are dropped.
    fn on_health_probe(&mut self, observation: &health::Observation) {
        let Task::Running { info, .. } = &self.task else {
            debug!(?observation, "health check result while the task is not running; dropped");
            return;
        };
        let task_id = info.task_id.value.clone();
        let Some(update) = self.checks.health_update(observation, Instant::now()) else { return };
        info!(task_id = %task_id, healthy = ?update.status.healthy, "task health changed; sending a health update");
        self.send_update(update.status);
        if update.first_healthy {
            self.on_first_healthy();
        }
        if update.kill {
            let grace = self.task_grace(None);
            warn!(task_id = %task_id, ?grace, "health check failed too many times in a row; killing the task");
            self.start_kill(KillCause::HealthCheck, grace, None);
        }
    }

    /// A generic check result: an update when its `check_status` changed.
    fn on_check_probe(&mut self, observation: &health::Observation) {
        if !matches!(self.task, Task::Running { .. }) {
            debug!(?observation, "check result while the task is not running; dropped");
            return;
        }
        if let Some(status) = self.checks.check_update(observation) {
            self.send_update(status);
        }
    }
}

/// The terminal state of a task killed before its process started.
fn terminal_state_before_start(cause: KillCause) -> TaskState {
    match cause {
        KillCause::HookFailure | KillCause::MaxCompletionTime => TaskState::TaskFailed,
        _ => TaskState::TaskKilled,
    }
}

impl Executor {
    /// Publishes the task's part of [`StatusSnapshot`] if it changed (it runs
    /// after every input, so nothing is allocated unless something changed).
    fn publish_status(&self) {
        let (task_id, state, pid) = match &self.task {
            Task::Idle => (None, None, None),
            Task::Launching { info, .. } => (Some(&info.task_id.value), Some(TaskState::TaskStarting), None),
            Task::Running { info, pid, .. } => (Some(&info.task_id.value), Some(TaskState::TaskRunning), Some(*pid)),
            Task::Killing { info, pid, exited, .. } => {
                (Some(&info.task_id.value), Some(TaskState::TaskKilling), exited.is_none().then_some(*pid))
            }
            // The root has exited; the terminal update follows the hooks.
            Task::Draining { info, .. } => (Some(&info.task_id.value), Some(TaskState::TaskRunning), None),
            Task::Terminal { task_id, state } => (Some(&task_id.value), Some(*state), None),
        };
        let state = state.map(|s| s.as_str_name());
        let healthy = self.checks.healthy();
        self.status.send_if_modified(|s| {
            let changed = s.task_id.as_ref() != task_id || s.state.as_deref() != state || s.pid != pid || s.healthy != healthy;
            if changed {
                (s.task_id, s.state, s.pid, s.healthy) = (task_id.cloned(), state.map(str::to_owned), pid, healthy);
            }
            changed
        });
    }
}
