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

pub mod consul;
pub mod exec;
pub mod policy;
pub mod webhook;

use std::{collections::BTreeMap, fmt, future::Future, path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use crate::{proto::v1, task::process::Reaper};

/// When a chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
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
    pub fn as_str(self) -> &'static str {
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

/// Why a hook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct HookError {
    /// Human-readable reason, put in TASK_FAILED messages.
    pub reason: String,
}

impl HookError {
    /// A failure with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

/// What a chain run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainResult {
    /// Every hook succeeded; `env` holds the variables added by before-start hooks.
    Ok {
        /// Variables for the task, in the order they were added.
        env: Vec<(String, String)>,
    },
    /// A hook failed (before-start, after-start, after-healthy).
    Failed {
        /// The hook's name.
        hook: &'static str,
        /// Its reason.
        reason: String,
    },
}

/// Everything a hook may look at. Cheap to clone (shared parts are `Arc`s).
#[derive(Clone)]
pub struct HookContext {
    /// The event being run.
    pub event: HookEvent,
    /// The task, when there is one.
    pub task: Option<Arc<v1::TaskInfo>>,
    /// `MESOS_FRAMEWORK_ID`.
    pub framework_id: String,
    /// `MESOS_EXECUTOR_ID`.
    pub executor_id: String,
    /// The agent id, from SUBSCRIBED when known.
    pub agent_id: Option<String>,
    /// The agent's hostname, from SUBSCRIBED when known.
    pub agent_hostname: Option<String>,
    /// The sandbox.
    pub sandbox: PathBuf,
    /// The executor's environment minus settings and secrets: the base of a
    /// hook script's environment.
    pub base_env: Arc<BTreeMap<String, String>>,
    /// Variables added by earlier before-start hooks in this chain run.
    pub added_env: Vec<(String, String)>,
    /// For spawning hook processes.
    pub reaper: Reaper,
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
    pub fn task_id(&self) -> &str {
        self.task.as_ref().map_or("", |t| t.task_id.value.as_str())
    }

