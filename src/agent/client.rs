//! HTTP client for the agent's v1 executor API.
//!
//! Two kinds of connection, as the agent requires (Apache Mesos, executor HTTP API):
//! a dedicated one per SUBSCRIBE, whose response body is the endless event
//! stream, and a persistent keep-alive one for every other call. The agent never
//! answers a request pipelined behind an open stream, so calls must not share the
//! subscribe connection. Connections are plain TCP, TLS (libprocess SSL) or the
//! agent's Unix socket. Bodies are `application/x-protobuf` (what every built-in
//! executor uses; JSON has default-field quirks). Every connect and call is
//! bounded by the configured call timeout; the stream itself has no overall
//! timeout, only the agent's own heartbeats (every 30 min) and TCP keepalive.
//!
//! The event stream is decoded by one adapter, shared with the fuzz target
//! ([`decode_chunks`]): body chunks → `StreamReader` → `FramedRead` with the
//! RecordIO codec → `Event::decode`. A record that is not an `Event` is skipped
//! (logged by the caller); a framing error ends the stream.

use std::{
    io,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1::SendRequest, header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio_util::{
    codec::{Decoder, FramedRead},
    io::StreamReader,
};

use crate::{
    agent::recordio::{RecordIoCodec, RecordIoError},
    config::{AgentEndpoint, AgentTransport, Secret},
    net::transport::{self, Io, TlsError, Trust},
    proto::executor::{Call, Event},
};

/// The media type we send and ask for.
pub(crate) const PROTOBUF: &str = "application/x-protobuf";

/// Largest error body kept for a log line.
const MAX_ERROR_BODY: usize = 4096;

/// A failed exchange with the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Could not open a connection (refused, unreachable, TLS handshake).
    #[error("connecting to the agent at {url}: {source}")]
    Connect {
        /// The endpoint.
        url: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The request or its response did not complete within the call timeout.
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke while sending or receiving.
    #[error("agent connection failed: {0}")]
    Transport(#[source] hyper::Error),
    /// The request could not be built (e.g. a token that is no valid header value).
    #[error("building the request to the agent: {0}")]
    Request(#[source] hyper::http::Error),
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
    Tls(#[from] TlsError),
    /// The agent's host is no valid TLS server name.
    #[error("TLS server name {host:?}: {source}")]
    ServerName {
        /// The host part of the agent's address.
        host: String,
        /// Why rustls refused it.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

impl AgentError {
    /// Whether retrying the same call may succeed: 5xx, timeouts and broken
    /// connections. A 4xx means the agent refused this call as it is.
    #[must_use]
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => status.is_server_error(),
            Self::Tls(_) | Self::ServerName { .. } => false,
            // A request that cannot be built was retried before the errors
            // were typed; kept so (behaviour unchanged).
            Self::Connect { .. } | Self::Timeout(_) | Self::Transport(_) | Self::Request(_) => true,
        }
    }
}

/// How a connection to the agent is opened, with TLS settings loaded once.
#[derive(Clone)]
enum Dial {
    /// Plain TCP to `host:port`.
    Tcp(String),
    /// TLS over TCP to `host:port`, as `name`.
    Tls {
        authority: String,
        connector: tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
    },
    /// The agent's Unix socket.
    Unix(std::path::PathBuf),
}

/// Opens connections to the agent and sends requests. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AgentClient {
    endpoint: AgentEndpoint,
    token: Option<Secret>,
    timeout: Duration,
    dial: Dial,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("url", &self.endpoint.url())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// A client for `endpoint`, sending `token` as a Bearer token when given.
    pub(crate) fn new(
        endpoint: AgentEndpoint,
        token: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, AgentError> {
        let dial = match &endpoint.transport {
            AgentTransport::Http { authority } => Dial::Tcp(authority.clone()),
            AgentTransport::Https {
                authority,
                ca_file,
                verify,
            } => {
                let (connector, name) = tls_connector(authority, ca_file.as_deref(), *verify)?;
                Dial::Tls {
                    authority: authority.clone(),
                    connector,
                    name,
                }
            }
            AgentTransport::Unix { path } => Dial::Unix(path.clone()),
        };
        Ok(Self {
            endpoint,
            token,
            timeout,
            dial,
        })
    }

    /// The endpoint URL, for logs.
    #[must_use]
    pub(crate) fn url(&self) -> String {
        self.endpoint.url()
    }

    async fn open(&self) -> Result<Box<dyn Io>, AgentError> {
        let connect_error = |source: io::Error| AgentError::Connect {
            url: self.endpoint.url(),
            source,
        };
        let io: Box<dyn Io> = match &self.dial {
            Dial::Tcp(authority) => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(connect_error)?;
                tune(&stream);
                Box::new(stream)
            }
            Dial::Tls {
                authority,
                connector,
                name,
            } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(connect_error)?;
                tune(&stream);
                Box::new(
                    connector
                        .connect(name.clone(), stream)
                        .await
                        .map_err(connect_error)?,
                )
            }
            Dial::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_error)?,
            ),
        };
        Ok(io)
    }

    /// Opens a connection and performs the HTTP/1.1 handshake, within the call
    /// timeout. The connection is driven by a spawned task that ends with it.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, AgentError> {
        let io = tokio::time::timeout(self.timeout, self.open())
            .await
            .map_err(|_| AgentError::Timeout(self.timeout))??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(AgentError::Transport)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(cause = %e, "agent connection closed");
            }
        });
        Ok(sender)
    }

    fn request(&self, call: &Call, subscribe: bool) -> Result<Request<Full<Bytes>>, AgentError> {
        let host = match &self.endpoint.transport {
            AgentTransport::Http { authority } | AgentTransport::Https { authority, .. } => {
                authority.as_str()
            }
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
        builder
            .body(Full::new(Bytes::from(call.encode_to_vec())))
            .map_err(AgentError::Request)
    }

    /// Sends SUBSCRIBE on a fresh connection. On `200 OK` returns the event
    /// stream; any other answer is an error carrying status and body.
    pub(crate) async fn subscribe(
        &self,
        call: &Call,
        max_record_len: usize,
    ) -> Result<EventStream, AgentError> {
        let mut sender = self.connect().await?;
        let request = self.request(call, true)?;
        let response = tokio::time::timeout(self.timeout, sender.send_request(request))
            .await
            .map_err(|_| AgentError::Timeout(self.timeout))?
            .map_err(AgentError::Transport)?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = read_error_body(response.into_body(), self.timeout).await;
            return Err(AgentError::Status { status, body });
        }
        Ok(EventStream {
            events: events(body_bytes(response.into_body()), max_record_len),
            _sender: sender,
        })
    }

    /// A persistent connection for non-SUBSCRIBE calls.
    #[must_use]
    pub(crate) fn calls(&self) -> CallConnection {
        CallConnection {
            client: self.clone(),
            sender: None,
        }
    }
}

