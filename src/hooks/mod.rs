//! Hook chains around the task's life.
//!
//! A [`Hook`] is a trait object with one async method per [`HookEvent`]; a
//! [`HookChain`] is the configured list (`HOOK_EXECUTOR_HOOKS`, in order). The
//! executor's owner never runs a chain itself: it spawns [`HookChain::run`] and
//! gets the [`ChainResult`] back through its inbox, so a slow or hung hook never
//! blocks the state loop. Each hook call is bounded by its timeout.
//!
//! Semantics per event:
//! - `before-start`: hooks run in order; each may return environment variables
//!   for the task (later hooks see earlier additions); the first failure vetoes
//!   the launch and stops the chain.
//! - `after-start`, `after-healthy`: the first failure stops the chain and is
//!   reported (the executor then kills the task: TASK_FAILED with the reason).
//! - `before-terminate`: every hook runs even if an earlier one failed (a failed
//!   webhook must not skip the Consul deregistration); failures are only logged.

pub(crate) mod consul;
pub(crate) mod exec;
pub(crate) mod policy;
pub(crate) mod strict;
pub(crate) mod webhook;

use std::{
    collections::BTreeMap, fmt, future::Future, path::PathBuf, pin::Pin, sync::Arc, time::Duration,
};

use crate::{
    proto::v1,
    task::process::{ExitLost, Reaper, SpawnError},
    task::termination::ExitOutcome,
};

/// When a chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HookEvent {
    /// After LAUNCH, before the task's process exists.
    BeforeStart,
    /// Right after the task's process started.
    AfterStart,
    /// On the first healthy health-check result (right after `after-start`
    /// for a task without a health check).
    AfterHealthy,
    /// Once, before the task is first signalled, on every path to termination
    /// (and before the executor exits when no task was launched).
    BeforeTerminate,
}

