//! The `consul` hook: registers the task's service with the local Consul agent
//! once the task is healthy, and deregisters it before the task is signalled,
//! then waits `HOOK_EXECUTOR_CONSUL_DEREGISTER_WAIT` so traffic drains.
//!
//! Consul's agent API: `PUT /v1/agent/service/register` with a JSON service
//! definition and `PUT /v1/agent/service/deregister/{id}`; the token goes in
//! `X-Consul-Token`. Address and token follow Consul's conventions:
//! `CONSUL_HTTP_ADDR` (`host:port` or a URL; default `127.0.0.1:8500`) and
//! `CONSUL_HTTP_TOKEN`.
//!
//! What is registered: only tasks with the service label (`consul` by
//! default; its value is the service name, or the task name when empty). Tags
//! are the keys of labels whose value is `tag`, plus `mesos-hook-executor`.
//! Each *named* port of `TaskInfo.discovery` becomes one registration (id
//! `<task id>_<port name>`, the port name added as a tag); without named ports
//! the task's first port is registered under the task id. The check mirrors the
//! task's Mesos HTTP/TCP health check (a COMMAND check has no Consul equivalent
//! without script checks, and is not mirrored), starting as passing since
//! registration happens only once the task is healthy.

use std::{sync::Mutex, time::Duration};

use reqwest::Method;
use serde_json::{json, Value};

use super::{Hook, HookContext, HookError, HookEvent, HookFuture};
use crate::{config::Secret, net::http, proto::v1};

/// Consul agent connection and registration settings.
#[derive(Debug)]
pub(crate) struct ConsulHook {
    /// Base URL of the agent API, e.g. `http://127.0.0.1:8500`.
    pub base_url: String,
    /// ACL token, sent as `X-Consul-Token`.
    pub token: Option<Secret>,
    /// The label naming the service.
    pub service_label: String,
    /// Address to register (default: the agent's hostname).
    pub address: Option<String>,
    /// Wait after deregistering, so load balancers drain.
    pub deregister_wait: Duration,
    /// Timeout of each call.
    pub call_timeout: Duration,
    /// Service ids we registered, for deregistration.
    registered: Mutex<Vec<String>>,
}

impl ConsulHook {
    /// A hook talking to `base_url`.
    #[must_use]
    pub(crate) fn new(
        base_url: String,
        token: Option<Secret>,
        service_label: String,
        address: Option<String>,
        deregister_wait: Duration,
        call_timeout: Duration,
    ) -> Self {
        Self {
            base_url,
            token,
            service_label,
            address,
            deregister_wait,
            call_timeout,
            registered: Mutex::new(Vec::new()),
        }
    }

    async fn put(&self, path: &str, body: Option<Value>) -> Result<(), HookError> {
        let url = format!("{}{path}", self.base_url);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(token) = &self.token {
            headers.push(("X-Consul-Token", token.expose()));
        }
        let body = body.map(|b| b.to_string().into_bytes());
        let response = http::send(Method::PUT, &url, &headers, body, self.call_timeout)
            .await
            .map_err(|e| HookError::new(format!("consul: {e}")))?;
        if response.is_success() {
            Ok(())
        } else {
            Err(HookError::new(format!(
                "consul: PUT {path} answered {}: {}",
                response.status,
                response.body.trim()
            )))
        }
    }

    async fn register(&self, ctx: &HookContext) -> Result<(), HookError> {
        let Some(task) = ctx.task.as_deref() else {
            return Ok(());
        };
        let address = self
            .address
            .clone()
            .or_else(|| ctx.agent_hostname.clone())
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let definitions = service_definitions(task, &self.service_label, &address);
        if definitions.is_empty() {
            tracing::info!(label = %self.service_label, "task has no service label or no port; not registering with Consul");
            return Ok(());
        }
        for definition in definitions {
            let id = definition["ID"].as_str().unwrap_or_default().to_owned();
            self.put("/v1/agent/service/register", Some(definition))
                .await?;
            tracing::info!(service_id = %id, "registered with Consul");
            if let Ok(mut registered) = self.registered.lock() {
                registered.push(id);
            }
        }
        Ok(())
    }

