//! The one outbound HTTP client (reqwest) for everything but the agent: hooks
//! (webhooks, Consul) and HTTP/HTTPS health probes. Each [`Profile`] is one
//! `reqwest::Client`, built on first use and shared by every caller for the
//! process's lifetime; every request carries its own timeout. TLS comes from
//! [`super::transport::client_config`], so reqwest runs on the same rustls and
//! ring provider as the agent client. Proxy variables in the environment are
//! ignored: hooks and probes talk to the addresses they were given, as before.

use std::{sync::OnceLock, time::Duration};

use reqwest::{header, redirect, Method};

use crate::net::transport::{self, TlsError, Trust};

/// Most redirects an HTTP probe follows before giving up (an error, as curl's
/// "maximum redirects followed"); Mesos' probes run `curl -L`.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Largest response body kept (for error messages and JSON answers).
const MAX_BODY: usize = 256 * 1024;

/// The User-Agent of every request.
const USER_AGENT: &str = concat!("mesos-hook-executor/", env!("CARGO_PKG_VERSION"));

/// What a client is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// Webhooks and Consul: web-PKI verification, kept-alive connections,
    /// redirects returned to the caller (a POST must not silently move).
    Hooks,
    /// HTTP(S) health probes: a fresh connection per probe (a probe checks
    /// that the task accepts connections), any certificate (`curl -k`), and
    /// up to [`MAX_REDIRECTS`] redirects followed (`curl -L`).
    Probes,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The TLS configuration could not be built.
    #[error("TLS client setup: {0}")]
    Tls(#[from] TlsError),
    /// reqwest refused the settings.
    #[error("HTTP client setup: {}", Causes(.0))]
    Build(#[source] reqwest::Error),
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The shared client is unusable (its setup failed once, at first use).
    #[error("{0}")]
    Client(#[source] &'static ClientError),
    /// No complete answer within the request's timeout.
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        /// Method.
        method: Method,
        /// URL.
        url: String,
        /// The limit.
        timeout: Duration,
        /// reqwest's timeout error.
        #[source]
        source: reqwest::Error,
    },
    /// Bad URL, connection, TLS, protocol or redirect failure.
    #[error("{method} {url}: {}", Causes(.source))]
    Transport {
        /// Method.
        method: Method,
        /// URL.
        url: String,
        /// What reqwest reported (its causes hold the details).
        #[source]
        source: reqwest::Error,
    },
}

impl HttpError {
    /// Whether a probe gave up because it met more than [`MAX_REDIRECTS`] redirects.
    pub(crate) fn is_too_many_redirects(&self) -> bool {
        matches!(self, Self::Transport { source, .. } if source.is_redirect())
    }
}

/// An answer: status and (capped) body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body as text (lossy UTF-8, capped).
    pub body: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The shared client for `profile`, built on first use. A setup failure is
/// kept too: every later request reports it rather than retrying the setup.
pub(crate) fn client(profile: Profile) -> Result<&'static reqwest::Client, HttpError> {
    static HOOKS: OnceLock<Result<reqwest::Client, ClientError>> = OnceLock::new();
    static PROBES: OnceLock<Result<reqwest::Client, ClientError>> = OnceLock::new();
    let cell = match profile {
        Profile::Hooks => &HOOKS,
        Profile::Probes => &PROBES,
    };
    cell.get_or_init(|| build(profile))
        .as_ref()
        .map_err(HttpError::Client)
}

fn build(profile: Profile) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .no_proxy()
        .tcp_nodelay(true);
    let builder = match profile {
        Profile::Hooks => builder
            .use_preconfigured_tls(transport::client_config(Trust::WebPki)?)
            .redirect(redirect::Policy::none()),
        Profile::Probes => builder
            .use_preconfigured_tls(transport::client_config(Trust::Insecure)?)
            .pool_max_idle_per_host(0)
            .redirect(redirect::Policy::limited(MAX_REDIRECTS)),
    };
    builder.build().map_err(ClientError::Build)
}

/// Sends one hook request (JSON body if any) and reads the whole answer,
/// all within `timeout`.
pub(crate) async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut request = client(Profile::Hooks)?
        .request(method.clone(), url)
        .timeout(timeout);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let failed = |source: reqwest::Error| error(method.clone(), url, Some(timeout), source);
    let mut response = request.send().await.map_err(failed)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_BODY - body.len())]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What an HTTP probe saw: the final status, and the `Location` of a
/// redirect that was not followed (it could not be resolved to an http(s) URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeAnswer {
    /// Status after redirects.
    pub status: u16,
    /// `Location` of a final 301/302/303/307/308 answer.
    pub unfollowed: Option<String>,
}

/// GETs `url` on a fresh connection, following redirects, within `timeout`
/// (none when `None`, as Mesos' `timeout_seconds` 0). The body is not read.
pub(crate) async fn probe(url: &str, timeout: Option<Duration>) -> Result<ProbeAnswer, HttpError> {
    let mut request = client(Profile::Probes)?.get(url);
    if let Some(limit) = timeout {
        request = request.timeout(limit);
    }
    let response = request
        .send()
        .await
        .map_err(|source| error(Method::GET, url, timeout, source))?;
    let status = response.status();
    let followed = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
    let unfollowed = response
        .headers()
        .get(header::LOCATION)
        .filter(|_| followed)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
    Ok(ProbeAnswer {
        status: status.as_u16(),
        unfollowed,
    })
}

fn error(
    method: Method,
    url: &str,
    timeout: Option<Duration>,
    source: reqwest::Error,
) -> HttpError {
    let url = url.to_owned();
    match timeout {
        Some(timeout) if source.is_timeout() => HttpError::Timeout {
            method,
            url,
            timeout,
            source,
        },
        _ => HttpError::Transport {
            method,
            url,
            source,
        },
    }
}

/// Displays a reqwest error by its causes (`a: b: c`): reqwest's own message
/// only repeats the URL ("error sending request for url (…)"), the useful
/// part (refused, certificate, too many redirects) is in its sources.
struct Causes<'a>(&'a reqwest::Error);

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(first) = std::error::Error::source(self.0) else {
            return write!(f, "{}", self.0);
        };
        write!(f, "{first}")?;
        let mut cause = first.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_name_the_request_and_the_cause() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("http://127.0.0.1:{closed}/hook");
        let e = send(
            Method::POST,
            &url,
            &[],
            Some(b"{}".to_vec()),
            Duration::from_secs(5),
        )
        .await
        .expect_err("refused");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("POST {url}: ")) && text.to_lowercase().contains("refused"),
            "{text}"
        );
        assert!(matches!(e, HttpError::Transport { .. }));
        let e = send(Method::PUT, "not a url", &[], None, Duration::from_secs(5))
            .await
            .expect_err("invalid");
        assert!(e.to_string().starts_with("PUT not a url: "), "{e}");
    }

    #[test]
    fn both_clients_build_once() {
        for profile in [Profile::Hooks, Profile::Probes] {
            let first = client(profile).expect("client");
            assert!(std::ptr::eq(first, client(profile).expect("client")));
        }
    }
}
