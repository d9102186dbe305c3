//! HTTP client for the agent's v1 executor API.
//!
//! Two kinds of connection, as the agent requires (`mesos-executor-api.md` §2.5):
//! a dedicated one per SUBSCRIBE, whose response body is the endless event
//! stream, and a persistent keep-alive one for every other call. The agent never
//! answers a request pipelined behind an open stream, so calls must not share the
//! subscribe connection. Connections are plain TCP, TLS (libprocess SSL) or the
//! agent's Unix socket. Bodies are `application/x-protobuf` (what every built-in
//! executor uses; JSON has default-field quirks). Every connect and call is
//! bounded by the configured call timeout; the stream itself has no overall
//! timeout, only the agent's own heartbeats (every 30 min) and TCP keepalive.

use std::{pin::Pin, time::Duration};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1::SendRequest, header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio_util::codec::Decoder;

use crate::{
    agent::recordio::{RecordIoCodec, RecordIoError},
    config::{AgentEndpoint, AgentTransport, Secret},
    net::transport::{self, Io, Trust},
    proto::executor::{Call, Event},
};

/// The media type we send and ask for.
pub const PROTOBUF: &str = "application/x-protobuf";

/// Largest error body kept for a log line.
const MAX_ERROR_BODY: usize = 4096;

/// A failed exchange with the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Could not open a connection (refused, unreachable, TLS handshake).
    #[error("connecting to the agent at {url}: {reason}")]
    Connect {
        /// The endpoint.
        url: String,
        /// Why.
        reason: String,
    },
    /// The request or its response did not complete within the call timeout.
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke while sending or receiving.
    #[error("agent connection failed: {0}")]
    Transport(String),
    /// The agent answered with an unexpected status.
    #[error("agent answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// Body text (truncated), e.g. `Failed to validate Executor::Call: …`.
        body: String,
    },
    /// The TLS settings could not be loaded.
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl AgentError {
    /// Whether retrying the same call may succeed: 5xx, timeouts and broken
    /// connections. A 4xx means the agent refused this call as it is.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => status.is_server_error(),
            Self::Tls(_) => false,
            Self::Connect { .. } | Self::Timeout(_) | Self::Transport(_) => true,
        }
    }
}

/// Opens connections to the agent and sends requests. Cheap to clone.
#[derive(Clone)]
pub struct AgentClient {
    endpoint: AgentEndpoint,
    token: Option<Secret>,
    timeout: Duration,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient").field("url", &self.endpoint.url()).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl AgentClient {
    /// A client for `endpoint`, sending `token` as a Bearer token when given.
    pub fn new(endpoint: AgentEndpoint, token: Option<Secret>, timeout: Duration) -> Result<Self, AgentError> {
        let tls = match &endpoint.transport {
            AgentTransport::Https { authority, ca_file, verify } => Some(tls_connector(authority, ca_file.as_deref(), *verify)?),
            _ => None,
        };
        Ok(Self { endpoint, token, timeout, tls })
    }

    /// The endpoint URL, for logs.
    #[must_use]
    pub fn url(&self) -> String {
        self.endpoint.url()
    }

    async fn open(&self) -> Result<Box<dyn Io>, AgentError> {
        let connect_error = |e: std::io::Error| AgentError::Connect { url: self.endpoint.url(), reason: e.to_string() };
        let io: Box<dyn Io> = match &self.endpoint.transport {
            AgentTransport::Http { authority } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(connect_error)?;
                tune(&stream);
                Box::new(stream)
            }
            AgentTransport::Https { authority, .. } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(connect_error)?;
                tune(&stream);
                let (connector, name) = self.tls.clone().ok_or_else(|| AgentError::Tls("no TLS configuration".into()))?;
                Box::new(connector.connect(name, stream).await.map_err(connect_error)?)
            }
            AgentTransport::Unix { path } => Box::new(tokio::net::UnixStream::connect(path).await.map_err(connect_error)?),
        };
        Ok(io)
    }

    /// Opens a connection and performs the HTTP/1.1 handshake, within the call
    /// timeout. The connection is driven by a spawned task that ends with it.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, AgentError> {
        let io = tokio::time::timeout(self.timeout, self.open()).await.map_err(|_| AgentError::Timeout(self.timeout))??;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| AgentError::Transport(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(cause = %e, "agent connection closed");
            }
        });
        Ok(sender)
    }

    fn request(&self, call: &Call, subscribe: bool) -> Result<Request<Full<Bytes>>, AgentError> {
        let host = match &self.endpoint.transport {
            AgentTransport::Http { authority } | AgentTransport::Https { authority, .. } => authority.as_str(),
            AgentTransport::Unix { .. } => "localhost",
        };
        let mut builder = Request::post(self.endpoint.path.as_str())
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, PROTOBUF)
            .header(header::CONNECTION, "keep-alive");
        if subscribe {
            builder = builder.header(header::ACCEPT, PROTOBUF);
        }
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        builder.body(Full::new(Bytes::from(call.encode_to_vec()))).map_err(|e| AgentError::Transport(e.to_string()))
    }

    /// Sends SUBSCRIBE on a fresh connection. On `200 OK` returns the event
    /// stream; any other answer is an error carrying status and body.
    pub async fn subscribe(&self, call: &Call, max_record_len: usize) -> Result<EventStream, AgentError> {
        let mut sender = self.connect().await?;
        let request = self.request(call, true)?;
        let response = tokio::time::timeout(self.timeout, sender.send_request(request))
            .await
            .map_err(|_| AgentError::Timeout(self.timeout))?
            .map_err(|e| AgentError::Transport(e.to_string()))?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = read_error_body(response.into_body(), self.timeout).await;
            return Err(AgentError::Status { status, body });
        }
        Ok(EventStream {
            body: response.into_body(),
            buf: BytesMut::new(),
            codec: RecordIoCodec::new(max_record_len),
            _sender: sender,
            done: false,
        })
    }

    /// A persistent connection for non-SUBSCRIBE calls.
    #[must_use]
    pub fn calls(&self) -> CallConnection {
        CallConnection { client: self.clone(), sender: None }
    }
}