impl HookEvent {
    /// The event's name, as in hook directories and JSON (`before-start`).
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BeforeStart => "before-start",
            Self::AfterStart => "after-start",
            Self::AfterHealthy => "after-healthy",
            Self::BeforeTerminate => "before-terminate",
        }
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a hook failed, by kind: the executor maps the kind (not the hook's
/// name) to the Mesos reason of a TASK_FAILED. Messages go into TASK_FAILED
/// messages, which show only the top level, so they repeat their cause's
/// text; the cause is also the `source()`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    /// The launch breaks the launch policy (REASON_TASK_UNAUTHORIZED).
    #[error(transparent)]
    Policy(#[from] policy::Violation),
    /// The directory of an event's scripts could not be read.
    #[error("reading {}: {cause}", dir.display())]
    ScriptDir {
        /// `<hooks dir>/<event>.d`.
        dir: PathBuf,
        /// OS error.
        #[source]
        cause: std::io::Error,
    },
    /// A script could not be started.
    #[error("{script}: cannot start: {cause}")]
    ScriptStart {
        /// The script's file name.
        script: String,
        /// Why.
        #[source]
        cause: SpawnError,
    },
    /// A script's exit status was lost.
    #[error("{script}: lost track of the script's exit")]
    ScriptLost {
        /// The script's file name.
        script: String,
        /// Why.
        #[source]
        cause: ExitLost,
    },
    /// A script exited non-zero or was killed.
    #[error("{script} {}: {stderr}", describe(*.outcome))]
    ScriptFailed {
        /// The script's file name.
        script: String,
        /// How it ended.
        outcome: ExitOutcome,
        /// The end of its stderr, lines joined with ` | `.
        stderr: String,
    },
    /// A before-start script printed a line that is not `KEY=VALUE`.
    #[error("{script} printed an invalid line {line}: {text:?} (expected KEY=VALUE with KEY of letters, digits and _)")]
    ScriptOutput {
        /// The script's file name.
        script: String,
        /// 1-based line number.
        line: usize,
        /// The line's start.
        text: String,
    },
    /// A hook file or directory is not trusted (strict modes).
    #[error(transparent)]
    Untrusted(#[from] strict::Untrusted),
    /// The task's user, whom the scripts should run as, cannot be used.
    #[error("cannot run hooks as the task's user {user:?}: {cause}")]
    HookUser {
        /// The user name.
        user: String,
        /// Why.
        #[source]
        cause: SpawnError,
    },
    /// A before-start script printed more than the limit.
    #[error("{script} printed more than {limit} bytes on stdout (HOOK_EXECUTOR_HOOK_MAX_OUTPUT); its output is not used")]
    OutputTooLarge {
        /// The script's file name.
        script: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// A script exited, but something it left behind kept its output open.
    #[error("{script} {}, but a process it left behind kept its stdout or stderr open for {window:?} more; that process group was killed", describe(*.outcome))]
    OutputHeld {
        /// The script's file name.
        script: String,
        /// How the script itself ended.
        outcome: ExitOutcome,
        /// How long the pipes were given.
        window: Duration,
    },
    /// The hook did not finish within its time (set by the chain).
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// A service the hook calls (Consul, a webhook URL) failed or refused;
    /// the text names the service and what it answered.
    #[error("{0}")]
    Service(String),
}

impl HookError {
    /// A [`HookError::Service`] failure with this description.
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self::Service(reason.into())
    }
}

/// "exited with status 3", "was killed by SIGKILL".
fn describe(outcome: ExitOutcome) -> String {
    match outcome {
        ExitOutcome::Exited(code) => format!("exited with status {code}"),
        ExitOutcome::Signaled { signal, .. } => format!(
            "was killed by {}",
            crate::task::termination::signal_name(signal)
        ),
        ExitOutcome::NotExecuted { errno } => format!(
            "could not be executed: {}",
            std::io::Error::from_raw_os_error(errno)
        ),
    }
}

/// What a chain run ended with.
#[derive(Debug)]
pub(crate) enum ChainResult {
    /// Every hook succeeded; `env` holds the variables added by before-start hooks.
    Ok {
        /// Variables for the task, in the order they were added.
        env: Vec<(String, String)>,
    },
    /// A hook failed (before-start, after-start, after-healthy; for
    /// before-terminate, the first failure after every hook ran).
    Failed {
        /// The hook's name, for messages.
        hook: &'static str,
        /// What failed; its kind decides the Mesos reason.
        reason: HookError,
    },
}

/// Everything a hook may look at. Cheap to clone (shared parts are `Arc`s).
#[derive(Clone)]
pub(crate) struct HookContext {
    /// The event being run.
    pub(crate) event: HookEvent,
    /// The task, when there is one.
    pub(crate) task: Option<Arc<v1::TaskInfo>>,
    /// `MESOS_FRAMEWORK_ID`.
    pub(crate) framework_id: String,
    /// `MESOS_EXECUTOR_ID`.
    pub(crate) executor_id: String,
    /// The agent id, from SUBSCRIBED when known.
    pub(crate) agent_id: Option<String>,
    /// The agent's hostname, from SUBSCRIBED when known.
    pub(crate) agent_hostname: Option<String>,
    /// The sandbox.
    pub(crate) sandbox: PathBuf,
    /// The executor's environment minus settings and secrets: the base of a
    /// hook script's environment.
    pub(crate) base_env: Arc<BTreeMap<String, String>>,
    /// Variables added by earlier before-start hooks in this chain run.
    pub(crate) added_env: Vec<(String, String)>,
    /// The user the task runs as (`CommandInfo.user` of the task, else of
    /// the executor), for exec hooks run as that user.
    pub(crate) task_user: Option<String>,
    /// For spawning hook processes.
    pub(crate) reaper: Reaper,
}

impl fmt::Debug for HookContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookContext")
            .field("event", &self.event)
            .field("task_id", &self.task_id())
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl HookContext {
    /// The task id, or "" when no task was launched.
    #[must_use]
    pub(crate) fn task_id(&self) -> &str {
        self.task.as_ref().map_or("", |t| t.task_id.value.as_str())
    }

    /// The JSON document hook scripts and webhooks receive: the event, the ids,
    /// the sandbox and the TaskInfo in Mesos JSON field names.
    #[must_use]
    pub(crate) fn document(&self) -> serde_json::Value {
        serde_json::json!({
            "event": self.event.as_str(),
            "framework_id": self.framework_id,
            "executor_id": self.executor_id,
            "agent_id": self.agent_id,
            "task_id": self.task.as_ref().map(|t| t.task_id.value.clone()),
            "sandbox": self.sandbox.display().to_string(),
            "task": self.task.as_ref().and_then(|t| serde_json::to_value(t.as_ref()).ok()),
        })
    }
}

/// A boxed future, so that [`Hook`] stays object-safe.
pub(crate) type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One hook: an async method per event; the defaults do nothing.
pub(crate) trait Hook: Send + Sync {
    /// The name used in `HOOK_EXECUTOR_HOOKS` and in messages.
    fn name(&self) -> &'static str;

    /// Extra time this hook needs on top of the hook timeout for `event`
    /// (the Consul drain wait).
    fn extra_time(&self, _event: HookEvent) -> Duration {
        Duration::ZERO
    }

    /// Before the task starts; may add environment variables or veto.
    fn before_start<'a>(
        &'a self,
        _ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<Vec<(String, String)>, HookError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// After the task's process started.
    fn after_start<'a>(&'a self, _ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async { Ok(()) })
    }

    /// On the first healthy result.
    fn after_healthy<'a>(&'a self, _ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async { Ok(()) })
    }

    /// Before the task is signalled.
    fn before_terminate<'a>(
        &'a self,
        _ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The configured hooks, in order.