    /// The JSON document hook scripts and webhooks receive: the event, the ids,
    /// the sandbox and the TaskInfo in Mesos JSON field names.
    #[must_use]
    pub fn document(&self) -> serde_json::Value {
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
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One hook: an async method per event; the defaults do nothing.
pub trait Hook: Send + Sync {
    /// The name used in `HOOK_EXECUTOR_HOOKS` and in messages.
    fn name(&self) -> &'static str;

    /// Extra time this hook needs on top of the hook timeout for `event`
    /// (the Consul drain wait).
    fn extra_time(&self, _event: HookEvent) -> Duration {
        Duration::ZERO
    }

    /// Before the task starts; may add environment variables or veto.
    fn before_start<'a>(&'a self, _ctx: &'a HookContext) -> HookFuture<'a, Result<Vec<(String, String)>, HookError>> {
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
    fn before_terminate<'a>(&'a self, _ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The configured hooks, in order.
#[derive(Clone, Default)]
pub struct HookChain {
    hooks: Vec<Arc<dyn Hook>>,
    timeout: Duration,
}

impl fmt::Debug for HookChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookChain").field("hooks", &self.names()).field("timeout", &self.timeout).finish()
    }
}

impl HookChain {
    /// A chain of `hooks`, each call bounded by `timeout`.
    #[must_use]
    pub fn new(hooks: Vec<Arc<dyn Hook>>, timeout: Duration) -> Self {
        Self { hooks, timeout }
    }

    /// Whether there are no hooks at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// The hook names, in order.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.hooks.iter().map(|h| h.name()).collect()
    }

    /// Runs the chain for `ctx.event` within `budget` (the whole chain may not
    /// take longer; used for before-terminate inside the kill grace).
    pub async fn run(&self, mut ctx: HookContext, budget: Option<Duration>) -> ChainResult {
        let event = ctx.event;
        let started = tokio::time::Instant::now();
        let mut failure: Option<(&'static str, String)> = None;
        for hook in &self.hooks {
            let mut limit = self.timeout + hook.extra_time(event);
            if let Some(budget) = budget {
                limit = limit.min(budget.saturating_sub(started.elapsed()));
            }
            let name = hook.name();
            let result = tokio::time::timeout(limit, call(hook.as_ref(), &ctx)).await;
            let outcome = match result {
                Ok(Ok(env)) => {
                    if !env.is_empty() {
                        tracing::info!(hook = name, %event, count = env.len(), "hook added task environment variables");
                    }
                    ctx.added_env.extend(env);
                    tracing::debug!(hook = name, %event, "hook succeeded");
                    continue;
                }
                Ok(Err(e)) => e.reason,
                Err(_) => format!("timed out after {limit:?}"),
            };
            if event == HookEvent::BeforeTerminate {
                tracing::warn!(hook = name, %event, reason = %outcome, "hook failed; continuing with the kill");
                failure.get_or_insert((name, outcome));
                continue;
            }
            tracing::error!(hook = name, %event, reason = %outcome, "hook failed");
            return ChainResult::Failed { hook: name, reason: outcome };
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
pub fn terminate_budget(grace: Duration) -> Duration {
    grace.saturating_sub(Duration::from_secs(1)).max(grace / 2)
}

/// Builds the configured chain (names were validated with the configuration).
#[must_use]
pub fn build_chain(settings: &crate::config::HookSettings, call_timeout: Duration) -> HookChain {
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
                "exec" => settings.dir.clone().map(|dir| Arc::new(exec::ExecHook::new(dir)) as Arc<dyn Hook>),
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
        fn before_start<'a>(&'a self, ctx: &'a HookContext) -> HookFuture<'a, Result<Vec<(String, String)>, HookError>> {
            Box::pin(async move {
                self.seen.lock().map(|mut s| s.push(ctx.added_env.clone())).ok();
                tokio::time::sleep(self.sleep).await;
                if self.fail {
                    Err(HookError::new("no"))
                } else {
                    Ok(self.env.clone())
                }
            })
        }
        fn before_terminate<'a>(&'a self, _ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
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

    fn scripted(name: &'static str, env: &[(&str, &str)], fail: bool, sleep_ms: u64) -> Arc<Scripted> {
        Arc::new(Scripted {
            name,
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
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
            reaper: Reaper::for_tests(),
        }
    }

    #[tokio::test]
    async fn before_start_accumulates_env_and_later_hooks_see_it() {
        let a = scripted("a", &[("A", "1")], false, 0);
        let b = scripted("b", &[("B", "2")], false, 0);
        let chain = HookChain::new(vec![a.clone(), b.clone()], Duration::from_secs(1));
        let result = chain.run(ctx(HookEvent::BeforeStart).await, None).await;
        assert_eq!(result, ChainResult::Ok { env: vec![("A".into(), "1".into()), ("B".into(), "2".into())] });
        assert_eq!(b.seen.lock().map(|s| s[0].clone()).unwrap_or_default(), vec![("A".to_owned(), "1".to_owned())]);
    }

    #[tokio::test]
    async fn first_failure_vetoes_and_stops_the_chain() {
        let a = scripted("a", &[], true, 0);
        let b = scripted("b", &[], false, 0);
        let chain = HookChain::new(vec![a, b.clone()], Duration::from_secs(1));
        let result = chain.run(ctx(HookEvent::BeforeStart).await, None).await;
        assert_eq!(result, ChainResult::Failed { hook: "a", reason: "no".into() });
        assert!(b.seen.lock().map(|s| s.is_empty()).unwrap_or(false), "b must not run after a vetoed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_hook_times_out() {
        let slow = scripted("slow", &[], false, 60_000);
        let chain = HookChain::new(vec![slow], Duration::from_secs(2));
        let result = chain.run(ctx(HookEvent::BeforeStart).await, None).await;
        assert!(matches!(result, ChainResult::Failed { hook: "slow", ref reason } if reason.contains("timed out")));
    }

    #[tokio::test(start_paused = true)]
    async fn before_terminate_runs_every_hook_within_the_budget() {
        let a = scripted("a", &[], true, 0);
        let b = scripted("b", &[], false, 60_000);
        let c = scripted("c", &[], false, 0);
        let chain = HookChain::new(vec![a.clone(), b.clone(), c.clone()], Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        let result = chain.run(ctx(HookEvent::BeforeTerminate).await, Some(Duration::from_secs(5))).await;
        assert!(start.elapsed() <= Duration::from_secs(5));
        assert_eq!(result, ChainResult::Failed { hook: "a", reason: "no".into() });
        for h in [a, b, c] {
            assert_eq!(h.seen.lock().map(|s| s.len()).unwrap_or(0), 1, "{} ran once", h.name);
        }
    }

    #[test]
    fn terminate_budget_leaves_time_for_sigterm() {
        assert_eq!(terminate_budget(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(terminate_budget(Duration::from_secs(3)), Duration::from_secs(2));
        assert_eq!(terminate_budget(Duration::from_secs(1)), Duration::from_millis(500));
        assert_eq!(terminate_budget(Duration::ZERO), Duration::ZERO);
    }
}