/// Low latency for small request/response pairs, and TCP keepalive so a
/// half-open subscribe connection is eventually noticed.
fn tune(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsFd;
    let _ = stream.set_nodelay(true);
    let _ = nix::sys::socket::setsockopt(&stream.as_fd(), nix::sys::socket::sockopt::KeepAlive, &true);
}

async fn read_error_body(body: Incoming, timeout: Duration) -> String {
    let collected = tokio::time::timeout(timeout, http_body_util::Limited::new(body, MAX_ERROR_BODY * 4).collect()).await;
    match collected {
        Ok(Ok(c)) => {
            let bytes = c.to_bytes();
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]).trim().to_owned();
            if text.is_empty() {
                "(empty body)".to_owned()
            } else {
                text
            }
        }
        Ok(Err(e)) => format!("(body unreadable: {e})"),
        Err(_) => "(body not received in time)".to_owned(),
    }
}

/// One persistent connection for UPDATE, MESSAGE and HEARTBEAT calls,
/// re-opened on demand after a failure.
pub struct CallConnection {
    client: AgentClient,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl CallConnection {
    /// Sends one call and expects `202 Accepted`, all within the call timeout.
    pub async fn send(&mut self, call: &Call) -> Result<(), AgentError> {
        let timeout = self.client.timeout;
        let result = tokio::time::timeout(timeout, self.send_inner(call)).await.unwrap_or(Err(AgentError::Timeout(timeout)));
        if result.is_err() {
            // Whatever happened, the connection's state is unknown: start afresh.
            self.sender = None;
        }
        result
    }

    async fn send_inner(&mut self, call: &Call) -> Result<(), AgentError> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.client.connect().await?,
        };
        sender.ready().await.map_err(|e| AgentError::Transport(e.to_string()))?;
        let request = self.client.request(call, false)?;
        let response = sender.send_request(request).await.map_err(|e| AgentError::Transport(e.to_string()))?;
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            // Drain the (empty) body so the connection can be reused.
            let _ = response.into_body().collect().await;
            self.sender = Some(sender);
            return Ok(());
        }
        let body = read_error_body(response.into_body(), self.client.timeout).await;
        self.sender = Some(sender);
        Err(AgentError::Status { status, body })
    }
}

/// Why the event stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    /// The agent closed the stream cleanly (end of the chunked body).
    #[error("the agent closed the event stream")]
    Eof,
    /// The connection broke.
    #[error("event stream broken: {0}")]
    Transport(String),
    /// The bytes are not valid RecordIO; framing cannot be recovered.
    #[error("event stream unreadable: {0}")]
    Framing(#[from] RecordIoError),
}

/// The SUBSCRIBE response body, decoded record by record.
pub struct EventStream {
    body: Incoming,
    buf: BytesMut,
    codec: RecordIoCodec,
    /// Keeps the connection's request half alive for the stream's lifetime.
    _sender: SendRequest<Full<Bytes>>,
    done: bool,
}

/// One item of the event stream.
#[derive(Debug)]
pub enum StreamItem {
    /// A decoded event.
    Event(Box<Event>),
    /// A well-framed record that is not a valid `Event`; skipped by the caller.
    Garbage {
        /// Record length.
        len: usize,
        /// Decode error.
        error: String,
    },
}

