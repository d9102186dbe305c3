//! A small Mesos v1 framework: the scheduler HTTP API of a real master
//! (`/api/v1/scheduler`), protobuf both ways. SUBSCRIBE keeps one streaming
//! response open (RecordIO-framed events); every other call is a separate POST
//! carrying the `Mesos-Stream-Id` the master returned, answered `202 Accepted`.
//! Every call has a timeout; the event stream is read with a bound on silence
//! (the master sends HEARTBEAT every 15 s) and through a bounded channel.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mesos_hook_executor::agent::recordio::RecordIoCodec;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::proto::scheduler::{call, event, offer, Call, Event, Filters, Offer, OfferId};
use crate::proto::v1;

/// Time limit of one call (other than the subscription stream).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on the event stream before it counts as broken (several
/// heartbeat intervals).
const STREAM_SILENCE: Duration = Duration::from_secs(60);
/// Largest event accepted from the master.
const MAX_EVENT: usize = 16 * 1024 * 1024;
/// Events buffered between the stream reader and the scenario.
const EVENT_BUFFER: usize = 256;

/// Why a framework call failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{call}: HTTP: {source}")]
    Http {
        call: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{call}: master answered {status}: {body}")]
    Status {
        call: &'static str,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("SUBSCRIBE: no Mesos-Stream-Id header in the answer")]
    NoStreamId,
    #[error("the event stream ended: {0}")]
    StreamEnded(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("the master sent ERROR: {0}")]
    MasterError(String),
    #[error("building the task from the offer: {0}")]
    Build(String),
}

type Result<T> = std::result::Result<T, SchedulerError>;

/// One subscribed framework.
pub struct Framework {
    client: reqwest::Client,
    url: String,
    stream_id: String,
    pub id: v1::FrameworkId,
    events: mpsc::Receiver<std::result::Result<Event, String>>,
    reader: tokio::task::JoinHandle<()>,
    /// Every status update received, in order (already acknowledged).
    pub updates: Vec<v1::TaskStatus>,
    /// Offers received and not yet used or declined.
    offers: Vec<Offer>,
}

impl Drop for Framework {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// FrameworkInfo for a test framework: checkpointing (so agent restarts are
/// recovered) and the TASK_KILLING_STATE capability.
fn framework_info(name: &str) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        user: whoami(),
        name: name.to_owned(),
        checkpoint: Some(true),
        failover_timeout: Some(0.0),
        hostname: Some("127.0.0.1".into()),
        capabilities: vec![v1::framework_info::Capability {
            r#type: Some(v1::framework_info::capability::Type::TaskKillingState as i32),
        }],
        ..Default::default()
    }
}

/// The user the tasks run as (the agent switches to it).
fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_owned(), |u| u.name)
}