#[derive(Clone, Default)]
pub(crate) struct HookChain {
    hooks: Vec<Arc<dyn Hook>>,
    timeout: Duration,
}

impl fmt::Debug for HookChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookChain")
            .field("hooks", &self.names())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HookChain {
    /// A chain of `hooks`, each call bounded by `timeout`.
    #[must_use]
    pub(crate) fn new(hooks: Vec<Arc<dyn Hook>>, timeout: Duration) -> Self {
        Self { hooks, timeout }
    }

    /// Whether there are no hooks at all.
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// The hook names, in order.
    #[must_use]
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.hooks.iter().map(|h| h.name()).collect()
    }

    /// Runs the chain for `ctx.event` within `budget` (the whole chain may not
    /// take longer; used for before-terminate inside the kill grace).
    pub(crate) async fn run(&self, mut ctx: HookContext, budget: Option<Duration>) -> ChainResult {
        let event = ctx.event;
        let started = tokio::time::Instant::now();
        let mut failure: Option<(&'static str, HookError)> = None;
        for hook in &self.hooks {
            let mut limit = self.timeout.saturating_add(hook.extra_time(event));
            if let Some(budget) = budget {
                limit = limit.min(budget.saturating_sub(started.elapsed()));
            }
            let name = hook.name();
            let called = tokio::time::Instant::now();
            let result = tokio::time::timeout(limit, call(hook.as_ref(), &ctx)).await;
            count_run(event, name, called.elapsed(), matches!(result, Ok(Ok(_))));
            let outcome = match result {
                Ok(Ok(env)) => {
                    if !env.is_empty() {
                        tracing::info!(hook = name, %event, count = env.len(), "hook added task environment variables");
                    }
                    ctx.added_env.extend(env);
                    tracing::debug!(hook = name, %event, "hook succeeded");
                    continue;
                }
                Ok(Err(e)) => e,
                Err(_) => HookError::TimedOut(limit),
            };
            if event == HookEvent::BeforeTerminate {
                tracing::warn!(hook = name, %event, reason = %outcome, "hook failed; continuing with the kill");
                failure.get_or_insert((name, outcome));
                continue;
            }
            tracing::error!(hook = name, %event, reason = %outcome, "hook failed");
            return ChainResult::Failed {
                hook: name,
                reason: outcome,
            };
        }
        match failure {
            Some((hook, reason)) => ChainResult::Failed { hook, reason },
            None => ChainResult::Ok { env: ctx.added_env },
        }
    }
}

async fn call(hook: &dyn Hook, ctx: &HookContext) -> Result<Vec<(String, String)>, HookError> {
    match ctx.event {
        HookEvent::BeforeStart => hook.before_start(ctx).await,
        HookEvent::AfterStart => hook.after_start(ctx).await.map(|()| Vec::new()),
        HookEvent::AfterHealthy => hook.after_healthy(ctx).await.map(|()| Vec::new()),
        HookEvent::BeforeTerminate => hook.before_terminate(ctx).await.map(|()| Vec::new()),
    }
}