impl EventStream {
    /// The next record, or why the stream ended.
    pub async fn next(&mut self) -> Result<StreamItem, StreamEnd> {
        loop {
            if self.done {
                return Err(StreamEnd::Eof);
            }
            if let Some(record) = self.codec.decode(&mut self.buf)? {
                return Ok(decode_record(&record));
            }
            match Pin::new(&mut self.body).frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(StreamEnd::Transport(e.to_string())),
                None => {
                    self.done = true;
                    if let Some(_record) = self.codec.decode_eof(&mut self.buf)? {
                        // decode() above already drained complete records, so a
                        // record here is impossible; treat as EOF regardless.
                    }
                    return Err(StreamEnd::Eof);
                }
            }
        }
    }
}

/// Decodes one record of the stream into an event, or reports it as garbage.
#[must_use]
pub fn decode_record(record: &[u8]) -> StreamItem {
    match Event::decode(record) {
        Ok(event) => StreamItem::Event(Box::new(event)),
        Err(e) => StreamItem::Garbage { len: record.len(), error: e.to_string() },
    }
}

/// Decodes a whole byte stream delivered in the given chunks, exactly as
/// [`EventStream`] does: the items before the end, and why it ended. This is
/// the body of the `recordio_events` fuzz target and of its corpus test.
pub fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, max_record_len: usize) -> (Vec<StreamItem>, StreamEnd) {
    let mut codec = RecordIoCodec::new(max_record_len);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(record)) => items.push(decode_record(&record)),
                Ok(None) => break,
                Err(e) => return (items, StreamEnd::Framing(e)),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(record)) => {
            items.push(decode_record(&record));
            (items, StreamEnd::Eof)
        }
        Ok(None) => (items, StreamEnd::Eof),
        Err(e) => (items, StreamEnd::Framing(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{executor::event, v1};

    fn valid_stream() -> Vec<u8> {
        let mut out = Vec::new();
        let events = [
            Event { r#type: Some(event::Type::Heartbeat as i32), ..Default::default() },
            Event {
                r#type: Some(event::Type::Kill as i32),
                kill: Some(event::Kill { task_id: v1::TaskId { value: "t".into() }, kill_policy: None }),
                ..Default::default()
            },
            Event {
                r#type: Some(event::Type::Launch as i32),
                launch: Some(event::Launch { task: crate::emulator::task_info("t", None) }),
                ..Default::default()
            },
        ];
        for e in events {
            out.extend_from_slice(&crate::agent::recordio::frame(&e.encode_to_vec()));
        }
        out
    }

    #[test]
    fn valid_stream_decodes_whatever_the_chunking() {
        let stream = valid_stream();
        for split in [1, 2, 3, 7, 64, stream.len()] {
            let (items, end) = decode_chunks(stream.chunks(split), 1 << 20);
            assert_eq!(items.len(), 3, "split {split}");
            assert!(items.iter().all(|i| matches!(i, StreamItem::Event(_))));
            assert!(matches!(end, StreamEnd::Eof));
        }
    }

    /// The fuzz target's body over a deterministic corpus: random bytes and
    /// random mutations of a valid stream, in random chunkings. It must never
    /// panic, and every item before the end must come from a whole record.
    #[test]
    fn fuzz_corpus_never_panics() {
        let valid = valid_stream();
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for round in 0..20_000 {
            let mut data = if round % 2 == 0 {
                let len = rng.usize(0..256);
                (0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>()
            } else {
                let mut d = valid.clone();
                for _ in 0..rng.usize(1..6) {
                    let i = rng.usize(0..d.len());
                    match rng.u8(0..3) {
                        0 => d[i] = rng.u8(..),
                        1 => d.truncate(i),
                        _ => d.insert(i, rng.u8(..)),
                    }
                    if d.is_empty() {
                        break;
                    }
                }
                d
            };
            if round % 7 == 0 {
                data.extend_from_slice(b"18446744073709551616\n");
            }
            let split = rng.usize(1..32);
            let (items, _end) = decode_chunks(data.chunks(split), 4096);
            assert!(items.len() <= data.len() / 2 + 1);
        }
    }
}

fn tls_connector(
    authority: &str,
    ca_file: Option<&std::path::Path>,
    verify: bool,
) -> Result<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>), AgentError> {
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let name =
        rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| AgentError::Tls(format!("server name {host:?}: {e}")))?;
    let trust = match (verify, ca_file) {
        (false, _) => Trust::Insecure,
        (true, Some(path)) => Trust::CaFile(path),
        (true, None) => Trust::WebPki,
    };
    Ok((transport::connector(trust).map_err(AgentError::Tls)?, name))
}
