//! The owner of all executor state, and its event loop.
//!
//! [`State`] holds everything that can change; [`State::step`] is the only
//! thing that changes it: a pure function of the state, one [`Input`] and the
//! current instant, returning [`Effect`]s. The loop here ([`run`]) waits for
//! the next input or the state's nearest deadline, steps, and carries out the
//! effects: it sends updates through the current sender, spawns the task and
//! its checkers, runs hook chains and signals process trees on tasks of their
//! own, and reports their results back through the inbox. It never awaits
//! I/O itself.
//!
//! - [`input`]: the inbox type.
//! - [`state`]: the state, grouped by the agent link, the task and the ending.
//! - [`step`]: the decisions (unit-tested with a paused clock in `tests`).
//! - [`effect`]: what a step asks the loop to do.

mod effect;
mod input;
mod state;
mod step;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use nix::sys::signal::Signal;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{info, warn};

pub(crate) use self::input::Input;
pub(crate) use self::{effect::Effect, state::State};
pub use crate::status::StatusSnapshot;
use crate::{
    agent::{subscription, AgentClient, CallConnection},
    config::Config,
    health,
    hooks::{self, ChainResult, HookChain, HookContext, HookEvent},
    logs,
    proto::{
        self,
        v1::{self, task_status::Reason},
    },
    task::{
        launch::{self, LaunchSpec},
        process::{self, Reaper},
    },
};

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
    /// The process exit code (documented in docs/lifecycle.md).
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

/// The current subscription's update sender.
struct Sender {
    queue: mpsc::UnboundedSender<v1::TaskStatus>,
    handle: JoinHandle<()>,
}

/// Carries out effects: owns every handle to the world the state must not hold.
struct Runtime {
    cfg: Arc<Config>,
    client: AgentClient,
    reaper: Reaper,
    inbox: mpsc::Sender<Input>,
    hooks: HookChain,
    /// Environment base for hook scripts (no settings, no secrets).
    base_env: Arc<BTreeMap<String, String>>,
    sender: Option<Sender>,
    /// The call connection opened at start, beside the first SUBSCRIBE, so
    /// that the first updates (TASK_STARTING right after SUBSCRIBED) need no
    /// handshake.
    warm_calls: Option<JoinHandle<CallConnection>>,
    /// The task's running probes.
    checkers: health::Checkers,
    /// The before-start chain, so a KILL can abort it.
    before_start: Option<JoinHandle<()>>,
    /// Process-tree signalling, in order, off the loop.
    signaller: mpsc::UnboundedSender<SignalJob>,
    /// What the remote API's `/remote/status` shows.
    status: watch::Sender<StatusSnapshot>,
    /// The task's output pipeline, while its output goes through us.
    pipeline: Option<logs::Pipeline>,
    /// Its counters (shown by `/remote/status` and the exit log line).
    output_counters: Arc<logs::OutputCounters>,
}