/// The time before-terminate hooks may use out of a kill grace period: all but
/// one second, and at least half, so the task still gets a graceful SIGTERM.
#[must_use]
pub(crate) fn terminate_budget(grace: Duration) -> Duration {
    grace.saturating_sub(Duration::from_secs(1)).max(grace / 2)
}

/// Builds the configured chain (names were validated with the configuration).
#[must_use]
pub(crate) fn build_chain(
    settings: &crate::config::HookSettings,
    call_timeout: Duration,
) -> HookChain {
    let hooks = settings
        .chain
        .iter()
        .filter_map(|name| -> Option<Arc<dyn Hook>> {
            match name.as_str() {
                "policy" => Some(Arc::new(policy::PolicyHook {
                    allow_privileged: settings.allow_privileged,
                    allowed_host_paths: settings.allowed_host_paths.clone(),
                    allowed_users: settings.allowed_users.clone(),
                })),
                "exec" => settings.dir.clone().map(|dir| {
                    Arc::new(exec::ExecHook::new(
                        dir,
                        settings.exec_user,
                        settings.max_output,
                    )) as Arc<dyn Hook>
                }),
                "consul" => Some(Arc::new(consul::ConsulHook::new(
                    settings.consul_url.clone(),
                    settings.consul_token.clone(),
                    settings.consul_service_label.clone(),
                    settings.consul_address.clone(),
                    settings.consul_deregister_wait,
                    call_timeout,
                ))),
                "webhook" => Some(Arc::new(webhook::WebhookHook {
                    urls: settings.webhook_urls.clone(),
                    required: settings.webhook_required,
                    timeout: settings.webhook_timeout,
                })),
                _ => None,
            }
        })
        .collect();
    HookChain::new(hooks, settings.timeout)
}

