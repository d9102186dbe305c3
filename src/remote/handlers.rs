//! What each routed request does: reading and checking the body, asking the
//! registry, and building the response (JSON, or an SSE stream of output).

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{body::Incoming, header, Request, Response, StatusCode};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{
    audit::{audit, Attempt},
    body::{event_stream, json, sse_event, text_response, ApiBody},
    command::{RemoteCommand, Snapshot},
    error::ApiError,
    output::LineCursor,
    plan::{plan, seconds},
    pool::{InUse, Slot},
    routes::{pid, route, Route},
    server::{Access, Peer, Shared},
    types::{ExecuteRequest, ExecuteResponse, ListResponse, OutputLine, StatusResponse, TaskQuery},
};

/// A request's body must arrive within this.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// SSE comment sent while a command is silent, so idle proxies and clients
/// can tell a quiet command from a dead connection.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// SSE events buffered per stream ahead of a slow reader (each at most one
/// line, itself at most `HOOK_EXECUTOR_REMOTE_MAX_OUTPUT`).
const SSE_BUFFER: usize = 4;

/// Answers one request on a connection whose access was decided at accept.
/// The connection counts as in a request until the response body is sent.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    access: Access,
    slot: Arc<Slot>,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, Infallible> {
    let in_use = slot.begin();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = match dispatch(&shared, &peer, access, &slot, &in_use, req).await {
        Ok(r) => r,
        Err(e) => {
            debug!(%peer, %method, status = e.status().as_u16(), error = %e, "remote API request refused");
            e.response()
        }
    };
    debug!(%peer, %method, %path, status = response.status().as_u16(), "remote API request");
    Ok(response.map(|body| body.holding(in_use)))
}

/// Whether a route may wait long (for a command's end, or streaming its
/// output), so its connection moves to the long allowance.
fn waits(route: &Route) -> bool {
    match route {
        Route::Result { wait, .. } => wait.is_some(),
        Route::CompatResult | Route::Terminate { .. } | Route::Output { .. } => true,
        Route::Status | Route::Execute | Route::List | Route::Metrics => false,
    }
}

