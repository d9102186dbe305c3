//! Response bodies: a whole JSON document, or a Server-Sent Events stream.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::{
    body::{Body, Frame, SizeHint},
    header::{self, HeaderValue},
    Response, StatusCode,
};
use tokio::sync::mpsc;

use super::pool::InUse;

/// A response body: a whole JSON document, or an SSE stream fed by a bounded
/// channel (a slow reader slows its producer; nothing piles up). It holds its
/// connection's request in progress ([`InUse`]) until it is dropped, which
/// hyper does once the body is sent, so a streamed body keeps its connection
/// from counting as idle.
pub(crate) struct ApiBody {
    kind: Kind,
    _hold: Option<InUse>,
}

enum Kind {
    /// The whole body (taken when sent).
    Full(Option<Bytes>),
    /// Server-Sent Events.
    Stream(mpsc::Receiver<Bytes>),
}

impl ApiBody {
    fn new(kind: Kind) -> Self {
        Self { kind, _hold: None }
    }

    /// The same body, keeping `hold` until it is sent or dropped.
    #[must_use]
    pub(crate) fn holding(self, hold: InUse) -> Self {
        Self {
            kind: self.kind,
            _hold: Some(hold),
        }
    }
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}

/// A JSON response.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<ApiBody> {
    // Our own types always serialise; an empty object is the safe fallback.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(ApiBody::new(Kind::Full(Some(Bytes::from(bytes)))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A `200` text response of `content_type`.
pub(crate) fn text_response(text: String, content_type: &'static str) -> Response<ApiBody> {
    let mut r = Response::new(ApiBody::new(Kind::Full(Some(Bytes::from(text)))));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An SSE response fed by `rx`.
pub(crate) fn event_stream(rx: mpsc::Receiver<Bytes>) -> Response<ApiBody> {
    let mut r = Response::new(ApiBody::new(Kind::Stream(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// One SSE event with JSON data.
pub(crate) fn sse_event(event: &str, data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}
