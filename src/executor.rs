//! The owner of all executor state, and its event loop.
//!
//! [`Executor`] reads one inbox of [`Input`]s and otherwise wakes only for its
//! nearest deadline. It never awaits I/O: the subscription, the update sender,
//! the task's exit and OS signals are separate tasks that report here. Each
//! handler is a short sequence of decisions from [`crate::policy`] followed by
//! effects (send an update, signal the task tree, arm a deadline).

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, error, info, warn};

use crate::{
    agent::{AgentClient, AgentError},
    config::Config,
    launch::{self, LaunchContext},
    policy::{self, ExitOutcome, KillCause},
    process::{self, Reaper, Role},
    proto::{
        executor::{event, Call, Event},
        v1::{self, task_status::Reason, TaskState},
    },
    subscription,
    updates::{self, Acked, UpdateLog},
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
    /// The root process runs.
    Running { info: Box<v1::TaskInfo>, pid: i32, max_completion: Option<Instant> },
    /// Being killed: SIGTERM sent, SIGKILL at `deadline`.
    Killing { info: Box<v1::TaskInfo>, pid: i32, cause: KillCause, started: Instant, deadline: Instant, escalated: bool },
    /// The terminal update was recorded.
    Terminal { task_id: v1::TaskId, state: TaskState },
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
    /// Uuids answered 202, so an exit never leaves an un-202'd terminal update.
    accepted: Vec<Vec<u8>>,
    task: Task,
    ending: Option<Ending>,
    /// When to stop waiting for the last acknowledgements.
    ack_deadline: Option<Instant>,
    /// A task that never launched but was killed (lost LAUNCH) is remembered
    /// so a second KILL does not produce a second terminal update.
    killed_unknown: Vec<String>,
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
    let (status, status_rx) = watch::channel(StatusSnapshot { framework_id: cfg.framework_id.clone(), executor_id: cfg.executor_id.clone(), ..StatusSnapshot::default() });
    let remote = crate::remote::start(&cfg, reaper.clone(), status_rx);
    let subscription = tokio::spawn(subscription::subscribe_loop(client.clone(), inbox_tx.clone(), backoff_max, cfg.settings.max_record_size));
    info!(agent = %client.url(), checkpoint = cfg.checkpoint, release = crate::RELEASE, "starting; subscribing to the agent");
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
        accepted: Vec::new(),
        task: Task::Idle,
        ending: None,
        ack_deadline: None,
        killed_unknown: Vec::new(),
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
                () = sleep_until(deadline) => self.on_deadline(),
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
            Task::Killing { deadline, escalated: false, .. } => Some(*deadline),
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
        match &mut self.task {
            Task::Running { max_completion: Some(at), info, .. } if *at <= now => {
                warn!(task_id = %info.task_id.value, "max completion time reached; killing the task");
                self.start_kill(KillCause::MaxCompletionTime, Duration::ZERO);
            }
            Task::Killing { deadline, escalated, pid, info, .. } if !*escalated && *deadline <= now => {
                *escalated = true;
                let killed = process::signal_task_tree(*pid, &self.reaper.auxiliary_pids(), nix::sys::signal::Signal::SIGKILL, &[]);
                warn!(task_id = %info.task_id.value, processes = ?killed, "grace period over; sent SIGKILL to the task's process tree");
            }
            _ => {}
        }
    }

    /// Whether the run is over, and how.
    fn finished(&self) -> Option<Outcome> {
        let now = Instant::now();
        let task_done = matches!(self.task, Task::Idle | Task::Terminal { .. });
        if !task_done {
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
        let unaccepted = self.log.pending().iter().filter(|s| !self.accepted.iter().any(|u| Some(u.as_slice()) == s.uuid.as_deref())).count();
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
                    unaccepted,
                    "no acknowledgement for the terminal update in time (HOOK_EXECUTOR_ACK_TIMEOUT); exiting"
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
                self.in_subscribe = sub.map(|s| s.unacknowledged_updates.iter().filter_map(|u| u.status.uuid.clone()).collect()).unwrap_or_default();
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
            Input::UpdateAccepted(uuid) => self.accepted.push(uuid),
            Input::UpdateRefused { uuid, error } => {
                error!(uuid = %uuid::Uuid::from_slice(&uuid).map(|u| u.to_string()).unwrap_or_default(), cause = %error,
                    "agent refused a status update; it stays unacknowledged and is resent on the next SUBSCRIBE");
            }
            Input::Signal(name) => self.on_signal(name),
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
                    self.fail_task(&task.task_id, "mesos-hook-executor runs single tasks; task groups (LAUNCH_GROUP) are not supported".into(), Some(Reason::TaskGroupInvalid));
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
            Link::Registering { .. } | Link::Reconnecting { .. } => warn!(cause = %reason, "event stream ended before SUBSCRIBED; retrying"),
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
        self.start_kill(KillCause::AgentLost, grace);
    }

    fn on_signal(&mut self, name: &'static str) {
        match self.task {
            Task::Killing { .. } if self.ending == Some(Ending::Signal) => {
                warn!(signal = name, "second signal; escalating to SIGKILL now");
                self.start_kill(KillCause::ExecutorSignal, Duration::ZERO);
            }
            _ => {
                info!(signal = name, "executor signalled; killing the task gracefully");
                if self.ending.is_none() {
                    self.ending = Some(Ending::Signal);
                }
                let grace = self.task_grace(None);
                self.start_kill(KillCause::ExecutorSignal, grace);
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
        let grace = policy::shutdown_grace(self.task_grace(None), self.cfg.shutdown_grace_period);
        self.start_kill(KillCause::Shutdown, grace);
    }

    /// The task's kill grace without a per-KILL override.
    fn task_grace(&self, kill_override: Option<&v1::KillPolicy>) -> Duration {
        let task_policy = match &self.task {
            Task::Running { info, .. } | Task::Killing { info, .. } => info.kill_policy.as_ref(),
            _ => None,
        };
        policy::kill_grace(kill_override, task_policy, self.cfg.settings.kill_grace_period)
    }

    fn on_launch(&mut self, task: v1::TaskInfo) {
        let task_id = task.task_id.clone();
        info!(task_id = %task_id.value, name = %task.name, "LAUNCH received");
        if !matches!(self.task, Task::Idle) {
            self.log.add_task(task);
            self.fail_task(&task_id, "Attempted to run multiple tasks using a single-task executor (mesos-hook-executor runs one task)".into(), None);
            return;
        }
        self.log.add_task(task.clone());
        if self.ending.is_some() {
            self.fail_task(&task_id, "the executor is shutting down".into(), None);
            return;
        }
        self.send_update(updates::new_status(&task_id, TaskState::TaskStarting, &self.cfg.executor_id));
        let executor_info = task.executor.as_ref().or(self.executor_info.as_ref());
        let ctx = LaunchContext {
            executor_env: &self.cfg.environment.0,
            denylist: &self.cfg.settings.env_denylist,
            sandbox: &self.cfg.sandbox,
        };
        let spec = match launch::launch_spec(&task, executor_info, ctx) {
            Ok(spec) => spec,
            Err(e) => {
                self.fail_task(&task_id, format!("Cannot launch task: {e}"), Some(Reason::TaskInvalid));
                return;
            }
        };
        let user = match process::resolve_user(spec.user.as_deref()) {
            Ok(u) => u,
            Err(e) => {
                self.fail_task(&task_id, format!("Cannot launch task: {e}"), Some(Reason::TaskInvalid));
                return;
            }
        };
        let mut command = process::task_command(&spec, user);
        let (pid, exit) = match self.reaper.spawn(&mut command, Role::Task) {
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
        let max_completion = task
            .max_completion_time
            .as_ref()
            .and_then(|d| u64::try_from(d.nanoseconds).ok())
            .filter(|n| *n > 0)
            .map(|n| Instant::now() + Duration::from_nanos(n));
        self.task = Task::Running { info: Box::new(task), pid, max_completion };
    }

    /// Records a terminal TASK_FAILED for a task that never ran.
    fn fail_task(&mut self, task_id: &v1::TaskId, message: String, reason: Option<Reason>) {
        error!(task_id = %task_id.value, detail = %message, "task failed before starting");
        let mut status = updates::new_status(task_id, TaskState::TaskFailed, &self.cfg.executor_id);
        status.message = Some(message);
        status.reason = reason.map(|r| r as i32);
        self.send_update(status);
        if matches!(self.task, Task::Idle) {
            self.task = Task::Terminal { task_id: task_id.clone(), state: TaskState::TaskFailed };
            self.arm_ack_deadline();
        }
    }

    fn on_kill(&mut self, task_id: &v1::TaskId, kill_policy: Option<&v1::KillPolicy>) {
        let ours = match &self.task {
            Task::Running { info, .. } | Task::Killing { info, .. } => info.task_id == *task_id,
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
            self.start_kill(KillCause::Kill, grace);
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

    /// Starts, or shortens, the graceful kill of the running task.
    fn start_kill(&mut self, cause: KillCause, grace: Duration) {
        let now = Instant::now();
        match &mut self.task {
            Task::Running { info, pid, .. } => {
                let (info, pid) = (info.clone(), *pid);
                if policy::send_killing(self.framework.as_ref(), cause) {
                    self.send_update(updates::new_status(&info.task_id, TaskState::TaskKilling, &self.cfg.executor_id));
                }
                let signalled = process::signal_task_tree(
                    pid,
                    &self.reaper.auxiliary_pids(),
                    nix::sys::signal::Signal::SIGTERM,
                    &self.cfg.settings.sigterm_exclude_processes,
                );
                info!(task_id = %info.task_id.value, ?cause, ?grace, processes = ?signalled, "sent SIGTERM to the task's process tree");
                self.task = Task::Killing { info, pid, cause, started: now, deadline: now + grace, escalated: false };
            }
            Task::Killing { started, deadline, escalated: false, info, .. } => {
                if let Some(new) = policy::shortened_deadline(*started, *deadline, grace) {
                    info!(task_id = %info.task_id.value, ?grace, "kill grace shortened");
                    *deadline = new.max(now);
                }
            }
            Task::Killing { .. } | Task::Idle | Task::Terminal { .. } => {}
        }
    }

    fn on_task_exit(&mut self, outcome: ExitOutcome) {
        let (info, pid, cause) = match std::mem::replace(&mut self.task, Task::Idle) {
            Task::Running { info, pid, .. } => (info, pid, None),
            Task::Killing { info, pid, cause, .. } => (info, pid, Some(cause)),
            other => {
                self.task = other;
                return;
            }
        };
        // Whatever the root left behind (background jobs, daemons) goes with it.
        let leftovers = process::signal_task_tree(pid, &self.reaper.auxiliary_pids(), nix::sys::signal::Signal::SIGKILL, &[]);
        if !leftovers.is_empty() {
            info!(task_id = %info.task_id.value, processes = ?leftovers, "killed processes the task left behind");
        }
        let terminal = policy::terminal(outcome, cause);
        info!(task_id = %info.task_id.value, state = terminal.state.as_str_name(), detail = %terminal.message, "task ended");
        let mut status = updates::new_status(&info.task_id, terminal.state, &self.cfg.executor_id);
        status.message = Some(terminal.message);
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

    fn arm_ack_deadline(&mut self) {
        let by = Instant::now() + self.cfg.settings.ack_timeout;
        self.ack_deadline = Some(self.ack_deadline.map_or(by, |d| d.min(by)));
    }

    /// Records an update and hands it to the current sender, if subscribed;
    /// otherwise it travels in the next SUBSCRIBE.
    fn send_update(&mut self, status: v1::TaskStatus) {
        debug!(task_id = %status.task_id.value, state = status.state().as_str_name(), uuid = %updates::uuid_text(&status), "status update");
        self.log.record(status.clone());
        if let Some(sender) = &self.sender {
            let _ = sender.queue.send(status);
        }
    }
}

impl Executor {
    /// Publishes the task's part of [`StatusSnapshot`] if it changed
    /// (`healthy` belongs to the health checks, which set it themselves).
    fn publish_status(&self) {
        let (task_id, state, pid) = match &self.task {
            Task::Idle => (None, None, None),
            Task::Running { info, pid, .. } => (Some(info.task_id.value.clone()), Some(TaskState::TaskRunning), Some(*pid)),
            Task::Killing { info, pid, .. } => (Some(info.task_id.value.clone()), Some(TaskState::TaskKilling), Some(*pid)),
            Task::Terminal { task_id, state } => (Some(task_id.value.clone()), Some(*state), None),
        };
        let state = state.map(|s| s.as_str_name().to_owned());
        self.status.send_if_modified(|s| {
            let changed = s.task_id != task_id || s.state != state || s.pid != pid;
            if changed {
                (s.task_id, s.state, s.pid) = (task_id, state, pid);
            }
            changed
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