async fn dispatch(
    shared: &Shared,
    peer: &Peer,
    access: Access,
    slot: &Slot,
    in_use: &InUse,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, ApiError> {
    match access {
        Access::Allowed => {}
        Access::Token => {
            shared.check_token(&req)?;
            slot.authenticate();
        }
    }
    let route = route(req.method(), req.uri().path(), req.uri().query())?;
    if waits(&route) {
        in_use.long()?;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let registry = &shared.registry;
    match route {
        Route::Metrics => Ok(metrics(shared).await),
        Route::Status => Ok(json(StatusCode::OK, &status(shared))),
        Route::Execute => {
            let mut attempt = Attempt::default();
            let started = match shared.registry.slot().await {
                Ok(permit) => {
                    execute(shared, req.into_body(), declared, &mut attempt, permit).await
                }
                Err(e) => Err(e),
            };
            audit(peer, &attempt, started.as_ref().map(|(pid, _)| *pid));
            if let Err(e) = &started {
                crate::metrics::get()
                    .remote
                    .rejected
                    .with_label_values(&[e.metric_reason()])
                    .inc();
            }
            let (pid, warnings) = started?;
            Ok(json(
                StatusCode::OK,
                &ExecuteResponse {
                    result: "OK".to_owned(),
                    pid,
                    warnings,
                },
            ))
        }
        Route::CompatResult => {
            let body = read_body(req.into_body(), shared.max_body, declared).await?;
            let query: TaskQuery = parse_json(&body)?;
            let limit = match query.wait {
                Some(w) => Some(seconds("\"wait\"", w)?.unwrap_or(Duration::ZERO)),
                None => None,
            };
            let cmd = registry.get(pid(query.pid)?)?;
            Ok(snapshot_response(&cmd.wait(limit).await))
        }
        Route::List => Ok(json(
            StatusCode::OK,
            &ListResponse {
                pids: registry.pids(),
            },
        )),
        Route::Result { pid, wait } => {
            let cmd = registry.get(pid)?;
            let snapshot = match wait {
                Some(w) => cmd.wait(Some(w)).await,
                None => cmd.snapshot(),
            };
            Ok(snapshot_response(&snapshot))
        }
        Route::Terminate { pid } => {
            let cmd = registry.get(pid)?;
            if !cmd.finished() {
                info!(%peer, pid, "remote command terminate requested");
                cmd.request_terminate();
            }
            Ok(snapshot_response(&cmd.wait(None).await))
        }
        Route::Output { pid } => {
            let cmd = registry.get(pid)?;
            let (tx, rx) = mpsc::channel(SSE_BUFFER);
            tokio::spawn(stream_output(cmd, tx, shared.shutdown.clone()));
            Ok(event_stream(rx))
        }
    }
}

/// `GET /metrics`: refreshed from `/proc` and the status snapshot (off the
/// runtime: walking `/proc` blocks), then encoded.
async fn metrics(shared: &Shared) -> Response<ApiBody> {
    let snapshot = shared.status.borrow().clone();
    let auxiliary = shared.registry.reaper().auxiliary_pids();
    let (_, retained) = shared.registry.counts();
    let m = crate::metrics::get();
    m.remote
        .retained
        .set(i64::try_from(retained).unwrap_or(i64::MAX));
    m.executor.scrapes.inc();
    let text = tokio::task::spawn_blocking(move || {
        crate::metrics::refresh(&snapshot, &auxiliary);
        crate::metrics::render()
    })
    .await
    .unwrap_or_default();
    text_response(text, crate::metrics::CONTENT_TYPE)
}

/// `GET /remote/status`: the compatible fields and our extras.
fn status(shared: &Shared) -> StatusResponse {
    let s = shared.status.borrow().clone();
    let (running, retained) = shared.registry.counts();
    StatusResponse {
        release: crate::RELEASE.to_owned(),
        result: "ok".to_owned(),
        sandbox_dir: shared.sandbox_dir.clone(),
        status: "active".to_owned(),
        work_dir: shared.work_dir.clone(),
        framework_id: s.framework_id,
        executor_id: s.executor_id,
        task_id: s.task_id,
        marathon_app_id: shared.marathon_app_id.clone(),
        task_state: s.state,
        task_pid: s.pid,
        healthy: s.healthy,
        scheduled_end_reason: s.scheduled_end.as_ref().map(|e| e.1.to_owned()),
        scheduled_end: s.scheduled_end.map(|e| e.0),
        running_commands: running,
        retained_results: retained,
        task_output: shared.output.snapshot(),
    }
}

fn snapshot_response(s: &Snapshot) -> Response<ApiBody> {
    match s {
        Snapshot::Finished(result) => json(StatusCode::OK, result),
        Snapshot::Running(running) => json(StatusCode::ACCEPTED, running),
    }
}

async fn read_body(body: Incoming, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge(limit))
        }
        Ok(Err(e)) => Err(ApiError::Body(e)),
        Err(_) => Err(ApiError::BodyTimeout(BODY_TIMEOUT)),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(ApiError::Json)
}

/// `POST /remote/execute` up to the pid; fills `attempt` as far as the
/// request is understood, so refusals are audited with what was asked.
async fn execute(
    shared: &Shared,
    body: Incoming,
    declared: Option<u64>,
    attempt: &mut Attempt,
    permit: OwnedSemaphorePermit,
) -> Result<(i32, Vec<String>), ApiError> {
    let body = read_body(body, shared.max_body, declared).await?;
    let request: ExecuteRequest = parse_json(&body)?;
    *attempt = Attempt::of_request(&request);
    let mut env: BTreeMap<String, String> = shared.base_env.clone();
    if let Some(task_id) = shared.status.borrow().task_id.clone() {
        env.insert("MESOS_TASK_ID".to_owned(), task_id);
    }
    let plan = plan(request, &env, shared.registry.cwd())?;
    *attempt = Attempt::of_plan(&plan);
    let pid = shared.registry.execute(&plan, permit)?;
    Ok((pid, plan.warnings))
}

/// Feeds one SSE response: the command's lines in arrival order (a replay
/// first, for a command already running or finished), then `exit`.
async fn stream_output(
    cmd: Arc<RemoteCommand>,
    tx: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
) {
    let mut changes = cmd.changes();
    let mut cursor = LineCursor::default();
    loop {
        changes.borrow_and_update();
        let (lines, done) = cmd.follow(&mut cursor);
        for (stream, line) in lines {
            if tx
                .send(sse_event(stream.name(), &OutputLine { line }))
                .await
                .is_err()
            {
                return;
            }
        }
        if done {
            if let Snapshot::Finished(result) = cmd.snapshot() {
                let _ = tx.send(sse_event("exit", &result)).await;
            }
            return;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(SSE_KEEPALIVE) => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
            () = shutdown.cancelled() => return,
        }
    }
}
