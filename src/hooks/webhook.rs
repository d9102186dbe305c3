//! The `webhook` hook: POSTs every event's JSON document (the same document
//! hook scripts read on stdin) to each of `HOOK_EXECUTOR_WEBHOOK_URLS`, with a
//! timeout per attempt and up to three attempts (250 ms, then 500 ms apart).
//! A failure is logged; only on
//! `before-start` with `HOOK_EXECUTOR_WEBHOOK_REQUIRED=true` does it veto.

use std::time::Duration;

use reqwest::Method;

use super::{Hook, HookContext, HookError, HookEvent, HookFuture};
use crate::{agent::backoff::Backoff, net::http};

/// Attempts per URL and event.
const ATTEMPTS: u32 = 3;

/// Delay before the second attempt; it doubles before each further one.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// All waits between the attempts of one URL (250 ms + 500 ms).
const RETRY_WAITS: Duration = Duration::from_millis(750);

/// Webhook settings.
#[derive(Debug, Clone)]
pub(crate) struct WebhookHook {
    /// Where to POST.
    pub urls: Vec<String>,
    /// Whether a failure on before-start vetoes the launch.
    pub required: bool,
    /// Timeout of each attempt.
    pub timeout: Duration,
}

impl WebhookHook {
    async fn post_all(&self, ctx: &HookContext) -> Result<(), HookError> {
        let body = ctx.document().to_string().into_bytes();
        let mut failures = Vec::new();
        for url in &self.urls {
            if let Err(e) = self.post(url, &body).await {
                tracing::warn!(%url, event = %ctx.event, reason = %e, "webhook failed");
                failures.push(e);
            }
        }
        match failures.into_iter().next() {
            Some(e) if self.required && ctx.event == HookEvent::BeforeStart => Err(e),
            _ => Ok(()),
        }
    }

    async fn post(&self, url: &str, body: &[u8]) -> Result<(), HookError> {
        let mut backoff = Backoff::doubling(FIRST_RETRY, RETRY_WAITS);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match http::send(Method::POST, url, &[], Some(body.to_vec()), self.timeout).await {
                Ok(r) if r.is_success() => return Ok(()),
                Ok(r) => last = format!("{url} answered {}: {}", r.status, r.body.trim()),
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Err(HookError::new(format!(
            "webhook: {last} (after {ATTEMPTS} attempts)"
        )))
    }
}

impl Hook for WebhookHook {
    fn name(&self) -> &'static str {
        "webhook"
    }
    fn extra_time(&self, _event: HookEvent) -> Duration {
        // Three attempts with backoff per URL may legitimately exceed the
        // generic hook timeout.
        self.timeout
            .saturating_mul(ATTEMPTS)
            .saturating_add(RETRY_WAITS)
            .saturating_mul(u32::try_from(self.urls.len()).unwrap_or(u32::MAX))
    }
    fn before_start<'a>(
        &'a self,
        ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<Vec<(String, String)>, HookError>> {
        Box::pin(async move { self.post_all(ctx).await.map(|()| Vec::new()) })
    }
    fn after_start<'a>(&'a self, ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(self.post_all(ctx))
    }
    fn after_healthy<'a>(&'a self, ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(self.post_all(ctx))
    }
    fn before_terminate<'a>(
        &'a self,
        ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(self.post_all(ctx))
    }
}
