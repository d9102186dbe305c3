//! What Marathon sends for an app that names a custom executor, so the demo
//! and the tests can run `marathon-test-app.json` without a Marathon.
//!
//! Marathon's contract for custom executors (its `TaskBuilder`): executor id
//! `marathon-<taskId>`; `ExecutorInfo.command.value` is
//! `chmod ug+rx '<executor>' && exec '<executor>' <cmd>` and its environment is
//! the app's `env` plus `PORT0…`, `PORTS`, `HOST`, `MESOS_TASK_ID` and
//! `MARATHON_APP_*`; the `TaskInfo` has **no** command;
//! `taskKillGracePeriodSeconds` becomes `TaskInfo.kill_policy`; `MESOS_HTTP`,
//! `MESOS_HTTPS`, `MESOS_TCP` and `COMMAND` health checks become
//! `TaskInfo.health_check`; labels become `TaskInfo.labels`.

use serde_json::Value;

use crate::proto::v1::{self, health_check};

/// A Marathon app turned into what the agent hands the executor.
#[derive(Debug, Clone)]
pub struct MarathonLaunch {
    /// The executor's info (command with Marathon's prefix, app environment).
    pub executor_info: v1::ExecutorInfo,
    /// The task (no command).
    pub task: v1::TaskInfo,
    /// The executor process environment the agent derives from
    /// `executor_info.command.environment`.
    pub executor_env: Vec<(String, String)>,
}

/// Why an app definition cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// A required field is missing or has the wrong type.
    #[error("marathon app definition: {0}")]
    Field(&'static str),
}

fn str_field<'a>(app: &'a Value, key: &'static str) -> Result<&'a str, AppError> {
    app.get(key)
        .and_then(Value::as_str)
        .ok_or(AppError::Field(key))
}