/// Runs the executor to completion with `cfg`. Installs the child reaper, the
/// subscription loop and signal handlers, then drives the event loop.
pub async fn run(cfg: Config) -> Outcome {
    let cfg = Arc::new(cfg);
    let reaper = match Reaper::install() {
        Ok(r) => r,
        Err(e) => return Outcome::Internal(format!("installing the child reaper: {e}")),
    };
    let client = match AgentClient::new(
        cfg.agent.clone(),
        cfg.auth_token.clone(),
        cfg.settings.call_timeout,
    ) {
        Ok(c) => c,
        Err(e) => return Outcome::Internal(e.to_string()),
    };
    let (inbox_tx, mut inbox) = mpsc::channel(256);
    if let Err(e) = spawn_signal_listener(inbox_tx.clone()) {
        return Outcome::Internal(format!("installing signal handlers: {e}"));
    }
    let backoff_max = if cfg.checkpoint {
        cfg.subscription_backoff_max
    } else {
        Duration::from_secs(1)
    };
    let (status, status_rx) = watch::channel(StatusSnapshot {
        framework_id: cfg.framework_id.clone(),
        executor_id: cfg.executor_id.clone(),
        ..StatusSnapshot::default()
    });
    let base_env = Arc::new(launch::inherited_env(
        &cfg.environment.0,
        &cfg.settings.env_denylist,
    ));
    let graphite = cfg.settings.graphite.clone().map(|settings| {
        info!(address = %settings.address, interval = ?settings.interval, "pushing metrics to Graphite");
        let app_id = cfg.environment.0.get("MARATHON_APP_ID").cloned();
        crate::metrics::graphite::spawn(settings, status_rx.clone(), reaper.clone(), app_id)
    });
    let output_counters = Arc::new(logs::OutputCounters::default());
    let mirrored = output_counters.clone();
    crate::metrics::set_output_source(move || mirrored.snapshot().map(|s| s.figures()));
    let remote = crate::remote::start(
        &cfg,
        reaper.clone(),
        &base_env,
        status_rx,
        output_counters.clone(),
    );
    let subscription = tokio::spawn(subscription::subscribe_loop(
        client.clone(),
        inbox_tx.clone(),
        backoff_max,
        cfg.settings.max_record_size,
    ));
    info!(agent = %client.url(), checkpoint = cfg.checkpoint, release = crate::RELEASE, "starting; subscribing to the agent");
    let hooks = hooks::build_chain(&cfg.settings.hooks, cfg.settings.call_timeout);
    if !hooks.is_empty() {
        info!(hooks = ?hooks.names(), "hook chain configured");
    }
    let certificate_file =
        cfg.settings.lifetime.certificate_file.as_ref().map(|path| {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
        });
    let mut state = State::new(cfg.clone(), !hooks.is_empty(), Instant::now())
        .with_certificate_file(certificate_file);
    let client_for_calls = client.clone();
    let mut runtime = Runtime {
        signaller: spawn_signaller(
            reaper.clone(),
            cfg.settings.sigterm_exclude_processes.clone(),
        ),
        cfg,
        client,
        reaper,
        inbox: inbox_tx,
        hooks,
        base_env,
        sender: None,
        warm_calls: Some(tokio::spawn({
            let mut calls = client_for_calls.calls();
            async move {
                calls.open().await;
                calls
            }
        })),
        checkers: health::Checkers::default(),
        before_start: None,
        status,
        pipeline: None,
        output_counters,
    };
    let outcome = loop {
        let input = tokio::select! {
            input = inbox.recv() => match input {
                Some(input) => input,
                None => break Outcome::Internal("the executor's inbox closed".into()),
            },
            () = crate::util::sleep_until(state.next_deadline()) => Input::Deadline,
        };
        if let Some(outcome) = runtime.apply(&mut state, input).await {
            break outcome;
        }
        runtime.publish_status(&state);
    };
    runtime.stop_sender();
    subscription.abort();
    if let Some(graphite) = graphite {
        graphite.abort();
    }
    if let Some(remote) = remote {
        remote.stop().await;
    }
    let swept = process::kill_all_descendants();
    if swept > 0 {
        warn!(
            count = swept,
            "killed leftover descendant processes before exit"
        );
    }
    if let Some(c) = runtime.output_counters.snapshot() {
        info!(
            stdout_bytes = c.stdout_bytes,
            stderr_bytes = c.stderr_bytes,
            rotations = c.rotations,
            lines = c.lines,
            shipped = c.shipped,
            dropped = c.dropped(),
            dropped_queue_full = c.dropped_queue_full,
            dropped_rate = c.dropped_rate,
            dropped_size = c.dropped_size,
            dropped_send_error = c.dropped_send_error,
            dropped_at_exit = c.dropped_at_exit,
            truncated = c.truncated,
            plain_not_shipped = c.plain_not_shipped,
            "task output at exit"
        );
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

/// Signals process trees one after another on a blocking thread: a walk of
/// `/proc` (SIGSTOP every member until the tree stops growing, signal,
/// SIGCONT) must neither block the owner nor interleave with another walk.
/// One process-tree signal for the signaller, and what follows it.
struct SignalJob {
    root: i32,
    signal: Signal,
    spare: bool,
    why: &'static str,
    /// An update to hand to the (then current) sender after the signal.
    then: Option<(mpsc::UnboundedSender<v1::TaskStatus>, v1::TaskStatus)>,
}

fn spawn_signaller(reaper: Reaper, spared: Vec<String>) -> mpsc::UnboundedSender<SignalJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<SignalJob>();
    tokio::spawn(async move {
        while let Some(SignalJob {
            root,
            signal,
            spare,
            why,
            then,
        }) = rx.recv().await
        {
            let reaper = reaper.clone();
            let spared = if spare { spared.clone() } else { Vec::new() };
            // The walk's own log lines (spared processes) keep the executor's ids.
            let span = tracing::Span::current();
            let walk = tokio::task::spawn_blocking(move || {
                let _in_span = span.enter();
                process::signal_task_tree(root, &reaper.auxiliary_pids(), signal, &spared)
            });
            match walk.await {
                Ok(pids) if pids.is_empty() => tracing::debug!(
                    root,
                    signal = signal.as_str(),
                    why,
                    "no process of the task to signal"
                ),
                Ok(pids) => {
                    info!(root, signal = signal.as_str(), why, processes = ?pids, "signalled the task's process tree")
                }
                Err(e) => warn!(root, cause = %e, "signalling the task's process tree failed"),
            }
            if let Some((queue, status)) = then {
                let _ = queue.send(status);
            }
        }
    });
    tx
}

impl Runtime {
    /// Steps `state` with `input` and carries out the effects in order,
    /// stepping again at once with what an effect answers (the spawn).
    /// Returns the outcome once the run is over.
    async fn apply(&mut self, state: &mut State, input: Input) -> Option<Outcome> {
        count(&input);
        let mut pending = VecDeque::from(state.step(input, Instant::now()));
        while let Some(effect) = pending.pop_front() {
            if matches!(effect, Effect::Spawn { .. }) {
                // Let the update sender put TASK_STARTING on the wire first:
                // its round trip to the agent then overlaps the spawn.
                tokio::task::yield_now().await;
            }
            match self.carry_out(effect) {
                Next::Continue => {}
                Next::Step(answer) => pending.extend(state.step(answer, Instant::now())),
                Next::Exit(outcome) => return Some(outcome),
            }
        }
        None
    }

    fn carry_out(&mut self, effect: Effect) -> Next {
        match effect {
            Effect::Subscribe { reply, call } => {
                let _ = reply.send(call);
            }
            Effect::StartSender { resend } => {
                self.stop_sender();
                let (queue, rx) = mpsc::unbounded_channel();
                // The first subscription takes the connection opened at start.
                let warm = self.warm_calls.take();
                let client = self.client.clone();
                let (inbox, framework_id, executor_id) = (
                    self.inbox.clone(),
                    self.cfg.framework_id.clone(),
                    self.cfg.executor_id.clone(),
                );
                let handle = tokio::spawn(async move {
                    let conn = match warm {
                        Some(opening) => opening.await.unwrap_or_else(|_| client.calls()),
                        None => client.calls(),
                    };
                    subscription::send_updates(conn, rx, inbox, framework_id, executor_id).await;
                });
                for status in resend {
                    let _ = queue.send(status);
                }
                self.sender = Some(Sender { queue, handle });
            }
            Effect::StopSender => self.stop_sender(),
            Effect::SendUpdate(status) => {
                if let Some(sender) = &self.sender {
                    let _ = sender.queue.send(status);
                }
            }
            Effect::RunHooks(call) => {
                let event = call.event;
                let handle = self.spawn_chain(call);
                if event == HookEvent::BeforeStart {
                    self.before_start = Some(handle);
                }
            }
            Effect::CancelBeforeStart => {
                if let Some(handle) = self.before_start.take() {
                    handle.abort();
                }
            }
            Effect::Spawn { spec, output } => {
                return Next::Step(self.spawn_task(&spec, output.as_deref()))
            }
            Effect::DrainOutput { within: timeout } => {
                let Some(pipeline) = self.pipeline.take() else {
                    return Next::Step(Input::OutputDrained);
                };
                let inbox = self.inbox.clone();
                tokio::spawn(async move {
                    if let Some(c) = pipeline.finish(timeout).await {
                        info!(
                            shipped = c.shipped,
                            dropped = c.dropped(),
                            lines = c.lines,
                            "task output drained"
                        );
                    }
                    let _ = inbox.send(Input::OutputDrained).await;
                });
            }
            Effect::StartChecks { armed, spec } => {
                let LaunchSpec { env, cwd, .. } = *spec;
                let ctx = health::TaskContext {
                    env,
                    cwd,
                    reaper: self.reaper.clone(),
                };
                self.checkers = health::Checkers::spawn(
                    armed,
                    &ctx,
                    &self.inbox,
                    Input::HealthProbe,
                    Input::CheckProbe,
                );
            }
            Effect::StopChecks => self.checkers = health::Checkers::default(),
            Effect::SignalTree {
                root,
                signal,
                spare,
                why,
                then,
            } => {
                // Without a sender the update travels in the next SUBSCRIBE.
                let then = then
                    .and_then(|status| self.sender.as_ref().map(|s| (s.queue.clone(), *status)));
                let _ = self.signaller.send(SignalJob {
                    root,
                    signal,
                    spare,
                    why,
                    then,
                });
            }
            Effect::Exit(outcome) => return Next::Exit(outcome),
        }
        Next::Continue
    }

    /// Starts the task's root process: cloned without waiting for its exec
    /// where it can be (well under 0.1 ms, so it runs right here), a fork
    /// otherwise. The answer goes straight back into the step.
    fn spawn_task(&mut self, spec: &LaunchSpec, output: Option<&logs::OutputPlan>) -> Input {
        let user = match process::resolve_user(spec.user.as_deref()) {
            Ok(user) => user,
            Err(e) => {
                return Input::SpawnFailed {
                    message: format!("Cannot launch task: {e}"),
                    reason: Some(Reason::TaskInvalid),
                }
            }
        };
        let pipes = output.and_then(|plan| self.start_pipeline(plan));
        let spawned = self.reaper.spawn_task(spec, user, pipes.as_ref());
        // Our copies of the write ends close here: the drains see EOF once
        // the task's processes are gone.
        drop(pipes);
        match spawned {
            Ok(process) => {
                let pid = process.pid;
                let inbox = self.inbox.clone();
                tokio::spawn(async move {
                    let outcome = process.end().await;
                    let _ = inbox.send(Input::TaskExited(outcome)).await;
                });
                Input::TaskSpawned(i32::try_from(pid).unwrap_or(i32::MAX))
            }
            Err(cause) => {
                let e = process::SpawnError::Exec {
                    command: spec.program.display(),
                    cwd: spec.cwd.display().to_string(),
                    cause,
                };
                Input::SpawnFailed {
                    message: format!("Cannot launch task: {e}"),
                    reason: None,
                }
            }
        }
    }

    /// Starts the output pipeline for the task about to be spawned; returns
    /// the pipes' write ends for the task, or `None` (the task inherits the
    /// sandbox files) when the pipeline cannot start.
    fn start_pipeline(&mut self, plan: &logs::OutputPlan) -> Option<[std::os::fd::OwnedFd; 2]> {
        let pipes = logs::task_pipes();
        let started = pipes.and_then(|logs::TaskPipes { readers, writers }| {
            let dirs: Vec<std::path::PathBuf> = self
                .cfg
                .directory
                .iter()
                .chain(std::iter::once(&self.cfg.sandbox))
                .cloned()
                .collect();
            let consul = logs::ConsulAccess {
                base_url: self.cfg.settings.hooks.consul_url.clone(),
                token: self.cfg.settings.hooks.consul_token.clone(),
                timeout: self.cfg.settings.call_timeout,
            };
            logs::Pipeline::start(
                plan,
                &self.cfg.settings.output,
                &dirs,
                &consul,
                readers,
                self.output_counters.clone(),
            )
            .map(|pipeline| (pipeline, writers))
        });
        match started {
            Ok((pipeline, writers)) => {
                self.pipeline = Some(pipeline);
                Some(writers)
            }
            Err(e) => {
                warn!(cause = %e, "cannot start the task's output pipeline; the task writes to the sandbox files itself");
                None
            }
        }
    }

    /// Runs a chain off the loop; its result comes back as `Input::HookDone`.
    fn spawn_chain(&self, call: effect::HookCall) -> JoinHandle<()> {
        let effect::HookCall {
            event,
            task,
            agent,
            budget,
            task_user,
        } = call;
        let ctx = HookContext {
            event,
            task,
            framework_id: self.cfg.framework_id.clone(),
            executor_id: self.cfg.executor_id.clone(),
            agent_id: agent
                .as_ref()
                .and_then(|a| a.id.as_ref())
                .map(|i| i.value.clone())
                .or_else(|| self.cfg.agent_id.clone()),
            agent_hostname: agent.map(|a| a.hostname),
            sandbox: self.cfg.sandbox.clone(),
            base_env: self.base_env.clone(),
            added_env: Vec::new(),
            task_user,
            reaper: self.reaper.clone(),
        };
        let chain = self.hooks.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let result: ChainResult = chain.run(ctx, budget).await;
            let _ = inbox.send(Input::HookDone { event, result }).await;
        })
    }

    fn stop_sender(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.handle.abort();
        }
    }

    /// Publishes the task's part of [`StatusSnapshot`] if it changed (it runs
    /// after every input, so nothing is allocated unless something changed).
    fn publish_status(&self, state: &State) {
        let (task_id, task_state, pid) = state.task_view();
        let task_state = task_state.map(|s| s.as_str_name());
        let healthy = state.healthy();
        let scheduled_end = state.scheduled_end();
        self.status.send_if_modified(|s| {
            let changed = s.task_id.as_deref() != task_id
                || s.state.as_deref() != task_state
                || s.pid != pid
                || s.healthy != healthy
                || s.scheduled_end
                    .as_ref()
                    .map(|(at, why)| (at.as_str(), *why))
                    != scheduled_end;
            if changed {
                (s.task_id, s.state, s.pid, s.healthy, s.scheduled_end) = (
                    task_id.map(str::to_owned),
                    task_state.map(str::to_owned),
                    pid,
                    healthy,
                    scheduled_end.map(|(at, why)| (at.to_owned(), why)),
                );
            }
            changed
        });
    }
}

/// Counts the agent link's events for the metrics (the step stays pure).
fn count(input: &Input) {
    let m = &crate::metrics::get().agent;
    match input {
        Input::Disconnected(_) => m.disconnects.inc(),
        Input::SubscribeFailed(_) => m.subscribe_failures.inc(),
        Input::Agent(event) => match event.r#type.map(proto::executor::event::Type::try_from) {
            Some(Ok(proto::executor::event::Type::Subscribed)) => {
                if m.subscriptions.get() > 0 {
                    m.reconnects.inc();
                }
                m.subscriptions.inc();
            }
            Some(Ok(proto::executor::event::Type::Acknowledged)) => m.updates_acknowledged.inc(),
            _ => {}
        },
        _ => {}
    }
}

/// What the loop does after carrying out one effect.
enum Next {
    /// Go on with the next effect.
    Continue,
    /// Step at once with this answer (the spawn's).
    Step(Input),
    /// The run is over.
    Exit(Outcome),
}
