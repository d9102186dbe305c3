//! An in-process fake of the Consul agent HTTP API (Consul cannot be installed
//! here), following Consul's documented agent endpoints:
//! - `PUT /v1/agent/service/register` with a JSON service definition: `200` and
//!   an empty body; `400` `Missing service name` without `Name`; `400` on
//!   invalid JSON;
//! - `PUT /v1/agent/service/deregister/{id}`: `200`, or `404`
//!   `Unknown service ID "{id}"...` for an id it does not hold;
//! - `GET /v1/agent/services`: the registered services as a JSON object;
//! - `GET /v1/health/service/{name}` (`?passing`: only instances whose
//!   registered check is not `critical`): a JSON array of
//!   `{"Node":{"Node","Address"},"Service":{"ID","Service","Tags","Address","Port"},"Checks":[…]}`;
//! - with an ACL token configured, a request without the right
//!   `X-Consul-Token` gets `403` `Permission denied`;
//! - a wrong method gets `405`.
//!
//! It doubles as a webhook receiver: every request is recorded with its time,
//! and `POST /hook/...` answers with a configurable status.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: SystemTime,
    pub method: String,
    pub path: String,
    pub token: Option<String>,
    pub body: String,
    pub status: u16,
}

#[derive(Default)]
struct State {
    services: BTreeMap<String, serde_json::Value>,
    requests: Vec<Recorded>,
    webhook_status: u16,
}

#[derive(Clone)]
pub struct FakeConsul {
    pub addr: SocketAddr,
    token: Option<String>,
    state: Arc<Mutex<State>>,
}

impl FakeConsul {
    pub async fn start(token: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = Self {
            addr,
            token: token.map(str::to_owned),
            state: Arc::new(Mutex::new(State {
                webhook_status: 200,
                ..State::default()
            })),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    pub fn services(&self) -> BTreeMap<String, serde_json::Value> {
        self.state
            .lock()
            .map(|s| s.services.clone())
            .unwrap_or_default()
    }

    pub fn set_webhook_status(&self, status: u16) {
        if let Ok(mut s) = self.state.lock() {
            s.webhook_status = status;
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let passing = req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|p| p == "passing" || p.starts_with("passing="))
        });
        let token = req
            .headers()
            .get("x-consul-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body_text = String::from_utf8_lossy(&body).into_owned();
        let (status, answer) = self.decide(&method, &path, token.as_deref(), &body, passing);
        if let Ok(mut s) = self.state.lock() {
            s.requests.push(Recorded {
                at: SystemTime::now(),
                method: method.to_string(),
                path,
                token,
                body: body_text,
                status: status.as_u16(),
            });
        }
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(answer)))
            .unwrap_or_default()
    }

    fn decide(
        &self,
        method: &Method,
        path: &str,
        token: Option<&str>,
        body: &[u8],
        passing: bool,
    ) -> (StatusCode, String) {
        if path.starts_with("/hook") {
            let status = self.state.lock().map(|s| s.webhook_status).unwrap_or(200);
            return (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                String::new(),
            );
        }
        if self.token.is_some() && token != self.token.as_deref() {
            return (StatusCode::FORBIDDEN, "Permission denied".into());
        }
        let Ok(mut state) = self.state.lock() else {
            return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
        };
        match (method, path) {
            (&Method::PUT, "/v1/agent/service/register") => {
                let Ok(def) = serde_json::from_slice::<serde_json::Value>(body) else {
                    return (
                        StatusCode::BAD_REQUEST,
                        "Request decode failed: invalid JSON".into(),
                    );
                };
                let Some(name) = def
                    .get("Name")
                    .and_then(|n| n.as_str())
                    .filter(|n| !n.is_empty())
                else {
                    return (StatusCode::BAD_REQUEST, "Missing service name".into());
                };
                let id = def
                    .get("ID")
                    .and_then(|i| i.as_str())
                    .unwrap_or(name)
                    .to_owned();
                state.services.insert(id, def);
                (StatusCode::OK, String::new())
            }
            (&Method::PUT, p) if p.starts_with("/v1/agent/service/deregister/") => {
                let id = p.trim_start_matches("/v1/agent/service/deregister/");
                if state.services.remove(id).is_some() {
                    (StatusCode::OK, String::new())
                } else {
                    (
                        StatusCode::NOT_FOUND,
                        format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."),
                    )
                }
            }
            (&Method::GET, "/v1/agent/services") => (
                StatusCode::OK,
                serde_json::to_string(&state.services).unwrap_or_default(),
            ),
            (&Method::GET, p) if p.starts_with("/v1/health/service/") => {
                let name = p.trim_start_matches("/v1/health/service/");
                let entries: Vec<serde_json::Value> = state
                    .services
                    .values()
                    .filter(|d| d["Name"] == name)
                    .filter(|d| !passing || d["Check"]["Status"] != "critical")
                    .map(|d| {
                        let status = d["Check"]["Status"].as_str().unwrap_or("passing");
                        serde_json::json!({
                            "Node": {"Node": "fake-node", "Address": "127.0.0.1"},
                            "Service": {
                                "ID": d.get("ID").unwrap_or(&d["Name"]),
                                "Service": d["Name"],
                                "Tags": d.get("Tags").cloned().unwrap_or_else(|| serde_json::json!([])),
                                "Address": d.get("Address").cloned().unwrap_or_else(|| serde_json::json!("")),
                                "Port": d.get("Port").cloned().unwrap_or_else(|| serde_json::json!(0)),
                            },
                            "Checks": [{"Node": "fake-node", "CheckID": "serfHealth", "Status": status}],
                        })
                    })
                    .collect();
                (StatusCode::OK, serde_json::Value::from(entries).to_string())
            }
            (_, "/v1/agent/service/register" | "/v1/agent/services") => {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
            }
            _ => (StatusCode::NOT_FOUND, "not found".into()),
        }
    }
}