/// Translates `app` for a task with the given id, agent id and host ports.
pub fn translate(
    app: &Value,
    task_id: &str,
    agent_id: &str,
    framework_id: &str,
    ports: &[u16],
) -> Result<MarathonLaunch, AppError> {
    let app_id = str_field(app, "id")?;
    let executor = str_field(app, "executor")?;
    let cmd = match app.get("cmd").and_then(Value::as_str) {
        Some(cmd) => cmd.to_owned(),
        None => app
            .get("args")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .ok_or(AppError::Field("cmd"))?,
    };
    let mut env: Vec<(String, String)> = app
        .get("env")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    for (i, port) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), port.to_string()));
    }
    if let Some(first) = ports.first() {
        env.push(("PORT".into(), first.to_string()));
    }
    env.push((
        "PORTS".into(),
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ));
    env.push(("HOST".into(), "127.0.0.1".into()));
    env.push(("MESOS_TASK_ID".into(), task_id.to_owned()));
    env.push(("MARATHON_APP_ID".into(), app_id.to_owned()));
    env.push((
        "MARATHON_APP_VERSION".into(),
        "2026-11-23T00:00:00.000Z".into(),
    ));

    let executor_id = format!("marathon-{task_id}");
    let command = v1::CommandInfo {
        value: Some(format!(
            "chmod ug+rx '{executor}' && exec '{executor}' {cmd}"
        )),
        shell: Some(true),
        environment: Some(v1::Environment {
            variables: env
                .iter()
                .map(|(k, v)| v1::environment::Variable {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    };
    let executor_info = v1::ExecutorInfo {
        executor_id: v1::ExecutorId { value: executor_id },
        framework_id: Some(v1::FrameworkId {
            value: framework_id.to_owned(),
        }),
        command: Some(command),
        name: Some(format!("marathon executor for {app_id}")),
        r#type: Some(v1::executor_info::Type::Custom as i32),
        ..Default::default()
    };
    let labels = app
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| v1::Labels {
            labels: m
                .iter()
                .map(|(k, v)| v1::Label {
                    key: k.clone(),
                    value: v.as_str().map(str::to_owned),
                })
                .collect(),
        });
    let kill_policy = app
        .get("taskKillGracePeriodSeconds")
        .and_then(Value::as_f64)
        .map(|secs| v1::KillPolicy {
            #[allow(clippy::cast_possible_truncation)]
            grace_period: Some(v1::DurationInfo {
                nanoseconds: (secs * 1e9) as i64,
            }),
        });
    let health_check = app
        .get("healthChecks")
        .and_then(Value::as_array)
        .and_then(|checks| checks.iter().find_map(|c| health_check_of(c, ports)));
    let task = v1::TaskInfo {
        name: app_id.trim_start_matches('/').replace('/', "."),
        task_id: v1::TaskId {
            value: task_id.to_owned(),
        },
        agent_id: v1::AgentId {
            value: agent_id.to_owned(),
        },
        executor: Some(executor_info.clone()),
        labels,
        kill_policy,
        health_check,
        ..Default::default()
    };
    Ok(MarathonLaunch {
        executor_info,
        task,
        executor_env: env,
    })
}

/// Marathon's Mesos-side health checks; Marathon-side `HTTP`/`TCP` checks never
/// reach the executor and are skipped.
fn health_check_of(check: &Value, ports: &[u16]) -> Option<v1::HealthCheck> {
    let protocol = check.get("protocol").and_then(Value::as_str)?;
    let num = |k: &str| check.get(k).and_then(Value::as_f64);
    let port = check
        .get("port")
        .and_then(Value::as_u64)
        .or_else(|| {
            ports
                .get(
                    usize::try_from(check.get("portIndex").and_then(Value::as_u64).unwrap_or(0))
                        .ok()?,
                )
                .map(|p| u64::from(*p))
        })
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    let mut hc = v1::HealthCheck {
        delay_seconds: num("delaySeconds"),
        interval_seconds: num("intervalSeconds"),
        timeout_seconds: num("timeoutSeconds"),
        grace_period_seconds: num("gracePeriodSeconds"),
        consecutive_failures: num("maxConsecutiveFailures").map(|f| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = f as u32;
            n
        }),
        ..Default::default()
    };
    match protocol {
        "MESOS_HTTP" | "MESOS_HTTPS" => {
            hc.r#type = Some(health_check::Type::Http as i32);
            hc.http = Some(health_check::HttpCheckInfo {
                port,
                path: check.get("path").and_then(Value::as_str).map(str::to_owned),
                scheme: Some(
                    if protocol == "MESOS_HTTPS" {
                        "https"
                    } else {
                        "http"
                    }
                    .to_owned(),
                ),
                ..Default::default()
            });
        }
        "MESOS_TCP" => {
            hc.r#type = Some(health_check::Type::Tcp as i32);
            hc.tcp = Some(health_check::TcpCheckInfo {
                port,
                ..Default::default()
            });
        }
        "COMMAND" => {
            hc.r#type = Some(health_check::Type::Command as i32);
            let value = check
                .get("command")
                .and_then(|c| c.get("value"))
                .and_then(Value::as_str)?;
            hc.command = Some(v1::CommandInfo {
                value: Some(value.to_owned()),
                ..Default::default()
            });
        }
        _ => return None,
    }
    Some(hc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_app_translates_like_marathon() {
        let app: Value =
            serde_json::from_str(include_str!("../../marathon-test-app.json")).expect("valid JSON");
        let l = translate(&app, "test-app.1", "agent-1", "fw-1", &[31000]).expect("translates");
        assert_eq!(l.executor_info.executor_id.value, "marathon-test-app.1");
        let line = l
            .executor_info
            .command
            .as_ref()
            .and_then(|c| c.value.clone())
            .unwrap_or_default();
        assert_eq!(line, "chmod ug+rx './mesos-hook-executor' && exec './mesos-hook-executor' exec python3 -m http.server $PORT0");
        assert_eq!(
            crate::task::launch::strip_marathon_prefix(&line),
            Some("exec python3 -m http.server $PORT0")
        );
        assert!(l.task.command.is_none());
        assert_eq!(
            l.task
                .kill_policy
                .and_then(|k| k.grace_period)
                .map(|d| d.nanoseconds),
            Some(10_000_000_000)
        );
        let hc = l.task.health_check.expect("MESOS_HTTP check");
        assert_eq!(hc.http.map(|h| h.port), Some(31000));
        assert!(l
            .executor_env
            .contains(&("PORT0".to_owned(), "31000".to_owned())));
    }

    #[test]
    fn every_hook_executor_variable_of_the_app_exists() {
        let app: Value =
            serde_json::from_str(include_str!("../../marathon-test-app.json")).expect("valid JSON");
        let known: Vec<&str> = crate::config::VARIABLES.iter().map(|v| v.name).collect();
        for name in app["env"]
            .as_object()
            .expect("env")
            .keys()
            .filter(|k| k.starts_with(crate::config::PREFIX))
        {
            assert!(
                known.contains(&name.as_str()),
                "{name} is not an executor variable"
            );
        }
    }
}
