//! A minimal outbound HTTP/1.1 client for hooks (Consul, webhooks): one
//! connection per request, the whole exchange bounded by a timeout, `https`
//! verified against the web PKI roots. Small on purpose: hooks send a handful
//! of small JSON requests per task lifetime.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request, Uri};
use hyper_util::rt::TokioIo;

/// Largest response body kept (for error messages and JSON answers).
const MAX_BODY: usize = 256 * 1024;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// Connection or protocol failure.
    #[error("{method} {url}: {reason}")]
    Transport {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// An answer: status and (capped) body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body as text (lossy UTF-8, capped).
    pub body: String,
}

impl Response {
    /// Whether the status is 2xx.
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request and reads the whole answer within `timeout`.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| HttpError::Url { url: url.to_owned(), reason: e.to_string() })?;
    let m = method.to_string();
    match tokio::time::timeout(timeout, exchange(method, &uri, headers, body)).await {
        Ok(result) => result.map_err(|reason| HttpError::Transport { method: m, url: url.to_owned(), reason }),
        Err(_) => Err(HttpError::Timeout { method: m, url: url.to_owned(), timeout }),
    }
}

async fn exchange(method: Method, uri: &Uri, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Result<Response, String> {
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => return Err(format!("unsupported scheme {other:?} (http or https)")),
    };
    let host = uri.host().ok_or("no host in URL")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let address = format!("{}:{port}", host.trim_start_matches('[').trim_end_matches(']'));
    let tcp = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = uri.authority().map_or(address.clone(), |a| a.to_string());
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, authority).header(header::CONNECTION, "close");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| format!("server name {host:?}: {e}"))?;
        let tls = crate::net::transport::shared(crate::net::transport::Trust::WebPki)?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {address}: {e}"))?;
        roundtrip(TokioIo::new(tls), request).await
    } else {
        roundtrip(TokioIo::new(tcp), request).await
    }
}

async fn roundtrip<T>(io: T, request: Request<Full<Bytes>>) -> Result<Response, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|e| e.to_string())?.to_bytes();
    driver.abort();
    Ok(Response { status, body: String::from_utf8_lossy(&body).into_owned() })
}