/// Counts one hook call for the metrics (runs, failures, duration).
fn count_run(event: HookEvent, hook: &'static str, took: Duration, ok: bool) {
    let m = &crate::metrics::get().hooks;
    let event = event.to_string();
    let labels = [event.as_str(), hook];
    m.runs.with_label_values(&labels).inc();
    m.duration
        .with_label_values(&labels)
        .observe(took.as_secs_f64());
    if !ok {
        m.failures.with_label_values(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted {
        name: &'static str,
        env: Vec<(String, String)>,
        fail: bool,
        sleep: Duration,
        seen: std::sync::Mutex<Vec<Vec<(String, String)>>>,
    }

    impl Hook for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }
        fn before_start<'a>(
            &'a self,
            ctx: &'a HookContext,
        ) -> HookFuture<'a, Result<Vec<(String, String)>, HookError>> {
            Box::pin(async move {
                self.seen
                    .lock()
                    .map(|mut s| s.push(ctx.added_env.clone()))
                    .ok();
                tokio::time::sleep(self.sleep).await;
                if self.fail {
                    Err(HookError::new("no"))
                } else {
                    Ok(self.env.clone())
                }
            })
        }
        fn before_terminate<'a>(
            &'a self,
            _ctx: &'a HookContext,
        ) -> HookFuture<'a, Result<(), HookError>> {
            Box::pin(async move {
                self.seen.lock().map(|mut s| s.push(Vec::new())).ok();
                tokio::time::sleep(self.sleep).await;
                if self.fail {
                    Err(HookError::new("no"))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn scripted(
        name: &'static str,
        env: &[(&str, &str)],
        fail: bool,
        sleep_ms: u64,
    ) -> Arc<Scripted> {
        Arc::new(Scripted {
            name,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            fail,
            sleep: Duration::from_millis(sleep_ms),
            seen: std::sync::Mutex::new(Vec::new()),
        })
    }

    async fn ctx(event: HookEvent) -> HookContext {
        HookContext {
            event,
            task: None,
            framework_id: "f".into(),
            executor_id: "e".into(),
            agent_id: None,
            agent_hostname: None,
            sandbox: PathBuf::from("/tmp"),
            base_env: Arc::new(BTreeMap::new()),
            added_env: Vec::new(),
            task_user: None,
            reaper: Reaper::for_tests(),
        }
    }

    #[tokio::test]
    async fn before_start_accumulates_env_and_later_hooks_see_it() {
        let a = scripted("a", &[("A", "1")], false, 0);
        let b = scripted("b", &[("B", "2")], false, 0);
        let chain = HookChain::new(vec![a.clone(), b.clone()], Duration::from_secs(1));
        let result = chain.run(ctx(HookEvent::BeforeStart).await, None).await;
        assert!(
            matches!(result, ChainResult::Ok { env } if env == [("A".to_owned(), "1".to_owned()), ("B".to_owned(), "2".to_owned())])
        );
        assert_eq!(
            b.seen.lock().map(|s| s[0].clone()).unwrap_or_default(),
            vec![("A".to_owned(), "1".to_owned())]
        );
    }

    #[tokio::test]
    async fn first_failure_vetoes_and_stops_the_chain() {
        let a = scripted("a", &[], true, 0);
        let b = scripted("b", &[], false, 0);
        let chain = HookChain::new(vec![a, b.clone()], Duration::from_secs(1));
        let result = chain.run(ctx(HookEvent::BeforeStart).await, None).await;
        assert!(
            matches!(result, ChainResult::Failed { hook: "a", reason: HookError::Service(ref r) } if r == "no"),
            "{result:?}"
        );
        assert!(
            b.seen.lock().map(|s| s.is_empty()).unwrap_or(false),
            "b must not run after a vetoed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_hook_times_out() {
        let slow = scripted("slow", &[], false, 60_000);
        let chain = HookChain::new(vec![slow], Duration::from_secs(2));
        let result = chain.run(ctx(HookEvent::BeforeStart).await, None).await;
        assert!(
            matches!(result, ChainResult::Failed { hook: "slow", reason: HookError::TimedOut(d) } if d == Duration::from_secs(2)),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn before_terminate_runs_every_hook_within_the_budget() {
        let a = scripted("a", &[], true, 0);
        let b = scripted("b", &[], false, 60_000);
        let c = scripted("c", &[], false, 0);
        let chain = HookChain::new(
            vec![a.clone(), b.clone(), c.clone()],
            Duration::from_secs(30),
        );
        let start = tokio::time::Instant::now();
        let result = chain
            .run(
                ctx(HookEvent::BeforeTerminate).await,
                Some(Duration::from_secs(5)),
            )
            .await;
        assert!(start.elapsed() <= Duration::from_secs(5));
        assert!(
            matches!(result, ChainResult::Failed { hook: "a", reason: HookError::Service(ref r) } if r == "no"),
            "{result:?}"
        );
        for h in [a, b, c] {
            assert_eq!(
                h.seen.lock().map(|s| s.len()).unwrap_or(0),
                1,
                "{} ran once",
                h.name
            );
        }
    }

    #[tokio::test]
    async fn a_policy_refusal_keeps_its_kind_through_the_chain() {
        let policy = Arc::new(policy::PolicyHook::default());
        let webhook_like = scripted("webhook", &[], true, 0);
        let privileged = v1::TaskInfo {
            container: Some(v1::ContainerInfo {
                docker: Some(v1::container_info::DockerInfo {
                    privileged: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut context = ctx(HookEvent::BeforeStart).await;
        context.task = Some(Arc::new(privileged));
        let result = HookChain::new(vec![policy, webhook_like.clone()], Duration::from_secs(1))
            .run(context.clone(), None)
            .await;
        assert!(
            matches!(
                result,
                ChainResult::Failed {
                    hook: "policy",
                    reason: HookError::Policy(policy::Violation::Privileged)
                }
            ),
            "{result:?}"
        );
        // Another hook's refusal is not a policy refusal, whatever it is called.
        context.task = None;
        let result = HookChain::new(vec![webhook_like], Duration::from_secs(1))
            .run(context, None)
            .await;
        assert!(
            matches!(
                result,
                ChainResult::Failed {
                    reason: HookError::Service(_),
                    ..
                }
            ),
            "{result:?}"
        );
    }

    #[test]
    fn terminate_budget_leaves_time_for_sigterm() {
        assert_eq!(
            terminate_budget(Duration::from_secs(10)),
            Duration::from_secs(9)
        );
        assert_eq!(
            terminate_budget(Duration::from_secs(3)),
            Duration::from_secs(2)
        );
        assert_eq!(
            terminate_budget(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(terminate_budget(Duration::ZERO), Duration::ZERO);
    }
}
