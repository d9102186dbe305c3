//! The executor's decisions: `State` + `Input` + now → new `State` + effects.
//!
//! Nothing here does I/O or reads the clock: the owner loop passes `now`, and
//! carries out the [`Effect`]s in order. Status updates are recorded in the
//! update log here (the single source of truth for SUBSCRIBE) and handed to
//! the sender as an effect.

use std::{sync::Arc, time::Duration};

use nix::sys::signal::Signal;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{
    effect::{Effect, HookCall},
    input::Input,
    state::{
        AgentSession, EndCause, Kill, KillPhase, Link, Output, PlannedEnd, Stage, State, Task,
    },
    Outcome,
};
use crate::{
    agent::updates::{self, Acked},
    health,
    hooks::{self, ChainResult, HookEvent},
    logs,
    proto::{
        executor::{event, Event},
        v1::{self, task_status::Reason, TaskState},
    },
    task::{
        launch::{self, LaunchContext, LaunchSpec},
        lifetime::{self, CertificateError, EndReason, Schedule},
        termination::{self, ExitOutcome, KillCause},
    },
    util::deadline_after,
};

impl State {
    /// Applies one input at `now`; returns what the owner loop must do, in
    /// order. After the last effect `Exit`, nothing more is to be done.
    pub(crate) fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        self.handle(input, now);
        self.progress(now);
        if let Some(outcome) = self.finished(now) {
            self.effects.push(Effect::StopSender);
            self.effects.push(Effect::Exit(outcome));
        }
        std::mem::take(&mut self.effects)
    }

    fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::SubscribeRequest(reply) => self.on_subscribe_request(reply),
            Input::StreamOpened => debug!("SUBSCRIBE accepted; event stream open"),
            Input::SubscribeFailed(error) => match self.link {
                Link::Registering { .. } | Link::Reconnecting { .. } => {
                    warn!(cause = %error, "SUBSCRIBE failed; will retry")
                }
                Link::Subscribed | Link::Gone => debug!(cause = %error, "SUBSCRIBE failed"),
            },
            Input::Agent(event) => self.on_event(*event, now),
            Input::Disconnected(reason) => self.on_disconnected(&reason, now),
            Input::UpdateAccepted(uuid) => self.log.mark_accepted(&uuid),
            Input::UpdateRefused { uuid, error } => {
                error!(uuid = %uuid::Uuid::from_slice(&uuid).map(|u| u.to_string()).unwrap_or_default(), cause = %error,
                    "agent refused a status update; it stays unacknowledged and is resent on the next SUBSCRIBE");
            }
            Input::TaskSpawned(pid) => self.on_spawned(pid, now),
            Input::SpawnFailed { message, reason } => self.on_spawn_failed(message, reason, now),
            Input::TaskExited(outcome) => self.on_task_exit(outcome, now),
            Input::Signal(name) => self.on_signal(name, now),
            Input::HookDone { event, result } => self.on_hook_done(event, result, now),
            Input::HealthProbe(observation) => self.on_health_probe(&observation, now),
            Input::CheckProbe(observation) => self.on_check_probe(&observation, now),
            Input::OutputDrained => self.on_output_drained(now),
            Input::Deadline => self.on_deadline(now),
        }
    }

    fn on_subscribe_request(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Option<crate::proto::executor::Call>>,
    ) {
        let in_flight = match &mut self.link {
            Link::Registering { in_subscribe, .. } | Link::Reconnecting { in_subscribe, .. } => {
                in_subscribe
            }
            Link::Gone => {
                self.effects.push(Effect::Subscribe { reply, call: None });
                return;
            }
            // A stream that ended always reports Disconnected before the
            // loop asks again; answer all the same.
            Link::Subscribed => {
                let call = self
                    .log
                    .subscribe_call(&self.cfg.framework_id, &self.cfg.executor_id);
                self.effects.push(Effect::Subscribe {
                    reply,
                    call: Some(call),
                });
                return;
            }
        };
        let call = self
            .log
            .subscribe_call(&self.cfg.framework_id, &self.cfg.executor_id);
        let sub = call.subscribe.as_ref();
        *in_flight = sub
            .map(|s| {
                s.unacknowledged_updates
                    .iter()
                    .filter_map(|u| u.status.uuid.clone())
                    .collect()
            })
            .unwrap_or_default();
        debug!(
            unacknowledged_tasks = sub.map_or(0, |s| s.unacknowledged_tasks.len()),
            unacknowledged_updates = in_flight.len(),
            "sending SUBSCRIBE"
        );
        self.effects.push(Effect::Subscribe {
            reply,
            call: Some(call),
        });
    }

    /// Starts the once-only before-terminate chain when the executor is about
    /// to end without a task to kill (no task, or it never started).
    fn progress(&mut self, now: Instant) {
        let idle = matches!(self.task, Task::Idle | Task::Terminal { .. });
        let ending = self.ending.cause.is_some() || matches!(self.task, Task::Terminal { .. });
        if idle && ending && self.ending.before_terminate == Stage::Pending {
            let budget = match self.ending.cause {
                Some(EndCause::Shutdown { deadline }) => Some(hooks::terminate_budget(
                    deadline.saturating_duration_since(now),
                )),
                _ => None,
            };
            self.run_before_terminate(None, budget);
        }
    }

    /// Whether the run is over, and how.
    fn finished(&self, now: Instant) -> Option<Outcome> {
        let task_done = matches!(self.task, Task::Idle | Task::Terminal { .. });
        let draining = matches!(self.output, Output::Draining(_));
        if !task_done || draining || self.ending.before_terminate == Stage::Running {
            return None;
        }
        match self.ending.cause {
            Some(EndCause::AgentLost) => return Some(Outcome::AgentLost),
            Some(EndCause::Shutdown { .. } | EndCause::Signal)
                if matches!(self.task, Task::Idle) =>
            {
                return Some(Outcome::Completed)
            }
            _ => {}
        }
        if !matches!(self.task, Task::Terminal { .. }) {
            return None;
        }
        if self.log.pending().is_empty() {
            return Some(Outcome::Completed);
        }
        if self.ending.ack_deadline.is_none_or(|d| d > now) {
            return None;
        }
        let unaccepted = self.log.unaccepted();
        match self.ending.cause {
            // The agent destroys the container at the end of the shutdown
            // grace anyway; leave once our updates are at least accepted.
            Some(EndCause::Shutdown { .. }) if unaccepted == 0 => {
                warn!(
                    pending = self.log.pending().len(),
                    "shutdown budget over; exiting with updates accepted but not acknowledged"
                );
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

    fn on_deadline(&mut self, now: Instant) {
        match self.link {
            Link::Registering { deadline, .. } if deadline <= now => {
                error!(
                    timeout = ?self.cfg.settings.registration_timeout,
                    "could not subscribe to the agent in time (HOOK_EXECUTOR_REGISTRATION_TIMEOUT); giving up"
                );
                self.agent_lost(now);
            }
            Link::Reconnecting { deadline, .. } if deadline <= now => {
                error!(timeout = ?self.cfg.recovery_timeout, "agent not back within MESOS_RECOVERY_TIMEOUT; killing the task and exiting");
                self.agent_lost(now);
            }
            _ => {}
        }
        match &self.task {
            Task::Running {
                max_completion: Some(at),
                info,
                ..
            } if *at <= now => {
                warn!(task_id = %info.task_id.value, "max completion time reached; killing the task");
                self.start_kill(KillCause::MaxCompletionTime, Duration::ZERO, None, now);
            }
            Task::Running { info, .. }
                if self.planned_end.as_ref().is_some_and(|p| p.at <= now) =>
            {
                let Some(planned) = &self.planned_end else {
                    return;
                };
                let reason = planned.schedule.reason;
                let message = planned.schedule.message(self.wall_at(now));
                warn!(task_id = %info.task_id.value, reason = reason.as_str(), "scheduled end reached; killing the task gracefully");
                let grace = self.task_grace(None);
                self.start_kill(KillCause::Scheduled(reason), grace, Some(message), now);
            }
            Task::Killing(k) if k.deadline <= now && k.phase != KillPhase::Escalated => {
                self.escalate()
            }
            Task::Killing(k) if matches!(k.phase, KillPhase::Hooks { until } if until <= now) => {
                warn!("before-terminate hooks still running at the end of their budget; signalling the task anyway");
                self.send_sigterm();
            }
            _ => {}
        }
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        let kind = event
            .r#type
            .map_or(Ok(event::Type::Unknown), event::Type::try_from);
        match kind {
            Ok(event::Type::Subscribed) => match event.subscribed {
                Some(s) => self.on_subscribed(s),
                None => error!("SUBSCRIBED event without its payload; ignored"),
            },
            Ok(event::Type::Launch) => match event.launch {
                Some(l) => self.on_launch(l.task, now),
                None => error!("LAUNCH event without its payload; ignored"),
            },
            Ok(event::Type::LaunchGroup) => {
                let tasks = event
                    .launch_group
                    .map(|g| g.task_group.tasks)
                    .unwrap_or_default();
                for task in tasks {
                    self.log.add_task(task.clone());
                    self.fail_task(
                        &task.task_id,
                        "mesos-hook-executor runs single tasks; task groups (LAUNCH_GROUP) are not supported".into(),
                        Some(Reason::TaskGroupInvalid),
                        now,
                    );
                }
            }
            Ok(event::Type::Kill) => match event.kill {
                Some(k) => self.on_kill(&k.task_id, k.kill_policy.as_ref(), now),
                None => error!("KILL event without its payload; ignored"),
            },
            Ok(event::Type::Acknowledged) => match event.acknowledged {
                Some(a) => match self.log.acknowledge(&a.task_id, &a.uuid) {
                    Acked::Update(status) => {
                        debug!(task_id = %a.task_id.value, state = status.state().as_str_name(), uuid = %updates::uuid_text(&status), "update acknowledged");
                    }
                    Acked::Unknown => {
                        debug!(task_id = %a.task_id.value, "acknowledgement for an unknown uuid; ignored")
                    }
                },
                None => error!("ACKNOWLEDGED event without its payload; ignored"),
            },
            Ok(event::Type::Message) => {
                let len = event.message.map_or(0, |m| m.data.len());
                info!(
                    bytes = len,
                    "framework message received (no handler; ignored)"
                );
            }
            Ok(event::Type::Error) => {
                error!(detail = %event.error.map(|e| e.message).unwrap_or_default(), "agent sent ERROR");
            }
            Ok(event::Type::Shutdown) => self.on_shutdown(now),
            Ok(event::Type::Heartbeat) => debug!("agent heartbeat"),
            Ok(event::Type::Unknown) | Err(_) => {
                warn!(r#type = ?event.r#type, "ignoring an event of unknown type")
            }
        }
    }

    fn on_subscribed(&mut self, s: event::Subscribed) {
        info!(
            framework_id = %s.framework_info.id.as_ref().map(|i| i.value.as_str()).unwrap_or_default(),
            executor_id = %s.executor_info.executor_id.value,
            agent = %s.agent_info.hostname,
            "subscribed to the agent"
        );
        self.agent = Some(AgentSession {
            framework: s.framework_info,
            executor: s.executor_info,
            agent: s.agent_info,
        });
        let in_subscribe = match std::mem::replace(&mut self.link, Link::Subscribed) {
            Link::Registering { in_subscribe, .. } | Link::Reconnecting { in_subscribe, .. } => {
                in_subscribe
            }
            Link::Subscribed | Link::Gone => Vec::new(),
        };
        // Updates recorded after the SUBSCRIBE body was built still need sending.
        let resend = self
            .log
            .pending()
            .iter()
            .filter(|status| {
                !in_subscribe
                    .iter()
                    .any(|u| Some(u.as_slice()) == status.uuid.as_deref())
            })
            .cloned()
            .collect();
        self.effects.push(Effect::StartSender { resend });
    }

    fn on_disconnected(&mut self, reason: &str, now: Instant) {
        self.effects.push(Effect::StopSender);
        match self.link {
            Link::Subscribed if self.cfg.checkpoint => {
                warn!(cause = %reason, recovery_timeout = ?self.cfg.recovery_timeout, "disconnected from the agent; reconnecting");
                self.link = Link::Reconnecting {
                    deadline: deadline_after(now, self.cfg.recovery_timeout),
                    in_subscribe: Vec::new(),
                };
            }
            Link::Subscribed => {
                error!(cause = %reason, "disconnected from the agent and MESOS_CHECKPOINT is off; killing the task and exiting");
                self.agent_lost(now);
            }
            Link::Registering { .. } | Link::Reconnecting { .. } => {
                warn!(cause = %reason, "event stream ended before SUBSCRIBED; retrying");
            }
            Link::Gone => debug!(cause = %reason, "event stream ended"),
        }
    }

    fn agent_lost(&mut self, now: Instant) {
        self.link = Link::Gone;
        self.effects.push(Effect::StopSender);
        if matches!(self.ending.cause, None | Some(EndCause::Signal)) {
            self.ending.cause = Some(EndCause::AgentLost);
        }
        let grace = self.task_grace(None);
        self.start_kill(KillCause::AgentLost, grace, None, now);
    }

    fn on_signal(&mut self, name: &'static str, now: Instant) {
        if matches!(self.task, Task::Killing(_)) && self.ending.cause == Some(EndCause::Signal) {
            warn!(signal = name, "second signal; escalating to SIGKILL now");
            self.start_kill(KillCause::ExecutorSignal, Duration::ZERO, None, now);
            return;
        }
        info!(
            signal = name,
            "executor signalled; killing the task gracefully"
        );
        if self.ending.cause.is_none() {
            self.ending.cause = Some(EndCause::Signal);
        }
        let grace = self.task_grace(None);
        self.start_kill(KillCause::ExecutorSignal, grace, None, now);
    }

    fn on_shutdown(&mut self, now: Instant) {
        let deadline = deadline_after(now, self.cfg.shutdown_grace_period);
        info!(grace = ?self.cfg.shutdown_grace_period, "SHUTDOWN received");
        if !matches!(self.ending.cause, Some(EndCause::Shutdown { .. })) {
            self.ending.cause = Some(EndCause::Shutdown { deadline });
        }
        let budget = deadline.saturating_duration_since(now);
        let ack_by = deadline - (budget / 10).min(Duration::from_millis(500));
        self.ending.ack_deadline = Some(self.ending.ack_deadline.map_or(ack_by, |d| d.min(ack_by)));
        let grace =
            termination::shutdown_grace(self.task_grace(None), self.cfg.shutdown_grace_period);
        self.start_kill(KillCause::Shutdown, grace, None, now);
    }

    /// The task's kill grace with an optional per-KILL override.
    fn task_grace(&self, kill_override: Option<&v1::KillPolicy>) -> Duration {
        let task_policy = self.task_info().and_then(|info| info.kill_policy.as_ref());
        termination::kill_grace(
            kill_override,
            task_policy,
            self.cfg.settings.kill_grace_period,
        )
    }

    fn on_launch(&mut self, task: v1::TaskInfo, now: Instant) {
        let task_id = task.task_id.clone();
        info!(task_id = %task_id.value, name = %task.name, "LAUNCH received");
        if !matches!(self.task, Task::Idle) {
            self.log.add_task(task);
            self.fail_task(
                &task_id,
                "Attempted to run multiple tasks using a single-task executor (mesos-hook-executor runs one task)".into(),
                None,
                now,
            );
            return;
        }
        self.log.add_task(task.clone());
        self.checks = health::Checks::for_task(&task);
        if self.ending.cause.is_some() {
            self.fail_task(&task_id, "the executor is shutting down".into(), None, now);
            return;
        }
        self.send_update(updates::new_status(
            &task_id,
            TaskState::TaskStarting,
            &self.cfg.executor_id,
        ));
        let executor_info = task
            .executor
            .as_ref()
            .or(self.agent.as_ref().map(|a| &a.executor));
        let ctx = LaunchContext {
            executor_env: &self.cfg.environment.0,
            executor_env_other: &self.cfg.environment.1,
            denylist: &self.cfg.settings.env_denylist,
            sandbox: &self.cfg.sandbox,
        };
        let spec = match launch::launch_spec(&task, executor_info, ctx) {
            Ok(spec) => Box::new(spec),
            Err(e) => {
                self.fail_task(
                    &task_id,
                    format!("Cannot launch task: {e}"),
                    Some(Reason::TaskInvalid),
                    now,
                );
                return;
            }
        };
        match self.schedule_end(&task, &spec, now) {
            Ok(schedule) => self.plan_end(&task_id, schedule, now),
            Err(e) => {
                self.fail_task(
                    &task_id,
                    format!("Cannot launch task: problem with certificate: {e}"),
                    Some(Reason::TaskInvalid),
                    now,
                );
                return;
            }
        }
        let info = Arc::new(task);
        if self.hooks_configured {
            self.run_hooks(HookEvent::BeforeStart, Some(info.clone()), None);
            self.task = Task::Launching { info, spec };
        } else {
            // Nothing to wait for: straight to the fork.
            self.spawn(info, spec, Vec::new());
        }
    }

    /// The task's scheduled end, if any: before its certificate expires
    /// (label `validate-certificate: true`; an unusable certificate refuses
    /// the launch) or at the maximum lifetime, whichever comes first.
    fn schedule_end(
        &mut self,
        task: &v1::TaskInfo,
        spec: &LaunchSpec,
        now: Instant,
    ) -> Result<Option<Schedule>, CertificateError> {
        let settings = &self.cfg.settings.lifetime;
        let certificate = if lifetime::requires_certificate(task) {
            let pem = match (
                spec.env.get(lifetime::CERTIFICATE_VAR),
                &self.certificate_file,
            ) {
                (Some(pem), _) if !pem.trim().is_empty() => pem.as_str(),
                (_, Some(Ok(text))) => text.as_str(),
                (_, Some(Err(why))) => return Err(CertificateError::Unreadable(why.clone())),
                (_, None) => return Err(CertificateError::Missing),
            };
            let not_after = lifetime::not_after(pem)?;
            let after = lifetime::certificate_end(
                not_after,
                self.wall_at(now),
                settings.certificate_range,
                self.rng.f64(),
            )?;
            Some(Schedule {
                reason: EndReason::CertificateExpiry,
                after,
                not_after: Some(not_after),
            })
        } else {
            None
        };
        let max_lifetime = settings.max_lifetime.map(|max| Schedule {
            reason: EndReason::MaxLifetime,
            after: lifetime::lifetime_end(max, settings.max_lifetime_spread, self.rng.f64()),
            not_after: None,
        });
        Ok(lifetime::earliest(certificate, max_lifetime))
    }

    /// Remembers the scheduled end and logs it.
    fn plan_end(&mut self, task_id: &v1::TaskId, schedule: Option<Schedule>, now: Instant) {
        self.planned_end = schedule.map(|schedule| {
            let wall = lifetime::rfc3339(
                self.wall_at(now)
                    .checked_add(schedule.after)
                    .unwrap_or_else(|| self.wall_at(now)),
            );
            info!(task_id = %task_id.value, reason = schedule.reason.as_str(), at = %wall,
                not_after = ?schedule.not_after.map(lifetime::rfc3339), "task end scheduled");
            PlannedEnd {
                at: deadline_after(now, schedule.after),
                wall,
                schedule,
            }
        });
    }

    /// Asks the loop to start the task's process with the hooks' additions.
    fn spawn(
        &mut self,
        info: Arc<v1::TaskInfo>,
        mut spec: Box<LaunchSpec>,
        added_env: Vec<(String, String)>,
    ) {
        spec.env.extend(added_env);
        let facts = logs::TaskFacts {
            task: &info,
            framework_id: &self.cfg.framework_id,
            executor_id: &self.cfg.executor_id,
            agent_host: self.agent.as_ref().map(|a| a.agent.hostname.as_str()),
            env: &spec.env,
        };
        let output = logs::plan(&self.cfg.settings.output, facts).map(Box::new);
        self.output = if output.is_some() {
            Output::Captured
        } else {
            Output::Inherited
        };
        self.effects.push(Effect::Spawn {
            spec: spec.clone(),
            output,
        });
        self.task = Task::Spawning { info, spec };
    }

    fn on_spawned(&mut self, pid: i32, now: Instant) {
        if !matches!(self.task, Task::Spawning { .. }) {
            // Killed (and reported) while the fork was under way: the
            // process must not run, and nothing else tracks it.
            warn!(
                pid,
                "the task was killed while it was being started; killing its process"
            );
            self.effects.push(Effect::SignalTree {
                root: pid,
                signal: Signal::SIGKILL,
                spare: false,
                why: "untracked process",
                then: None,
            });
            return;
        }
        let Task::Spawning { info, spec } = std::mem::replace(&mut self.task, Task::Idle) else {
            return;
        };
        info!(task_id = %info.task_id.value, pid, source = ?spec.source, command = %spec.program.display(), "task started");
        self.send_update(updates::new_status(
            &info.task_id,
            TaskState::TaskRunning,
            &self.cfg.executor_id,
        ));
        let armed = self.checks.arm(&info, now);
        if !armed.is_empty() {
            self.effects.push(Effect::StartChecks { armed, spec });
        }
        let max_completion = info
            .max_completion_time
            .as_ref()
            .and_then(|d| u64::try_from(d.nanoseconds).ok())
            .filter(|n| *n > 0)
            .map(|n| deadline_after(now, Duration::from_nanos(n)));
        self.task = Task::Running {
            info: info.clone(),
            pid,
            max_completion,
        };
        if self.hooks_configured {
            self.run_hooks(HookEvent::AfterStart, Some(info), None);
        }
    }

    fn on_spawn_failed(&mut self, message: String, reason: Option<Reason>, now: Instant) {
        if !matches!(self.task, Task::Spawning { .. }) {
            return;
        }
        let Task::Spawning { info, .. } = std::mem::replace(&mut self.task, Task::Idle) else {
            return;
        };
        // No process: the pipeline (if any) ends with its pipes' write ends.
        self.output = Output::Inherited;
        self.fail_task(&info.task_id, message, reason, now);
    }

    /// Records a terminal TASK_FAILED for a task that never ran.
    fn fail_task(
        &mut self,
        task_id: &v1::TaskId,
        message: String,
        reason: Option<Reason>,
        now: Instant,
    ) {
        error!(task_id = %task_id.value, detail = %message, "task failed before starting");
        self.end_without_process(task_id, TaskState::TaskFailed, message, reason, now);
    }

    /// Sends the terminal update of a task that has no process, and ends the
    /// executor's task with it unless another task is already the executor's
    /// (a refused second LAUNCH).
    fn end_without_process(
        &mut self,
        task_id: &v1::TaskId,
        state: TaskState,
        message: String,
        reason: Option<Reason>,
        now: Instant,
    ) {
        let mut status = updates::new_status(task_id, state, &self.cfg.executor_id);
        status.message = Some(message);
        status.reason = reason.map(|r| r as i32);
        self.send_update(status);
        if matches!(self.task, Task::Idle) {
            self.task = Task::Terminal {
                task_id: task_id.clone(),
                state,
            };
            self.arm_ack_deadline(now);
        }
    }

    fn on_kill(
        &mut self,
        task_id: &v1::TaskId,
        kill_policy: Option<&v1::KillPolicy>,
        now: Instant,
    ) {
        if let Task::Terminal { task_id: t, state } = &self.task {
            if t == task_id {
                debug!(task_id = %task_id.value, state = state.as_str_name(), "KILL for a task that already ended; ignored");
                return;
            }
        }
        if self
            .task_info()
            .is_some_and(|info| info.task_id == *task_id)
        {
            let grace = self.task_grace(kill_policy);
            info!(task_id = %task_id.value, ?grace, "KILL received");
            self.start_kill(KillCause::Kill, grace, None, now);
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
    fn start_kill(
        &mut self,
        cause: KillCause,
        grace: Duration,
        detail: Option<String>,
        now: Instant,
    ) {
        match std::mem::replace(&mut self.task, Task::Idle) {
            Task::Launching { info, .. } | Task::Spawning { info, .. } => {
                // Nothing runs yet: stop the before-start chain and report.
                self.effects.push(Effect::CancelBeforeStart);
                info!(task_id = %info.task_id.value, ?cause, "killed before its process started");
                let message = detail.unwrap_or_else(|| "Task killed before it started".into());
                self.end_without_process(
                    &info.task_id,
                    terminal_state_before_start(cause),
                    message,
                    None,
                    now,
                );
            }
            Task::Running { info, pid, .. } => {
                // As Mesos pauses its checkers: no check runs or reports while killing.
                self.stop_checks();
                if termination::send_killing(self.agent.as_ref().map(|a| &a.framework), cause) {
                    self.send_update(updates::new_status(
                        &info.task_id,
                        TaskState::TaskKilling,
                        &self.cfg.executor_id,
                    ));
                }
                let deadline = deadline_after(now, grace);
                let hooks_pending = self.ending.before_terminate == Stage::Pending;
                let budget = hooks::terminate_budget(grace);
                let phase = if hooks_pending && !budget.is_zero() {
                    KillPhase::Hooks {
                        until: deadline_after(now, budget),
                    }
                } else {
                    KillPhase::Terminated
                };
                info!(task_id = %info.task_id.value, ?cause, ?grace, "killing the task");
                self.task = Task::Killing(Box::new(Kill {
                    info: info.clone(),
                    pid,
                    cause,
                    detail,
                    started: now,
                    deadline,
                    phase,
                    exited: None,
                }));
                if hooks_pending {
                    // With no budget (a zero grace) the hooks still run, but
                    // concurrently with the kill.
                    self.run_before_terminate(
                        Some(info),
                        Some(if budget.is_zero() {
                            self.cfg.settings.hooks.timeout
                        } else {
                            budget
                        }),
                    );
                }
                if phase == KillPhase::Terminated {
                    self.send_sigterm();
                }
            }
            Task::Killing(mut k) => {
                if let Some(new) = termination::shortened_deadline(k.started, k.deadline, grace) {
                    info!(task_id = %k.info.task_id.value, ?grace, "kill grace shortened");
                    k.deadline = new.max(now);
                }
                self.task = Task::Killing(k);
            }
            other => self.task = other,
        }
    }

    /// SIGTERM to the task's tree (after the before-terminate hooks).
    fn send_sigterm(&mut self) {
        let Task::Killing(k) = &mut self.task else {
            return;
        };
        if k.phase != KillPhase::Escalated {
            k.phase = KillPhase::Terminated;
        }
        if k.exited.is_none() {
            self.effects.push(Effect::SignalTree {
                root: k.pid,
                signal: Signal::SIGTERM,
                spare: true,
                why: "graceful kill",
                then: None,
            });
        }
    }

    /// SIGKILL to the task's tree at the end of the grace period.
    fn escalate(&mut self) {
        let Task::Killing(k) = &mut self.task else {
            return;
        };
        k.phase = KillPhase::Escalated;
        warn!(task_id = %k.info.task_id.value, "grace period over; sending SIGKILL to the task's process tree");
        self.effects.push(Effect::SignalTree {
            root: k.pid,
            signal: Signal::SIGKILL,
            spare: false,
            why: "grace period over",
            then: None,
        });
    }

    fn on_task_exit(&mut self, outcome: ExitOutcome, now: Instant) {
        self.stop_checks();
        match std::mem::replace(&mut self.task, Task::Idle) {
            Task::Running { info, pid, .. } => {
                if self.ending.before_terminate == Stage::Pending {
                    info!(task_id = %info.task_id.value, "task exited; running before-terminate hooks before reporting");
                    self.run_before_terminate(Some(info.clone()), None);
                    self.task = Task::Draining { info, pid, outcome };
                } else {
                    self.finish_terminal(&info, pid, outcome, None, None, now);
                }
            }
            Task::Killing(mut k) => {
                if let KillPhase::Hooks { .. } = k.phase {
                    // The task went away while the hooks ran: report once they are done.
                    k.exited = Some(outcome);
                    self.task = Task::Killing(k);
                } else {
                    self.finish_terminal(&k.info, k.pid, outcome, Some(k.cause), k.detail, now);
                }
            }
            other => self.task = other,
        }
    }

    /// Kills whatever the root left behind and sends the terminal update.
    fn finish_terminal(
        &mut self,
        info: &v1::TaskInfo,
        pid: i32,
        outcome: ExitOutcome,
        cause: Option<KillCause>,
        detail: Option<String>,
        now: Instant,
    ) {
        let terminal = termination::terminal(outcome, cause);
        let message = match detail {
            Some(d) => format!("{d} ({})", terminal.message),
            None => terminal.message,
        };
        // Stamped before the line is logged: whoever sees "task ended" knows
        // the update's time is already fixed.
        let mut status = updates::new_status(&info.task_id, terminal.state, &self.cfg.executor_id);
        info!(task_id = %info.task_id.value, state = terminal.state.as_str_name(), detail = %message, "task ended");
        status.message = Some(message);
        status.reason = terminal.reason.map(|r| r as i32);
        if terminal.unhealthy {
            status.healthy = Some(false);
        }
        updates::add_labels(&mut status, outcome.labels());
        if let Some(KillCause::Scheduled(reason)) = cause {
            updates::add_labels(
                &mut status,
                vec![("scheduled_end".into(), reason.as_str().into())],
            );
        }
        // Whatever the root left behind is killed first; the terminal update
        // goes to the agent once that signal is out, and, when the task's
        // output goes through the executor, once its pipes are drained (the
        // sweep closes their last write ends).
        let status = self.record_update(status);
        let captured = matches!(self.output, Output::Captured);
        self.effects.push(Effect::SignalTree {
            root: pid,
            signal: Signal::SIGKILL,
            spare: false,
            why: "leftovers of the task",
            then: (!captured).then(|| Box::new(status.clone())),
        });
        self.task = Task::Terminal {
            task_id: info.task_id.clone(),
            state: terminal.state,
        };
        if captured {
            self.output = Output::Draining(Box::new(status));
            let within = drain_budget(
                self.cfg.settings.output.drain_timeout,
                self.ending.ack_deadline,
                now,
            );
            self.effects.push(Effect::DrainOutput { within });
        } else {
            self.arm_ack_deadline(now);
        }
        if self.ending.cause == Some(EndCause::AgentLost) {
            warn!("the agent is gone; the terminal update cannot be delivered");
        }
    }

    fn run_hooks(
        &mut self,
        event: HookEvent,
        task: Option<Arc<v1::TaskInfo>>,
        budget: Option<Duration>,
    ) {
        let agent = self.agent.as_ref().map(|a| a.agent.clone());
        let task_user = task.as_deref().and_then(|t| {
            crate::task::launch::task_user(t, self.agent.as_ref().map(|a| &a.executor))
        });
        self.effects.push(Effect::RunHooks(HookCall {
            event,
            task,
            agent,
            budget,
            task_user,
        }));
    }

    fn run_before_terminate(&mut self, task: Option<Arc<v1::TaskInfo>>, budget: Option<Duration>) {
        self.ending.before_terminate = Stage::Running;
        self.run_hooks(HookEvent::BeforeTerminate, task, budget);
    }

    fn on_hook_done(&mut self, event: HookEvent, result: ChainResult, now: Instant) {
        match event {
            HookEvent::BeforeStart => {
                if !matches!(self.task, Task::Launching { .. }) {
                    // Killed while the chain ran: already reported.
                    return;
                }
                let Task::Launching { info, spec } = std::mem::replace(&mut self.task, Task::Idle)
                else {
                    return;
                };
                match result {
                    ChainResult::Ok { env } => self.spawn(info, spec, env),
                    ChainResult::Failed { hook, reason } => {
                        let why = matches!(reason, hooks::HookError::Policy(_))
                            .then_some(Reason::TaskUnauthorized);
                        self.fail_task(
                            &info.task_id,
                            format!("before-start hook `{hook}` refused the launch: {reason}"),
                            why,
                            now,
                        );
                    }
                }
            }
            HookEvent::AfterStart | HookEvent::AfterHealthy => {
                let Task::Running { info, .. } = &self.task else {
                    return;
                };
                match result {
                    ChainResult::Ok { .. }
                        if event == HookEvent::AfterStart && !self.checks.has_health_checker() =>
                    {
                        // Without a health check, "healthy" follows "started".
                        let info = info.clone();
                        self.run_hooks(HookEvent::AfterHealthy, Some(info), None);
                    }
                    ChainResult::Ok { .. } => {}
                    ChainResult::Failed { hook, reason } => {
                        let grace = self.task_grace(None);
                        self.start_kill(
                            KillCause::HookFailure,
                            grace,
                            Some(format!("{event} hook `{hook}` failed: {reason}")),
                            now,
                        );
                    }
                }
            }
            HookEvent::BeforeTerminate => {
                self.ending.before_terminate = Stage::Done;
                if let ChainResult::Failed { hook, reason } = &result {
                    warn!(hook, %reason, "before-terminate hook failed (the kill went on)");
                }
                match std::mem::replace(&mut self.task, Task::Idle) {
                    Task::Killing(k) if k.exited.is_some() => {
                        let Kill {
                            info,
                            pid,
                            cause,
                            detail,
                            exited,
                            ..
                        } = *k;
                        if let Some(outcome) = exited {
                            self.finish_terminal(&info, pid, outcome, Some(cause), detail, now);
                        }
                    }
                    Task::Draining { info, pid, outcome } => {
                        self.finish_terminal(&info, pid, outcome, None, None, now)
                    }
                    other => {
                        self.task = other;
                        if matches!(&self.task, Task::Killing(k) if matches!(k.phase, KillPhase::Hooks { .. }))
                        {
                            self.send_sigterm();
                        }
                    }
                }
            }
        }
    }

    /// The task's output is drained: the held terminal update goes out
    /// (unless a SUBSCRIBE already carried it and it was acknowledged).
    fn on_output_drained(&mut self, now: Instant) {
        let Output::Draining(status) = std::mem::take(&mut self.output) else {
            return;
        };
        let pending = self
            .log
            .pending()
            .iter()
            .any(|s| s.uuid.is_some() && s.uuid == status.uuid);
        if pending {
            self.effects.push(Effect::SendUpdate(*status));
        }
        self.arm_ack_deadline(now);
    }

    fn stop_checks(&mut self) {
        if self.checks.disarm() {
            self.effects.push(Effect::StopChecks);
        }
    }

    fn arm_ack_deadline(&mut self, now: Instant) {
        let by = deadline_after(now, self.cfg.settings.ack_timeout);
        self.ending.ack_deadline = Some(self.ending.ack_deadline.map_or(by, |d| d.min(by)));
    }

    /// Records an update in the log and hands it to the sender.
    fn send_update(&mut self, status: v1::TaskStatus) {
        let status = self.record_update(status);
        self.effects.push(Effect::SendUpdate(status));
    }

    /// Records an update in the log (the source of truth for SUBSCRIBE);
    /// returns the status to send.
    fn record_update(&mut self, mut status: v1::TaskStatus) -> v1::TaskStatus {
        self.checks.on_status(&mut status);
        debug!(task_id = %status.task_id.value, state = status.state().as_str_name(), uuid = %updates::uuid_text(&status), "status update");
        self.log.record(status.clone());
        status
    }

    /// A health check result: report it as Mesos does and, after the allowed
    /// consecutive failures, kill the task gracefully (its terminal update
    /// then says `healthy = false`). Results after the kill started are dropped.
    fn on_health_probe(&mut self, observation: &health::Observation, now: Instant) {
        let Task::Running { info, .. } = &self.task else {
            debug!(
                ?observation,
                "health check result while the task is not running; dropped"
            );
            return;
        };
        let info = info.clone();
        let Some(update) = self.checks.health_update(observation, now) else {
            return;
        };
        info!(task_id = %info.task_id.value, healthy = ?update.status.healthy, "task health changed; sending a health update");
        self.send_update(update.status);
        if update.first_healthy && self.hooks_configured {
            info!(task_id = %info.task_id.value, "task is healthy for the first time (after-healthy)");
            self.run_hooks(HookEvent::AfterHealthy, Some(info.clone()), None);
        }
        if update.kill {
            let grace = self.task_grace(None);
            warn!(task_id = %info.task_id.value, ?grace, "health check failed too many times in a row; killing the task");
            self.start_kill(KillCause::HealthCheck, grace, None, now);
        }
    }

    /// A generic check result: an update when its `check_status` changed.
    fn on_check_probe(&mut self, observation: &health::Observation, _now: Instant) {
        if !matches!(self.task, Task::Running { .. }) {
            debug!(
                ?observation,
                "check result while the task is not running; dropped"
            );
            return;
        }
        if let Some(status) = self.checks.check_update(observation) {
            self.send_update(status);
        }
    }
}

/// How long the task's output may drain: the configured time, but never
/// past an acknowledgement deadline already set (a SHUTDOWN's budget: the
/// agent destroys the container at its end), leaving half of what remains
/// for the update itself.
fn drain_budget(configured: Duration, ack_deadline: Option<Instant>, now: Instant) -> Duration {
    match ack_deadline {
        Some(by) => configured.min(by.saturating_duration_since(now) / 2),
        None => configured,
    }
}

/// The terminal state of a task killed before its process started.
fn terminal_state_before_start(cause: KillCause) -> TaskState {
    match cause {
        KillCause::HookFailure | KillCause::MaxCompletionTime => TaskState::TaskFailed,
        _ => TaskState::TaskKilled,
    }
}