    async fn deregister(&self) -> Result<(), HookError> {
        let ids = self
            .registered
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(());
        }
        let mut first_error = None;
        for id in &ids {
            match self
                .put(&format!("/v1/agent/service/deregister/{id}"), None)
                .await
            {
                Ok(()) => tracing::info!(service_id = %id, "deregistered from Consul"),
                Err(e) => {
                    tracing::warn!(service_id = %id, reason = %e, "Consul deregistration failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        if !self.deregister_wait.is_zero() {
            tracing::info!(wait = ?self.deregister_wait, "waiting for traffic to drain before the task is signalled");
            tokio::time::sleep(self.deregister_wait).await;
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Hook for ConsulHook {
    fn name(&self) -> &'static str {
        "consul"
    }
    fn extra_time(&self, event: HookEvent) -> Duration {
        if event == HookEvent::BeforeTerminate {
            self.deregister_wait
        } else {
            Duration::ZERO
        }
    }
    fn after_healthy<'a>(&'a self, ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(self.register(ctx))
    }
    fn before_terminate<'a>(
        &'a self,
        _ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(self.deregister())
    }
}

/// The passing instances of `service` as `host:port`, from Consul's health
/// endpoint (`GET /v1/health/service/{service}?passing`), with the same
/// address and token conventions as the hook; used to discover Logstash.
pub(crate) async fn passing_instances(
    base_url: &str,
    token: Option<&Secret>,
    service: &str,
    timeout: Duration,
) -> Result<Vec<String>, HookError> {
    let url = format!("{base_url}/v1/health/service/{service}?passing");
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(token) = token {
        headers.push(("X-Consul-Token", token.expose()));
    }
    let response = http::send(Method::GET, &url, &headers, None, timeout)
        .await
        .map_err(|e| HookError::new(format!("consul: {e}")))?;
    if !response.is_success() {
        return Err(HookError::new(format!(
            "consul: GET /v1/health/service/{service} answered {}: {}",
            response.status,
            response.body.trim()
        )));
    }
    health_instances(&response.body).map_err(|e| HookError::new(format!("consul: {e}")))
}

/// `host:port` of each entry of a `/v1/health/service` answer: the service's
/// address, or the node's when the service registered none.
pub(crate) fn health_instances(body: &str) -> Result<Vec<String>, String> {
    let entries: Vec<Value> = serde_json::from_str(body)
        .map_err(|e| format!("health answer is not a JSON array: {e}"))?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            let port = e["Service"]["Port"].as_u64().filter(|p| *p > 0)?;
            let address = e["Service"]["Address"]
                .as_str()
                .filter(|a| !a.is_empty())
                .or_else(|| e["Node"]["Address"].as_str())?;
            Some(if address.contains(':') {
                format!("[{address}]:{port}")
            } else {
                format!("{address}:{port}")
            })
        })
        .collect())
}

fn label<'a>(task: &'a v1::TaskInfo, key: &str) -> Option<&'a str> {
    task.labels
        .as_ref()?
        .labels
        .iter()
        .find(|l| l.key == key)
        .map(|l| l.value.as_deref().unwrap_or_default())
}

/// The task's ports: named discovery ports, else the first port resource.
fn ports(task: &v1::TaskInfo) -> Vec<(Option<String>, u32)> {
    let named: Vec<(Option<String>, u32)> = task
        .discovery
        .as_ref()
        .and_then(|d| d.ports.as_ref())
        .map(|p| {
            p.ports
                .iter()
                .filter(|p| p.name.as_deref().is_some_and(|n| !n.is_empty()))
                .map(|p| (p.name.clone(), p.number))
                .collect()
        })
        .unwrap_or_default();
    if !named.is_empty() {
        return named;
    }
    let first_discovery = task
        .discovery
        .as_ref()
        .and_then(|d| d.ports.as_ref())
        .and_then(|p| p.ports.first())
        .map(|p| p.number);
    let first_resource = task
        .resources
        .iter()
        .filter(|r| r.name == "ports")
        .find_map(|r| r.ranges.as_ref()?.range.first().map(|r| r.begin))
        .and_then(|p| u32::try_from(p).ok());
    first_discovery
        .or(first_resource)
        .map(|p| vec![(None, p)])
        .unwrap_or_default()
}

/// Consul service definitions for `task` (pure; unit-tested).
#[must_use]
pub(crate) fn service_definitions(
    task: &v1::TaskInfo,
    service_label: &str,
    address: &str,
) -> Vec<Value> {
    let Some(name) = label(task, service_label) else {
        return Vec::new();
    };
    let name = if name.is_empty() {
        task.name.replace(['/', '.'], "-")
    } else {
        name.to_owned()
    };
    let mut tags: Vec<String> = task
        .labels
        .as_ref()
        .map(|l| {
            l.labels
                .iter()
                .filter(|l| l.value.as_deref() == Some("tag"))
                .map(|l| l.key.clone())
                .collect()
        })
        .unwrap_or_default();
    tags.push("mesos-hook-executor".to_owned());
    ports(task)
        .into_iter()
        .map(|(port_name, port)| {
            let mut tags = tags.clone();
            let id = match &port_name {
                Some(p) => {
                    tags.push(p.clone());
                    format!("{}_{p}", task.task_id.value)
                }
                None => task.task_id.value.clone(),
            };
            let mut definition = json!({
                "ID": id,
                "Name": name,
                "Tags": tags,
                "Address": address,
                "Port": port,
                "Meta": { "mesos_task_id": task.task_id.value },
            });
            if let Some(check) = task
                .health_check
                .as_ref()
                .and_then(|h| mirror_check(h, address, port))
            {
                definition["Check"] = check;
            }
            definition
        })
        .collect()
}