impl Framework {
    /// Subscribes a new framework called `name` to the master at `master`
    /// (`ip:port`) and waits for SUBSCRIBED.
    pub async fn subscribe(master: &str, name: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(CALL_TIMEOUT)
            .build()
            .map_err(|source| SchedulerError::Http {
                call: "client",
                source,
            })?;
        let url = format!("http://{master}/api/v1/scheduler");
        let call = Call {
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: framework_info(name),
            }),
            ..Default::default()
        };
        let send = client
            .post(&url)
            .header("Content-Type", "application/x-protobuf")
            .header("Accept", "application/x-protobuf")
            .body(call.encode_to_vec())
            .send();
        let response = tokio::time::timeout(CALL_TIMEOUT, send)
            .await
            .map_err(|_| SchedulerError::Timeout(CALL_TIMEOUT, "SUBSCRIBE's answer".into()))?
            .map_err(|source| SchedulerError::Http {
                call: "SUBSCRIBE",
                source,
            })?;
        if response.status() != reqwest::StatusCode::OK {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(SchedulerError::Status {
                call: "SUBSCRIBE",
                status,
                body,
            });
        }
        let stream_id = response
            .headers()
            .get("Mesos-Stream-Id")
            .and_then(|v| v.to_str().ok())
            .ok_or(SchedulerError::NoStreamId)?
            .to_owned();
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let reader = tokio::spawn(read_events(response, tx));
        let mut framework = Self {
            client,
            url,
            stream_id,
            id: v1::FrameworkId::default(),
            events,
            reader,
            updates: Vec::new(),
            offers: Vec::new(),
        };
        let subscribed = framework
            .next_matching(CALL_TIMEOUT, "SUBSCRIBED", |e| {
                e.subscribed.as_ref().map(|s| s.framework_id.clone())
            })
            .await?;
        framework.id = subscribed;
        Ok(framework)
    }

    /// Sends one call (not SUBSCRIBE); the master answers 202.
    async fn call(&self, name: &'static str, mut call: Call) -> Result<()> {
        call.framework_id = Some(self.id.clone());
        let send = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/x-protobuf")
            .header("Mesos-Stream-Id", &self.stream_id)
            .timeout(CALL_TIMEOUT)
            .body(call.encode_to_vec())
            .send();
        let response = send
            .await
            .map_err(|source| SchedulerError::Http { call: name, source })?;
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let body = response.text().await.unwrap_or_default();
            return Err(SchedulerError::Status {
                call: name,
                status,
                body,
            });
        }
        Ok(())
    }

    /// The next event, handling the bookkeeping ones on the way: updates are
    /// recorded and acknowledged, offers kept, heartbeats dropped.
    async fn next_event(&mut self, deadline: Instant, what: &str) -> Result<Event> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match tokio::time::timeout(left, self.events.recv()).await {
                Err(_) => {
                    return Err(SchedulerError::Timeout(
                        left,
                        format!("{what} (updates so far: {})", self.update_summary()),
                    ))
                }
                Ok(None) => return Err(SchedulerError::StreamEnded("closed".into())),
                Ok(Some(Err(e))) => return Err(SchedulerError::StreamEnded(e)),
                Ok(Some(Ok(event))) => event,
            };
            match event.r#type.and_then(|t| event::Type::try_from(t).ok()) {
                Some(event::Type::Heartbeat) => continue,
                Some(event::Type::Error) => {
                    let message = event.error.map(|e| e.message).unwrap_or_default();
                    return Err(SchedulerError::MasterError(message));
                }
                Some(event::Type::Update) => {
                    if let Some(update) = &event.update {
                        self.acknowledge(&update.status).await?;
                        self.updates.push(update.status.clone());
                    }
                }
                Some(event::Type::Offers) => {
                    if let Some(offers) = &event.offers {
                        self.offers.extend(offers.offers.iter().cloned());
                    }
                }
                Some(event::Type::Rescind) => {
                    if let Some(r) = &event.rescind {
                        self.offers.retain(|o| o.id != r.offer_id);
                    }
                }
                _ => {}
            }
            return Ok(event);
        }
    }

    /// Reads events until `pick` returns something.
    async fn next_matching<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let event = self.next_event(deadline, what).await?;
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
        }
    }

    /// States seen so far, for messages.
    pub fn update_summary(&self) -> String {
        self.updates
            .iter()
            .map(|s| {
                format!(
                    "{}:{}{}",
                    s.task_id.value,
                    v1::TaskState::try_from(s.state).map_or("?", |t| t.as_str_name()),
                    s.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<()> {
        let (Some(uuid), Some(agent_id)) = (&status.uuid, &status.agent_id) else {
            return Ok(()); // master-generated (e.g. reconciliation): no ack
        };
        self.call(
            "ACKNOWLEDGE",
            Call {
                r#type: Some(call::Type::Acknowledge as i32),
                acknowledge: Some(call::Acknowledge {
                    agent_id: agent_id.clone(),
                    task_id: status.task_id.clone(),
                    uuid: uuid.clone(),
                }),
                ..Default::default()
            },
        )
        .await
    }

    /// Waits for an offer, launches the task `build` makes from it (one
    /// LAUNCH operation in an ACCEPT) and declines every other offer held.
    /// If `build` fails, every offer is declined and nothing is launched.
    pub async fn launch(
        &mut self,
        timeout: Duration,
        build: impl FnOnce(&Offer) -> std::result::Result<v1::TaskInfo, String>,
    ) -> Result<v1::TaskInfo> {
        let deadline = Instant::now() + timeout;
        while self.offers.is_empty() {
            self.next_event(deadline, "an offer").await?;
        }
        let task = match build(&self.offers[0]) {
            Ok(task) => task,
            Err(e) => {
                self.decline_held().await?;
                return Err(SchedulerError::Build(e));
            }
        };
        let offer = self.offers.remove(0);
        self.call(
            "ACCEPT",
            Call {
                r#type: Some(call::Type::Accept as i32),
                accept: Some(call::Accept {
                    offer_ids: vec![offer.id.clone()],
                    operations: vec![offer::Operation {
                        r#type: Some(offer::operation::Type::Launch as i32),
                        launch: Some(offer::operation::Launch {
                            task_infos: vec![task.clone()],
                        }),
                    }],
                    filters: Some(Filters {
                        refuse_seconds: Some(1.0),
                    }),
                }),
                ..Default::default()
            },
        )
        .await?;
        self.decline_held().await?;
        Ok(task)
    }

    /// Declines the offers held, for a long time: one task per framework.
    async fn decline_held(&mut self) -> Result<()> {
        if self.offers.is_empty() {
            return Ok(());
        }
        let ids: Vec<OfferId> = self.offers.drain(..).map(|o| o.id).collect();
        self.call(
            "DECLINE",
            Call {
                r#type: Some(call::Type::Decline as i32),
                decline: Some(call::Decline {
                    offer_ids: ids,
                    filters: Some(Filters {
                        refuse_seconds: Some(3600.0),
                    }),
                }),
                ..Default::default()
            },
        )
        .await
    }

    /// Waits for an update of `task` that satisfies `want`; returns it.
    pub async fn wait_update(
        &mut self,
        task: &v1::TaskId,
        timeout: Duration,
        what: &str,
        want: impl Fn(&v1::TaskStatus) -> bool,
    ) -> Result<v1::TaskStatus> {
        if let Some(seen) = self.updates.iter().find(|s| &s.task_id == task && want(s)) {
            return Ok(seen.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let event = self.next_event(deadline, what).await?;
            self.decline_held().await?;
            if let Some(update) = event.update {
                if &update.status.task_id == task && want(&update.status) {
                    return Ok(update.status);
                }
            }
        }
    }

    /// Waits for an update of `task` in `state`.
    pub async fn wait_state(
        &mut self,
        task: &v1::TaskId,
        state: v1::TaskState,
        timeout: Duration,
    ) -> Result<v1::TaskStatus> {
        self.wait_update(task, timeout, state.as_str_name(), |s| {
            s.state == state as i32
        })
        .await
    }

    /// Waits for the first terminal update of `task`.
    pub async fn wait_terminal(
        &mut self,
        task: &v1::TaskId,
        timeout: Duration,
    ) -> Result<v1::TaskStatus> {
        self.wait_update(task, timeout, "a terminal update", |s| {
            v1::TaskState::try_from(s.state).is_ok_and(is_terminal)
        })
        .await
    }

    /// KILL, with an optional kill policy that overrides the task's.
    pub async fn kill(&self, task: &v1::TaskInfo, grace: Option<Duration>) -> Result<()> {
        let kill_policy = grace.map(|g| v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: i64::try_from(g.as_nanos()).unwrap_or(i64::MAX),
            }),
        });
        self.call(
            "KILL",
            Call {
                r#type: Some(call::Type::Kill as i32),
                kill: Some(call::Kill {
                    task_id: task.task_id.clone(),
                    agent_id: Some(task.agent_id.clone()),
                    kill_policy,
                }),
                ..Default::default()
            },
        )
        .await
    }

    /// SHUTDOWN of one executor.
    pub async fn shutdown(&self, executor: &v1::ExecutorId, agent: &v1::AgentId) -> Result<()> {
        self.call(
            "SHUTDOWN",
            Call {
                r#type: Some(call::Type::Shutdown as i32),
                shutdown: Some(call::Shutdown {
                    executor_id: executor.clone(),
                    agent_id: agent.clone(),
                }),
                ..Default::default()
            },
        )
        .await
    }

    /// Explicit reconciliation of `task`: the master answers with an update
    /// (reason REASON_RECONCILIATION) carrying the task's latest state.
    pub async fn reconcile(
        &mut self,
        task: &v1::TaskInfo,
        timeout: Duration,
    ) -> Result<v1::TaskStatus> {
        self.call(
            "RECONCILE",
            Call {
                r#type: Some(call::Type::Reconcile as i32),
                reconcile: Some(call::Reconcile {
                    tasks: vec![call::reconcile::Task {
                        task_id: task.task_id.clone(),
                        agent_id: Some(task.agent_id.clone()),
                    }],
                }),
                ..Default::default()
            },
        )
        .await?;
        let deadline = Instant::now() + timeout;
        loop {
            let event = self
                .next_event(deadline, "the reconciliation update")
                .await?;
            if let Some(update) = event.update {
                if update.status.task_id == task.task_id
                    && update.status.reason == Some(v1::task_status::Reason::Reconciliation as i32)
                {
                    return Ok(update.status);
                }
            }
        }
    }

    /// TEARDOWN: the master removes the framework and shuts its executors down.
    pub async fn teardown(self) -> Result<()> {
        self.call(
            "TEARDOWN",
            Call {
                r#type: Some(call::Type::Teardown as i32),
                ..Default::default()
            },
        )
        .await
    }
}

/// Terminal task states.
pub fn is_terminal(state: v1::TaskState) -> bool {
    use v1::TaskState as S;
    matches!(
        state,
        S::TaskFinished
            | S::TaskFailed
            | S::TaskKilled
            | S::TaskLost
            | S::TaskError
            | S::TaskDropped
            | S::TaskGone
            | S::TaskGoneByOperator
    )
}

/// Reads the SUBSCRIBE response body: RecordIO records, each an Event.
async fn read_events(
    response: reqwest::Response,
    tx: mpsc::Sender<std::result::Result<Event, String>>,
) {
    let body = response
        .bytes_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let mut records = FramedRead::new(
        tokio_util::io::StreamReader::new(body),
        RecordIoCodec::new(MAX_EVENT),
    );
    loop {
        let next = tokio::time::timeout(STREAM_SILENCE, records.next()).await;
        let item = match next {
            Err(_) => Err(format!("no event or heartbeat for {STREAM_SILENCE:?}")),
            Ok(None) => Err("the master closed the stream".to_owned()),
            Ok(Some(Err(e))) => Err(format!("RecordIO: {e}")),
            Ok(Some(Ok(record))) => {
                Event::decode(record.as_ref()).map_err(|e| format!("bad Event: {e}"))
            }
        };
        let end = item.is_err();
        if tx.send(item).await.is_err() || end {
            return;
        }
    }
}