/// Low latency for small request/response pairs, and TCP keepalive so a
/// half-open subscribe connection is eventually noticed.
fn tune(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsFd;
    let _ = stream.set_nodelay(true);
    let _ =
        nix::sys::socket::setsockopt(&stream.as_fd(), nix::sys::socket::sockopt::KeepAlive, &true);
}

async fn read_error_body(body: Incoming, timeout: Duration) -> String {
    let collected = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(body, MAX_ERROR_BODY * 4).collect(),
    )
    .await;
    match collected {
        Ok(Ok(c)) => {
            let bytes = c.to_bytes();
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)])
                .trim()
                .to_owned();
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
pub(crate) struct CallConnection {
    client: AgentClient,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl CallConnection {
    /// Sends one call and expects `202 Accepted`, all within the call timeout.
    pub(crate) async fn send(&mut self, call: &Call) -> Result<(), AgentError> {
        let timeout = self.client.timeout;
        let result = tokio::time::timeout(timeout, self.send_inner(call))
            .await
            .unwrap_or(Err(AgentError::Timeout(timeout)));
        if result.is_err() {
            // Whatever happened, the connection's state is unknown: start afresh.
            self.sender = None;
        }
        result
    }

    /// Connects ahead of the first call, within the call timeout. A failure
    /// is only logged: the next `send` connects again and reports it.
    pub(crate) async fn open(&mut self) {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            return;
        }
        match tokio::time::timeout(self.client.timeout, self.client.connect()).await {
            Ok(Ok(sender)) => self.sender = Some(sender),
            Ok(Err(e)) => {
                tracing::debug!(cause = %e, "opening the call connection failed; the first call retries")
            }
            Err(_) => {
                tracing::debug!("opening the call connection timed out; the first call retries")
            }
        }
    }

    async fn send_inner(&mut self, call: &Call) -> Result<(), AgentError> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.client.connect().await?,
        };
        sender.ready().await.map_err(AgentError::Transport)?;
        let request = self.client.request(call, false)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(AgentError::Transport)?;
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
    Transport(#[source] io::Error),
    /// The bytes are not valid RecordIO; framing cannot be recovered.
    #[error("event stream unreadable: {0}")]
    Framing(#[source] RecordIoError),
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
        error: prost::DecodeError,
    },
}

/// RecordIO records decoded into events: the [`RecordIoCodec`] framing, then
/// `Event::decode` of each record. A record that is not an `Event` is an item
/// ([`StreamItem::Garbage`]), not an error: framing is intact, the stream goes on.
#[derive(Debug)]
struct EventCodec(RecordIoCodec);

impl EventCodec {
    fn item(record: Option<Bytes>) -> Option<StreamItem> {
        record.map(|record| match Event::decode(record.as_ref()) {
            Ok(event) => StreamItem::Event(Box::new(event)),
            Err(error) => StreamItem::Garbage {
                len: record.len(),
                error,
            },
        })
    }
}