fn mirror_check(hc: &v1::HealthCheck, address: &str, port: u32) -> Option<Value> {
    use v1::health_check::Type;
    let ms = |secs: f64| format!("{}ms", (secs * 1000.0).round());
    let interval = ms(hc.interval_seconds());
    let timeout = ms(hc.timeout_seconds().max(1.0));
    match hc.r#type() {
        Type::Http => {
            let http = hc.http.as_ref()?;
            let scheme = http.scheme.as_deref().unwrap_or("http");
            let path = http.path.as_deref().unwrap_or("/");
            let port = if http.port == 0 { port } else { http.port };
            Some(
                json!({ "HTTP": format!("{scheme}://{address}:{port}{path}"), "Interval": interval, "Timeout": timeout, "TLSSkipVerify": true, "Status": "passing" }),
            )
        }
        Type::Tcp => {
            let tcp = hc.tcp.as_ref()?;
            let port = if tcp.port == 0 { port } else { tcp.port };
            Some(
                json!({ "TCP": format!("{address}:{port}"), "Interval": interval, "Timeout": timeout, "Status": "passing" }),
            )
        }
        Type::Command | Type::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_give_service_or_node_addresses() {
        let body = r#"[
            {"Node":{"Address":"10.0.0.1"},"Service":{"Address":"10.0.0.9","Port":5000}},
            {"Node":{"Address":"10.0.0.2"},"Service":{"Address":"","Port":5001}},
            {"Node":{"Address":"::1"},"Service":{"Port":5002}},
            {"Node":{"Address":"10.0.0.3"},"Service":{"Port":0}}
        ]"#;
        assert_eq!(
            health_instances(body),
            Ok(vec![
                "10.0.0.9:5000".into(),
                "10.0.0.2:5001".into(),
                "[::1]:5002".into()
            ])
        );
        assert!(health_instances("{}").is_err());
    }
    use crate::proto::v1::{discovery_info, DiscoveryInfo, Label, Labels, Port, Ports};

    fn task(labels: &[(&str, &str)], named_ports: &[(&str, u32)]) -> v1::TaskInfo {
        v1::TaskInfo {
            name: "web".into(),
            task_id: v1::TaskId {
                value: "web.1".into(),
            },
            labels: Some(Labels {
                labels: labels
                    .iter()
                    .map(|(k, v)| Label {
                        key: (*k).into(),
                        value: Some((*v).into()),
                    })
                    .collect(),
            }),
            discovery: Some(DiscoveryInfo {
                visibility: discovery_info::Visibility::Framework as i32,
                ports: Some(Ports {
                    ports: named_ports
                        .iter()
                        .map(|(n, p)| Port {
                            number: *p,
                            name: (!n.is_empty()).then(|| (*n).to_owned()),
                            ..Default::default()
                        })
                        .collect(),
                }),
                ..Default::default()
            }),
            health_check: Some(v1::HealthCheck {
                r#type: Some(v1::health_check::Type::Http as i32),
                http: Some(v1::health_check::HttpCheckInfo {
                    port: 0,
                    path: Some("/health".into()),
                    ..Default::default()
                }),
                interval_seconds: Some(5.0),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn registers_only_labelled_tasks_with_tags_port_and_check() {
        assert!(service_definitions(&task(&[], &[("", 31000)]), "consul", "host").is_empty());
        let defs = service_definitions(
            &task(
                &[("consul", "web-svc"), ("blue", "tag"), ("team", "x")],
                &[("", 31000)],
            ),
            "consul",
            "host1",
        );
        assert_eq!(defs.len(), 1);
        let d = &defs[0];
        assert_eq!(d["ID"], "web.1");
        assert_eq!(d["Name"], "web-svc");
        assert_eq!(d["Port"], 31000);
        assert_eq!(d["Address"], "host1");
        assert_eq!(d["Tags"], json!(["blue", "mesos-hook-executor"]));
        assert_eq!(d["Check"]["HTTP"], "http://host1:31000/health");
        assert_eq!(d["Check"]["Interval"], "5000ms");
    }

    #[test]
    fn each_named_port_is_its_own_registration() {
        let defs = service_definitions(
            &task(&[("consul", "")], &[("http", 31000), ("admin", 31001)]),
            "consul",
            "h",
        );
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[0]["ID"], "web.1_http");
        assert_eq!(defs[1]["ID"], "web.1_admin");
        assert_eq!(defs[0]["Name"], "web", "empty label value: the task name");
        assert_eq!(defs[1]["Tags"], json!(["mesos-hook-executor", "admin"]));
    }
}
