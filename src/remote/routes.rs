//! The one routing decision: (method, path) → a typed [`Route`], or 404/405.

use std::time::Duration;

use hyper::Method;

use super::{error::ApiError, plan::seconds};

/// A request, routed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    /// `GET /metrics` (Prometheus text format).
    Metrics,
    /// `GET /remote/status`.
    Status,
    /// `POST /remote/execute`.
    Execute,
    /// `POST /remote/task` (pid in the body).
    CompatResult,
    /// `GET /remote/task`.
    List,
    /// `GET /remote/task/{pid}[?wait=SECS]`.
    Result {
        /// The command.
        pid: i32,
        /// How long to wait for it to finish.
        wait: Option<Duration>,
    },
    /// `DELETE /remote/task/{pid}`.
    Terminate {
        /// The command.
        pid: i32,
    },
    /// `GET /remote/task/{pid}/output` (SSE).
    Output {
        /// The command.
        pid: i32,
    },
}

/// A pid in a path: decimal digits only (no sign, no spaces) of a positive
/// `i32`; anything else is the same `400` as an invalid pid in a body
/// ([`pid`]).
fn pid_param(s: &str) -> Result<i32, ApiError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest(format!("{s:?} is not a pid")));
    }
    s.parse::<i64>().map_or_else(
        |_| Err(ApiError::BadRequest(format!("{s:?} is not a pid"))),
        pid,
    )
}

/// The one pid check of every route, path or body: a positive `i32` is a
/// pid (`404` if no command has it), anything else is `400`.
pub(crate) fn pid(value: i64) -> Result<i32, ApiError> {
    match i32::try_from(value) {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(ApiError::BadRequest(format!("{value} is not a pid"))),
    }
}

fn wait_param(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="))
    else {
        return Ok(None);
    };
    let secs: f64 = value
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("wait={value:?} is not a number of seconds")))?;
    seconds("wait", secs)
}

/// The one routing decision: (method, path) → [`Route`], or 404/405.
pub(crate) fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Route, ApiError> {
    if path == "/metrics" {
        return match method.as_str() {
            "GET" => Ok(Route::Metrics),
            _ => Err(ApiError::MethodNotAllowed("GET")),
        };
    }
    let segments: Vec<&str> = path
        .strip_prefix("/remote/")
        .map(|p| p.split('/').collect())
        .unwrap_or_default();
    let m = method.as_str();
    match (m, segments.as_slice()) {
        ("GET", ["status"]) => Ok(Route::Status),
        (_, ["status"]) => Err(ApiError::MethodNotAllowed("GET")),
        ("POST", ["execute"]) => Ok(Route::Execute),
        (_, ["execute"]) => Err(ApiError::MethodNotAllowed("POST")),
        ("GET", ["task"]) => Ok(Route::List),
        ("POST", ["task"]) => Ok(Route::CompatResult),
        (_, ["task"]) => Err(ApiError::MethodNotAllowed("GET, POST")),
        ("GET", ["task", pid]) => Ok(Route::Result {
            pid: pid_param(pid)?,
            wait: wait_param(query)?,
        }),
        ("DELETE", ["task", pid]) => Ok(Route::Terminate {
            pid: pid_param(pid)?,
        }),
        (_, ["task", _]) => Err(ApiError::MethodNotAllowed("GET, DELETE")),
        ("GET", ["task", pid, "output"]) => Ok(Route::Output {
            pid: pid_param(pid)?,
        }),
        (_, ["task", _, "output"]) => Err(ApiError::MethodNotAllowed("GET")),
        _ => Err(ApiError::NoRoute(format!("{m} {path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (method, path template) the server answers: the OpenAPI
    /// document must list exactly these, and each must route.
    const ROUTES: &[(&str, &str)] = &[
        ("GET", "/metrics"),
        ("GET", "/remote/status"),
        ("POST", "/remote/execute"),
        ("GET", "/remote/task"),
        ("POST", "/remote/task"),
        ("GET", "/remote/task/{pid}"),
        ("DELETE", "/remote/task/{pid}"),
        ("GET", "/remote/task/{pid}/output"),
    ];

    fn openapi() -> serde_json::Value {
        serde_json::from_str(include_str!("../../docs/remote-api.openapi.json"))
            .expect("the OpenAPI document is JSON")
    }

    #[test]
    fn routes_and_their_405s() {
        assert_eq!(
            route(&Method::GET, "/remote/status", None).ok(),
            Some(Route::Status)
        );
        assert_eq!(
            route(&Method::GET, "/remote/task/42", Some("wait=1.5")).ok(),
            Some(Route::Result {
                pid: 42,
                wait: Some(Duration::from_millis(1500))
            })
        );
        assert!(matches!(
            route(&Method::PUT, "/remote/status", None),
            Err(ApiError::MethodNotAllowed("GET"))
        ));
        assert!(matches!(
            route(&Method::GET, "/remote/nothing", None),
            Err(ApiError::NoRoute(_))
        ));
        assert!(matches!(
            route(&Method::GET, "/remote/task/abc", None),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            route(&Method::GET, "/remote/task/1", Some("wait=x")),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn an_invalid_pid_is_400_on_every_route() {
        for bad in [
            "0",
            "-1",
            "+5",
            " 5",
            "5 ",
            "",
            "2147483648",
            "99999999999",
            "1e3",
        ] {
            for (m, p) in [
                (Method::GET, format!("/remote/task/{bad}")),
                (Method::DELETE, format!("/remote/task/{bad}")),
                (Method::GET, format!("/remote/task/{bad}/output")),
            ] {
                let r = route(&m, &p, None);
                assert!(matches!(r, Err(ApiError::BadRequest(_))), "{m} {p}: {r:?}");
            }
        }
        for bad in [0, -1, i64::from(i32::MAX) + 1, i64::MIN] {
            assert!(matches!(pid(bad), Err(ApiError::BadRequest(_))), "{bad}");
        }
        assert_eq!(pid(7).ok(), Some(7));
        assert_eq!(
            route(&Method::GET, "/remote/task/2147483647", None).ok(),
            Some(Route::Result {
                pid: i32::MAX,
                wait: None
            })
        );
    }

    #[test]
    fn openapi_document_matches_the_routes() {
        let doc = openapi();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in paths {
            let concrete = path.replace("{pid}", "42");
            for method in ["get", "post", "put", "delete", "patch"] {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let routed = route(&m, &concrete, None);
                if item.get(method).is_some() {
                    documented.push((method.to_uppercase(), path.clone()));
                    assert!(
                        routed.is_ok(),
                        "{method} {path} is documented but the server answers {routed:?}"
                    );
                } else {
                    assert!(
                        matches!(routed, Err(ApiError::MethodNotAllowed(_))),
                        "{method} {path} is not documented but routes to {routed:?}"
                    );
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