impl Decoder for EventCodec {
    type Item = StreamItem;
    type Error = StreamEnd;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<StreamItem>, StreamEnd> {
        self.0
            .decode(src)
            .map(Self::item)
            .map_err(StreamEnd::Framing)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<StreamItem>, StreamEnd> {
        self.0
            .decode_eof(src)
            .map(Self::item)
            .map_err(StreamEnd::Framing)
    }
}

/// `FramedRead` wants read errors to be `io::Error`s; reading is the only
/// source of them, so each one is the transport's.
impl From<io::Error> for StreamEnd {
    fn from(error: io::Error) -> Self {
        Self::Transport(error)
    }
}

/// The one decode path of the event stream, for the live agent body and for
/// [`decode_chunks`] alike: body chunks → `StreamReader` → `FramedRead` with
/// [`EventCodec`].
fn events<S>(body: S, max_record_len: usize) -> FramedRead<StreamReader<S, Bytes>, EventCodec>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    FramedRead::new(
        StreamReader::new(body),
        EventCodec(RecordIoCodec::new(max_record_len)),
    )
}

/// The data chunks of a hyper body, with its errors as `io::Error`s (the
/// hyper error kept as the cause).
type BodyBytes =
    futures_util::stream::MapErr<BodyDataStream<Incoming>, fn(hyper::Error) -> io::Error>;

fn body_bytes(body: Incoming) -> BodyBytes {
    BodyDataStream::new(body).map_err(io::Error::other as fn(hyper::Error) -> io::Error)
}

/// The SUBSCRIBE response body, decoded record by record.
pub(crate) struct EventStream {
    events: FramedRead<StreamReader<BodyBytes, Bytes>, EventCodec>,
    /// Keeps the connection's request half alive for the stream's lifetime.
    _sender: SendRequest<Full<Bytes>>,
}

impl EventStream {
    /// The next record, or why the stream ended.
    pub(crate) async fn next(&mut self) -> Result<StreamItem, StreamEnd> {
        self.events.next().await.unwrap_or(Err(StreamEnd::Eof))
    }
}

/// Decodes a whole byte stream delivered in the given chunks through the same
/// adapter as the live [`EventStream`]: the items before the end, and why it
/// ended. This is the body of the `recordio_events` fuzz target and of its
/// corpus test.
pub fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    max_record_len: usize,
) -> (Vec<StreamItem>, StreamEnd) {
    let body = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk))),
    );
    let mut events = events(body, max_record_len);
    // Every chunk is ready at once, so polling never returns `Pending`: no
    // runtime is needed and a no-op waker is never woken.
    let mut cx = Context::from_waker(Waker::noop());
    let mut items = Vec::new();
    loop {
        match events.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(item))) => items.push(item),
            Poll::Ready(Some(Err(end))) => return (items, end),
            Poll::Ready(None) => return (items, StreamEnd::Eof),
            Poll::Pending => {
                return (
                    items,
                    StreamEnd::Transport(io::Error::other("the chunk source was not ready")),
                )
            }
        }
    }
}

fn tls_connector(
    authority: &str,
    ca_file: Option<&std::path::Path>,
    verify: bool,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    ),
    AgentError,
> {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|source| {
        AgentError::ServerName {
            host: host.to_owned(),
            source,
        }
    })?;
    let trust = match (verify, ca_file) {
        (false, _) => Trust::Insecure,
        (true, Some(path)) => Trust::CaFile(path),
        (true, None) => Trust::WebPki,
    };
    Ok((transport::connector(trust)?, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{executor::event, v1};

    fn valid_stream() -> Vec<u8> {
        let mut out = Vec::new();
        let events = [
            Event {
                r#type: Some(event::Type::Heartbeat as i32),
                ..Default::default()
            },
            Event {
                r#type: Some(event::Type::Kill as i32),
                kill: Some(event::Kill {
                    task_id: v1::TaskId { value: "t".into() },
                    kill_policy: None,
                }),
                ..Default::default()
            },
            Event {
                r#type: Some(event::Type::Launch as i32),
                launch: Some(event::Launch {
                    task: crate::emulator::task_info("t", None),
                }),
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

    #[test]
    fn garbage_records_are_items_and_framing_errors_end_the_stream() {
        let event = Event {
            r#type: Some(event::Type::Heartbeat as i32),
            ..Default::default()
        }
        .encode_to_vec();
        let mut stream = crate::agent::recordio::frame(&event).to_vec();
        stream.extend_from_slice(&crate::agent::recordio::frame(&[0xff, 0xff, 0xff]));
        stream.extend_from_slice(&crate::agent::recordio::frame(&event));
        stream.extend_from_slice(b"x\n");
        stream.extend_from_slice(&crate::agent::recordio::frame(&event));
        let (items, end) = decode_chunks(stream.chunks(5), 1 << 20);
        assert!(
            matches!(
                items.as_slice(),
                [
                    StreamItem::Event(_),
                    StreamItem::Garbage { len: 3, .. },
                    StreamItem::Event(_)
                ]
            ),
            "{items:?}"
        );
        assert!(
            matches!(
                end,
                StreamEnd::Framing(RecordIoError::BadHeaderByte {
                    byte: b'x',
                    offset: 0
                })
            ),
            "{end:?}"
        );
        let (items, end) = decode_chunks([&b"5\nabc"[..]], 1 << 20);
        assert!(items.is_empty());
        assert!(
            matches!(
                end,
                StreamEnd::Framing(RecordIoError::Truncated { buffered: 3 })
            ),
            "{end:?}"
        );
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
