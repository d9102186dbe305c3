//! The SUBSCRIBE loop and the per-subscription update sender. Both only move
//! bytes and report to the owner's inbox; the owner decides everything.
//!
//! Reconnect cadence follows the Mesos executor library: after a stream that
//! was open breaks, the first attempt is immediate (the agent's re-registration
//! window after a restart is only 2 s by default); after a failed attempt the
//! next comes after a uniform random delay in `[0, backoff_max]`
//! ([`Backoff::reconnect`]). Only one SUBSCRIBE is ever in flight. The owner
//! stops the loop by answering a [`Report::SubscribeRequest`] with `None`.
//!
//! Both loops report through [`Report`], which the owner's inbox type
//! converts from (`From<Report>`): this module knows nothing of the owner.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{backoff::Backoff, updates, AgentClient, AgentError, CallConnection, StreamItem};
use crate::proto::{
    executor::{Call, Event},
    v1,
};

/// What the subscription and the update sender tell the owner.
#[derive(Debug)]
pub(crate) enum Report {
    /// About to SUBSCRIBE: the owner answers with the call (carrying the
    /// unacknowledged tasks and updates), or `None` to stop the loop.
    SubscribeRequest(oneshot::Sender<Option<Call>>),
    /// SUBSCRIBE was answered `200 OK`; events follow.
    StreamOpened,
    /// A SUBSCRIBE attempt failed.
    SubscribeFailed(AgentError),
    /// An event from the agent.
    Event(Box<Event>),
    /// The event stream ended.
    Disconnected(String),
    /// The agent answered `202 Accepted` to the UPDATE with this uuid.
    UpdateAccepted(Vec<u8>),
    /// The agent refused an UPDATE (4xx); it stays unacknowledged.
    UpdateRefused {
        /// The update's uuid.
        uuid: Vec<u8>,
        /// What the agent said.
        error: String,
    },
}

/// Interval of our HEARTBEAT calls, as the executor library (30 min).
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// Runs until the owner declines to subscribe again or its inbox is gone.
pub(crate) async fn subscribe_loop<I: From<Report>>(
    client: AgentClient,
    inbox: mpsc::Sender<I>,
    backoff_max: Duration,
    max_record_len: usize,
) {
    let mut backoff = Backoff::reconnect(backoff_max);
    loop {
        let (reply, request) = oneshot::channel();
        if inbox
            .send(Report::SubscribeRequest(reply).into())
            .await
            .is_err()
        {
            return;
        }
        let Ok(Some(call)) = request.await else {
            return;
        };
        match client.subscribe(&call, max_record_len).await {
            Ok(mut stream) => {
                backoff.reset();
                if inbox.send(Report::StreamOpened.into()).await.is_err() {
                    return;
                }
                let reason = loop {
                    match stream.next().await {
                        Ok(StreamItem::Event(event)) => {
                            if inbox.send(Report::Event(event).into()).await.is_err() {
                                return;
                            }
                        }
                        Ok(StreamItem::Garbage { len, error }) => {
                            tracing::error!(len, cause = %error, "skipping a {len}-byte record that is not a valid Event");
                        }
                        Err(end) => break end.to_string(),
                    }
                };
                if inbox
                    .send(Report::Disconnected(reason).into())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                if inbox
                    .send(Report::SubscribeFailed(error).into())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let delay = backoff.next_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// Sends the updates of one subscription, in order, on one persistent call
/// connection. A retryable failure (5xx, timeout, broken connection) is
/// retried with the *same* uuid after a doubling delay (100 ms up to 5 s,
/// starting over for each update); the agent dedups by
/// uuid, so this is safe. A refusal (4xx) is reported and the update stays in
/// the unacknowledged set for the next SUBSCRIBE. The owner aborts this task
/// when the subscription ends.
pub(crate) async fn send_updates<I: From<Report>>(
    mut conn: CallConnection,
    mut queue: mpsc::UnboundedReceiver<v1::TaskStatus>,
    inbox: mpsc::Sender<I>,
    framework_id: String,
    executor_id: String,
) {
    // Open the call connection now, not with the first update: TASK_STARTING
    // then goes out without a TCP and HTTP handshake in front of it.
    conn.open().await;
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + HEARTBEAT_INTERVAL,
        HEARTBEAT_INTERVAL,
    );
    let mut backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            status = queue.recv() => {
                let Some(status) = status else { return };
                let uuid = status.uuid.clone().unwrap_or_default();
                let state = status.state().as_str_name();
                let label = format!("{} {}", status.state().as_str_name(), updates::uuid_text(&status));
                let call = updates::update_call(&framework_id, &executor_id, status);
                backoff.reset();
                loop {
                    match conn.send(&call).await {
                        Ok(()) => {
                            crate::metrics::get().agent.updates_sent.with_label_values(&[state]).inc();
                            tracing::debug!(update = %label, "update accepted by the agent");
                            if inbox.send(Report::UpdateAccepted(uuid).into()).await.is_err() {
                                return;
                            }
                            break;
                        }
                        Err(error) if error.is_retryable() => {
                            let delay = backoff.next_delay();
                            crate::metrics::get().agent.updates_retried.inc();
                            tracing::warn!(update = %label, cause = %error, retry_in = ?delay, "update not delivered; retrying with the same uuid");
                            tokio::time::sleep(delay).await;
                        }
                        Err(error) => {
                            if inbox.send(Report::UpdateRefused { uuid, error: error.to_string() }.into()).await.is_err() {
                                return;
                            }
                            break;
                        }
                    }
                }
            }
            _ = heartbeat.tick() => {
                if let Err(error) = conn.send(&updates::heartbeat_call(&framework_id, &executor_id)).await {
                    tracing::warn!(cause = %error, "HEARTBEAT call failed");
                }
            }
        }
    }
}
