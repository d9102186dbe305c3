//! The emulator's HTTP side: listeners, connections, and `Http::executor`'s
//! decision sequence (§2.3), with the decoding and `validateExecutorCall` rules
//! (§4.4) it applies. The agent's state changes live in `mod.rs`.

use std::{
    convert::Infallible,
    io,
    path::Path,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderName, HeaderValue},
    http::request::Parts,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpSocket, UnixListener},
    sync::mpsc,
};
use tracing::{debug, info, warn};

use super::{valid_uuid, ConnShared, ExecutorPhase, Inner, RecordedCall, StatusOrigin, Transport};
use crate::proto::{
    executor::{call, Call},
    v1::{check_info, task_status, CheckStatusInfo, TaskState},
};

use crate::agent::client::PROTOBUF;
const JSON: &str = "application/json";
const AGENT_PATH: &str = "/slave(1)/api/v1/executor";
const BARE_PATH: &str = "/api/v1/executor";
const RECOVERING: &str = "Agent has not finished recovery";
/// Request bodies are single calls; anything near this is a bug.
const MAX_BODY: usize = 64 * 1024 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds 127.0.0.1:`port` with SO_REUSEADDR, so a restart can take the same
/// port back while old connections sit in TIME_WAIT.
pub(super) fn bind_tcp(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

/// Binds the Unix socket, replacing a stale socket file (never another file).
pub(super) fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Binds again after [`AgentEmulator::go_down`](super::AgentEmulator::go_down),
/// retrying briefly while the port is still held.
pub(super) async fn rebind(
    port: u16,
    unix: Option<&Path>,
) -> io::Result<(TcpListener, Option<UnixListener>)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let tcp = loop {
        match bind_tcp(port) {
            Ok(listener) => break listener,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let unix = unix.map(bind_unix).transpose()?;
    Ok((tcp, unix))
}

/// What the handler decided; the stream body is built only after the state
/// lock is released (its `Drop` takes the lock).
enum Reply {
    Plain {
        status: StatusCode,
        body: String,
        headers: Vec<(HeaderName, String)>,
        blame: bool,
    },
    Stream {
        json: bool,
        rx: mpsc::UnboundedReceiver<Bytes>,
        stream_id: Option<u64>,
    },
    Drop,
}

impl Reply {
    /// A rejection the executor caused (counted as a violation).
    fn reject(status: StatusCode, body: impl Into<String>) -> Self {
        Self::Plain {
            status,
            body: body.into(),
            headers: Vec::new(),
            blame: true,
        }
    }

    /// An answer that is not the executor's fault.
    fn answer(status: StatusCode, body: impl Into<String>) -> Self {
        Self::Plain {
            status,
            body: body.into(),
            headers: Vec::new(),
            blame: false,
        }
    }
}

impl Inner {
    /// Spawns the accept loops; their handles are kept so `go_down` can drop
    /// the listeners (connections are then refused).
    pub(super) fn listen(self: &Arc<Self>, tcp: TcpListener, unix: Option<UnixListener>) {
        let mut handles = Vec::new();
        let inner = Arc::clone(self);
        handles.push(tokio::spawn(async move {
            loop {
                match tcp.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        inner.spawn_connection(stream, Transport::Tcp);
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
        if let Some(unix) = unix {
            let inner = Arc::clone(self);
            handles.push(tokio::spawn(async move {
                loop {
                    match unix.accept().await {
                        Ok((stream, _)) => inner.spawn_connection(stream, Transport::Unix),
                        Err(e) => {
                            warn!(error = %e, "accept failed on the unix socket");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        self.lock().listeners.extend(handles);
    }

    fn spawn_connection<S>(self: &Arc<Self>, io: S, transport: Transport)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = self.next_id();
        debug!(connection = id, ?transport, "connection accepted");
        let conn = Arc::new(ConnShared {
            id,
            transport,
            streaming: std::sync::atomic::AtomicBool::new(false),
            flagged: std::sync::atomic::AtomicBool::new(false),
        });
        let io = TokioIo::new(ObservedIo {
            io,
            inner: Arc::clone(self),
            conn: Arc::clone(&conn),
        });
        let inner = Arc::clone(self);
        // Spawn under the lock so the task cannot deregister before it is registered.
        let mut st = self.lock();
        let handle = tokio::spawn(async move {
            let svc_inner = Arc::clone(&inner);
            let service =
                service_fn(move |req| Arc::clone(&svc_inner).handle(req, Arc::clone(&conn)));
            let mut builder = hyper::server::conn::http1::Builder::new();
            // libprocess never closes idle keep-alive connections.
            builder.header_read_timeout(None);
            if let Err(e) = builder.serve_connection(io, service).await {
                debug!(connection = id, error = %e, "connection ended");
            }
            inner.lock().conns.remove(&id);
        });
        st.conns.insert(id, handle);
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnShared>,
    ) -> io::Result<Response<EmuBody>> {
        if conn.streaming.load(Ordering::SeqCst) {
            self.violation(format!(
                "connection {}: a request was dispatched on the open SUBSCRIBE connection (§2.5)",
                conn.id
            ));
        }
        let (parts, body) = req.into_parts();
        let bytes = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
            .await
        {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => return Err(io::Error::other(format!("reading the request body: {e}"))),
            Err(_) => return Err(io::Error::other("request body timed out")),
        };
        let header = |name: HeaderName| {
            parts
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let mut rec = RecordedCall {
            at: Instant::now(),
            connection: conn.id,
            transport: conn.transport,
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            content_type: header(header::CONTENT_TYPE),
            accept: header(header::ACCEPT),
            authorization: parts.headers.contains_key(header::AUTHORIZATION),
            call: None,
            status: 0,
            body: String::new(),
        };
        let reply = self.decide(&parts, &bytes, &conn, &mut rec);
        rec.at = Instant::now();
        let result = match reply {
            Reply::Plain {
                status,
                body,
                headers,
                blame,
            } => {
                rec.status = status.as_u16();
                rec.body.clone_from(&body);
                if blame {
                    let kind = rec.call_type().map_or("-", |t| t.as_str_name());
                    self.violation(format!(
                        "{} {} ({kind}) answered {}: {body}",
                        rec.method, rec.path, rec.status
                    ));
                }
                let mut response = Response::new(if body.is_empty() {
                    EmuBody::Full(None)
                } else {
                    EmuBody::Full(Some(Bytes::from(body)))
                });
                *response.status_mut() = status;
                if !rec.body.is_empty() {
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                }
                for (name, value) in headers {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        response.headers_mut().insert(name, value);
                    }
                }
                Ok(response)
            }
            Reply::Stream {
                json,
                rx,
                stream_id,
            } => {
                rec.status = 200;
                conn.streaming.store(true, Ordering::SeqCst);
                let body = EventBody {
                    rx,
                    stream_id,
                    inner: Arc::clone(&self),
                    conn: Arc::clone(&conn),
                };
                let mut response = Response::new(EmuBody::Stream(body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(if json { JSON } else { PROTOBUF }),
                );
                Ok(response)
            }
            Reply::Drop => {
                info!(
                    connection = conn.id,
                    "dropping the connection without an answer (injected)"
                );
                Err(io::Error::other("connection dropped by the emulator"))
            }
        };
        debug!(method = %rec.method, path = %rec.path, status = rec.status, "request answered");
        self.lock().calls.push(rec);
        self.changed();
        result
    }

    /// `Http::executor`, preceded by routing and authentication (§2.3 order).
    fn decide(
        &self,
        parts: &Parts,
        body: &Bytes,
        conn: &ConnShared,
        rec: &mut RecordedCall,
    ) -> Reply {
        let mut st = self.lock();
        if st.starting {
            return Reply::answer(StatusCode::NOT_FOUND, "404 Not Found.");
        }
        let path = parts.uri.path().replace("%28", "(").replace("%29", ")");
        match conn.transport {
            Transport::Tcp if path == AGENT_PATH || path == BARE_PATH => {}
            Transport::Tcp => return Reply::reject(StatusCode::NOT_FOUND, "404 Not Found."),
            Transport::Unix if path == AGENT_PATH => {}
            Transport::Unix => return Reply::reject(StatusCode::FORBIDDEN, ""),
        }
        if let Some(token) = &self.opts.auth_token {
            let given = parts
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if given != Some(format!("Bearer {token}").as_bytes()) {
                let mut challenge = "Bearer realm=\"mesos-agent-executor\"".to_owned();
                if given.is_some() {
                    challenge.push_str(", error=\"invalid_token\"");
                }
                return Reply::Plain {
                    status: StatusCode::UNAUTHORIZED,
                    body: String::new(),
                    headers: vec![(header::WWW_AUTHENTICATE, challenge)],
                    blame: true,
                };
            }
        }
        if st.containerizer_recovering {
            return Reply::answer(StatusCode::SERVICE_UNAVAILABLE, RECOVERING);
        }
        if parts.method != Method::POST {
            return Reply::Plain {
                status: StatusCode::METHOD_NOT_ALLOWED,
                body: format!(
                    "405 Method Not Allowed. Expecting one of {{ 'POST' }}, but received '{}'.",
                    parts.method
                ),
                headers: vec![(header::ALLOW, "POST".to_owned())],
                blame: true,
            };
        }
        let Some(content_type) = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
        else {
            return Reply::reject(
                StatusCode::BAD_REQUEST,
                "Expecting 'Content-Type' to be present",
            );
        };
        let call = if content_type == PROTOBUF.as_bytes() {
            match decode_protobuf(body) {
                Some(call) => call,
                None => {
                    return Reply::reject(
                        StatusCode::BAD_REQUEST,
                        "Failed to parse body into Call protobuf",
                    )
                }
            }
        } else if content_type == JSON.as_bytes() {
            match decode_json(body) {
                Ok(call) => call,
                Err(e) => return Reply::reject(StatusCode::BAD_REQUEST, e),
            }
        } else {
            return Reply::reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Expecting 'Content-Type' of {JSON} or {PROTOBUF}"),
            );
        };
        rec.call = Some(call.clone());
        let kind = match validate(&call) {
            Ok(kind) => kind,
            Err(e) => {
                return Reply::reject(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to validate Executor::Call: {e}"),
                )
            }
        };
        let mut json = false;
        match kind {
            call::Type::Subscribe => {
                let accept = parts
                    .headers
                    .get(header::ACCEPT)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                if accepts(accept.as_deref(), JSON) {
                    json = true;
                } else if !accepts(accept.as_deref(), PROTOBUF) {
                    return Reply::reject(
                        StatusCode::NOT_ACCEPTABLE,
                        format!("Expecting 'Accept' to allow '{PROTOBUF}' or '{JSON}'"),
                    );
                }
            }
            call::Type::Heartbeat => return Reply::answer(StatusCode::ACCEPTED, ""),
            _ if st.recovering() => {
                return Reply::answer(StatusCode::SERVICE_UNAVAILABLE, RECOVERING)
            }
            _ => {}
        }
        if !st.framework_known || call.framework_id.value != self.opts.framework_id {
            return Reply::reject(StatusCode::BAD_REQUEST, "Framework cannot be found");
        }
        if st.phase == ExecutorPhase::Gone || call.executor_id.value != self.opts.executor_id {
            return Reply::reject(StatusCode::BAD_REQUEST, "Executor cannot be found");
        }
        if st.phase == ExecutorPhase::Registering && kind != call::Type::Subscribe {
            return Reply::reject(StatusCode::FORBIDDEN, "Executor is not subscribed");
        }
        match kind {
            call::Type::Subscribe => {
                info!(connection = conn.id, json, "SUBSCRIBE");
                let (rx, stream_id) =
                    self.subscribe(&mut st, call.subscribe.unwrap_or_default(), json);
                Reply::Stream {
                    json,
                    rx,
                    stream_id,
                }
            }
            call::Type::Update => {
                if let Some((code, left)) = st.fail_next {
                    st.fail_next = (left > 1).then_some((code, left - 1));
                    let status =
                        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let body = if code == 503 {
                        RECOVERING
                    } else {
                        "Injected failure"
                    };
                    return Reply::answer(status, body);
                }
                let drop = st.drop_next.map(|(process, left)| {
                    st.drop_next = (left > 1).then_some((process, left - 1));
                    process
                });
                if drop != Some(false) {
                    if let Some(status) = call.update.map(|u| u.status) {
                        if let Some(ack) =
                            self.process_status(&mut st, status, StatusOrigin::Update)
                        {
                            self.emit_ack(&mut st, ack);
                        }
                    }
                }
                if drop.is_some() {
                    return Reply::Drop;
                }
                Reply::answer(StatusCode::ACCEPTED, "")
            }
            call::Type::Message => {
                st.messages.extend(call.message.map(|m| m.data));
                Reply::answer(StatusCode::ACCEPTED, "")
            }
            call::Type::Unknown => {
                Reply::reject(StatusCode::NOT_IMPLEMENTED, "501 Not Implemented.")
            }
            call::Type::Heartbeat => Reply::answer(StatusCode::ACCEPTED, ""),
        }
    }
}

/// `ParseFromString`: prost does not enforce proto2 `required`, so the wire is
/// checked for the required fields an executor call carries, and an unknown
/// enum value in the required `TaskStatus.state` counts as missing.
fn decode_protobuf(body: &[u8]) -> Option<Call> {
    let call = Call::decode(body).ok()?;
    if !wire::call_initialized(body) {
        return None;
    }
    let state_known = |s: &crate::proto::v1::TaskStatus| TaskState::try_from(s.state).is_ok();
    let update_ok = call.update.as_ref().is_none_or(|u| state_known(&u.status));
    let unacked_ok = call.subscribe.as_ref().is_none_or(|s| {
        s.unacknowledged_updates
            .iter()
            .all(|u| state_known(&u.status))
    });
    (update_ok && unacked_ok).then_some(call)
}

/// `JSON::parse` then `protobuf::parse`. An unknown enum name for the
/// optional `type` is dropped, as stout does (it then fails validation).
fn decode_json(body: &[u8]) -> Result<Call, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("Failed to parse body into JSON: {e}"))?;
    if let Some(object) = value.as_object_mut() {
        let unknown = object
            .get("type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| call::Type::from_str_name(t).is_none());
        if unknown {
            object.remove("type");
        }
    }
    serde_json::from_value(value)
        .map_err(|e| format!("Failed to convert JSON into Call protobuf: {e}"))
}

/// `validateExecutorCall` (§4.4); returns the call's type.
fn validate(call: &Call) -> Result<call::Type, String> {
    let kind = call
        .r#type
        .and_then(|t| call::Type::try_from(t).ok())
        .ok_or_else(|| "Expecting 'type' to be present".to_owned())?;
    let (eid, fid) = (&call.executor_id.value, &call.framework_id.value);
    match kind {
        call::Type::Subscribe if call.subscribe.is_none() => {
            Err("Expecting 'subscribe' to be present".to_owned())
        }
        call::Type::Message if call.message.is_none() => {
            Err("Expecting 'message' to be present".to_owned())
        }
        call::Type::Update => {
            let status = &call
                .update
                .as_ref()
                .ok_or_else(|| "Expecting 'update' to be present".to_owned())?
                .status;
            let uuid = status
                .uuid
                .as_ref()
                .ok_or_else(|| "Expecting 'uuid' to be present".to_owned())?;
            if !valid_uuid(uuid) {
                return Err("Not a valid UUID".to_owned());
            }
            if let Some(sid) = status.executor_id.as_ref().filter(|s| &s.value != eid) {
                return Err(format!(
                    "ExecutorID in Call: {eid} does not match ExecutorID in TaskStatus: {}",
                    sid.value
                ));
            }
            if status.source() != task_status::Source::Executor {
                return Err(format!(
                    "Received Call from executor {eid} of framework {fid} with invalid source, expecting 'SOURCE_EXECUTOR'"
                ));
            }
            if status.state == TaskState::TaskStaging as i32 {
                return Err(format!("Received TASK_STAGING from executor {eid} of framework {fid} which is not allowed"));
            }
            if let Some(check) = &status.check_status {
                validate_check_status(check)?;
            }
            Ok(kind)
        }
        _ => Ok(kind),
    }
}

/// `validateCheckStatusInfo`.
fn validate_check_status(check: &CheckStatusInfo) -> Result<(), String> {
    let kind = check
        .r#type
        .and_then(|t| check_info::Type::try_from(t).ok())
        .ok_or_else(|| "CheckStatusInfo must specify 'type'".to_owned())?;
    match kind {
        check_info::Type::Command if check.command.is_none() => {
            Err("Expecting 'command' to be set for COMMAND check's status".to_owned())
        }
        check_info::Type::Http if check.http.is_none() => {
            Err("Expecting 'http' to be set for HTTP check's status".to_owned())
        }
        check_info::Type::Tcp if check.tcp.is_none() => {
            Err("Expecting 'tcp' to be set for TCP check's status".to_owned())
        }
        check_info::Type::Unknown => Err("'UNKNOWN' is not a valid check's status type".to_owned()),
        _ => Ok(()),
    }
}

/// `Request::acceptsMediaType`: no (or an empty) header accepts everything;
/// otherwise the most specific matching range (`type/subtype`, `type/*`,
/// `*/*`) decides, and `q=0` (or an unparsable q) means not acceptable.
pub(super) fn accepts(accept: Option<&str>, media: &str) -> bool {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return true;
    };
    let Some((major, _)) = media.split_once('/') else {
        return false;
    };
    let wildcard = format!("{major}/*");
    let mut best: Option<(u8, f64)> = None;
    for entry in accept.split(',') {
        let mut params = entry.split(';');
        let range = params
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let specificity = if range == media {
            3
        } else if range == wildcard {
            2
        } else if range == "*/*" {
            1
        } else {
            continue;
        };
        let mut q = 1.0;
        for param in params {
            if let Some((key, value)) = param.split_once('=') {
                if key.trim().eq_ignore_ascii_case("q") {
                    q = value.trim().parse::<f64>().unwrap_or(0.0);
                }
            }
        }
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.is_some_and(|(_, q)| q > 0.0)
}

/// The proto2 `required` fields of an executor Call, checked on the wire.
mod wire {
    use prost::encoding::decode_varint;

    type Fields<'a> = Vec<(u32, &'a [u8])>;

    /// Top-level fields as (number, payload); payload is empty unless
    /// length-delimited. `None` for anything that is not plain wire format.
    fn fields(buf: &[u8]) -> Option<Fields<'_>> {
        let mut rest = buf;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let key = decode_varint(&mut rest).ok()?;
            let tag = u32::try_from(key >> 3).ok()?;
            let skip = match key & 7 {
                0 => {
                    decode_varint(&mut rest).ok()?;
                    0
                }
                1 => 8,
                5 => 4,
                2 => usize::try_from(decode_varint(&mut rest).ok()?).ok()?,
                _ => return None,
            };
            let payload = rest.get(..skip)?;
            rest = &rest[skip..];
            out.push((tag, payload));
        }
        Some(out)
    }

    fn has(f: &Fields<'_>, tag: u32) -> bool {
        f.iter().any(|(t, _)| *t == tag)
    }

    /// A singular message field: occurrences merge, i.e. concatenate.
    fn merged(f: &Fields<'_>, tag: u32) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for (_, payload) in f.iter().filter(|(t, _)| *t == tag) {
            out.get_or_insert_with(Vec::new).extend_from_slice(payload);
        }
        out
    }

    fn message_ok(payload: &[u8], check: fn(&Fields<'_>) -> bool) -> bool {
        fields(payload).is_some_and(|f| check(&f))
    }

    /// An `*ID` message (its `value` is required) that must be present.
    fn id_ok(f: &Fields<'_>, tag: u32) -> bool {
        merged(f, tag).is_some_and(|m| message_ok(&m, |f| has(f, 1)))
    }

    fn optional_id_ok(f: &Fields<'_>, tag: u32) -> bool {
        !has(f, tag) || id_ok(f, tag)
    }

    fn status_ok(f: &Fields<'_>) -> bool {
        id_ok(f, 1) && has(f, 2) && optional_id_ok(f, 5) && optional_id_ok(f, 7)
    }

    fn update_ok(f: &Fields<'_>) -> bool {
        merged(f, 1).is_some_and(|m| message_ok(&m, status_ok))
    }

    fn task_ok(f: &Fields<'_>) -> bool {
        has(f, 1) && id_ok(f, 2) && id_ok(f, 3)
    }

    pub(super) fn call_initialized(body: &[u8]) -> bool {
        let Some(f) = fields(body) else {
            return false;
        };
        if !(id_ok(&f, 1) && id_ok(&f, 2)) {
            return false;
        }
        if let Some(sub) = merged(&f, 4) {
            let Some(sf) = fields(&sub) else {
                return false;
            };
            let items_ok = sf.iter().all(|(tag, payload)| match tag {
                1 => message_ok(payload, task_ok),
                2 => message_ok(payload, update_ok),
                _ => true,
            });
            if !items_ok {
                return false;
            }
        }
        merged(&f, 5).is_none_or(|m| message_ok(&m, update_ok))
            && merged(&f, 6).is_none_or(|m| message_ok(&m, |f| has(f, 2)))
    }
}

/// Wraps a connection's socket to notice bytes arriving while a SUBSCRIBE
/// response streams on it: hyper keeps reading (to detect EOF) but will not
/// dispatch a pipelined request until the stream ends, and neither does the
/// real agent, so the executor must never send one (§2.5, conformance #5).
struct ObservedIo<S> {
    io: S,
    inner: Arc<Inner>,
    conn: Arc<ConnShared>,
}

impl<S: AsyncRead + Unpin> AsyncRead for ObservedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        let got = buf.filled().len().saturating_sub(before);
        if matches!(result, Poll::Ready(Ok(())))
            && got > 0
            && this.conn.streaming.load(Ordering::SeqCst)
            && !this.conn.flagged.swap(true, Ordering::SeqCst)
        {
            this.inner.violation(format!(
                "connection {}: {got} bytes of another request arrived on the open SUBSCRIBE connection (§2.5)",
                this.conn.id
            ));
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ObservedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A SUBSCRIBE response body: one HTTP chunk per RecordIO record, ending
/// (terminating chunk) when the agent drops the sending side.
pub(super) struct EventBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    stream_id: Option<u64>,
    inner: Arc<Inner>,
    conn: Arc<ConnShared>,
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.conn.streaming.store(false, Ordering::SeqCst);
        if let Some(id) = self.stream_id {
            self.inner.stream_gone(id);
        }
    }
}

/// Response bodies: a fixed error text, or the event stream.
pub(super) enum EmuBody {
    Full(Option<Bytes>),
    Stream(EventBody),
}

impl Body for EmuBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(stream) => match stream.rx.poll_recv(cx) {
                Poll::Ready(Some(record)) => Poll::Ready(Some(Ok(Frame::data(record)))),
                Poll::Ready(None) => {
                    // Stream over: the connection may legitimately carry requests again.
                    stream.conn.streaming.store(false, Ordering::SeqCst);
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}
