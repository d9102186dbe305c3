//! The scenarios, each run in both launch shapes: Marathon's (the executor
//! fetched into the sandbox by a `CommandInfo.URI` and started with Marathon's
//! `chmod ug+rx '…' && exec '…' <cmd>`, the app's environment in the
//! executor's, executor id `marathon-<task id>`) and drop-in (a plain command
//! task; the agent's launcher dir has our binary as `mesos-executor`).
//!
//! Waits are bounded and event-driven (status updates through the master, files
//! the task writes, processes gone); no assertion is about how fast something
//! happened. Every scenario ends with no executor or task process left under
//! its framework's directory ([`Ctx::finish`]).

use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mesos_hook_executor::emulator::marathon;
use serde_json::json;

use crate::cluster::{processes_under, Cluster};
use crate::proto::{scheduler::Offer, v1};
use crate::scheduler::Framework;

/// Upper bound for anything that should happen soon (a loaded 2-core machine,
/// an unoptimised Mesos build).
const SOON: Duration = Duration::from_secs(60);

type Outcome = Result<(), String>;
type Run = for<'a, 'c> fn(&'a mut Ctx<'c>) -> Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// How the task reaches the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Marathon's custom-executor shape.
    Marathon,
    /// A command task under our binary installed as `mesos-executor`.
    DropIn,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Self::Marathon => "marathon",
            Self::DropIn => "dropin",
        }
    }
}

/// A named scenario and the shapes it applies to.
pub struct Scenario {
    pub name: &'static str,
    pub shapes: &'static [Shape],
    pub run: Run,
}

const BOTH: &[Shape] = &[Shape::Marathon, Shape::DropIn];

/// Every scenario, in the order they run on each cluster.
pub static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "finishes",
        shapes: BOTH,
        run: |c| Box::pin(finishes(c)),
    },
    Scenario {
        name: "non_zero_exit_fails",
        shapes: BOTH,
        run: |c| Box::pin(non_zero_exit_fails(c)),
    },
    Scenario {
        name: "kill_with_grace",
        shapes: BOTH,
        run: |c| Box::pin(kill_with_grace(c)),
    },
    Scenario {
        name: "sigterm_ignored_sigkilled",
        shapes: BOTH,
        run: |c| Box::pin(sigterm_ignored_sigkilled(c)),
    },
    Scenario {
        name: "kill_policy_overrides",
        shapes: BOTH,
        run: |c| Box::pin(kill_policy_overrides(c)),
    },
    Scenario {
        name: "agent_restart",
        shapes: BOTH,
        run: |c| Box::pin(agent_restart(c)),
    },
    Scenario {
        name: "update_while_agent_down",
        shapes: BOTH,
        run: |c| Box::pin(update_while_agent_down(c)),
    },
    Scenario {
        name: "framework_teardown",
        shapes: BOTH,
        run: |c| Box::pin(framework_teardown(c)),
    },
    Scenario {
        name: "shutdown_executor",
        shapes: BOTH,
        run: |c| Box::pin(shutdown_executor(c)),
    },
    Scenario {
        name: "http_health_check",
        shapes: BOTH,
        run: |c| Box::pin(http_health_check(c)),
    },
    Scenario {
        name: "before_start_hook_env",
        shapes: BOTH,
        run: |c| Box::pin(before_start_hook_env(c)),
    },
    Scenario {
        name: "remote_api_and_executorctl",
        shapes: BOTH,
        run: |c| Box::pin(remote_api_and_executorctl(c)),
    },
    Scenario {
        name: "task_output",
        shapes: BOTH,
        run: |c| Box::pin(task_output(c)),
    },
    Scenario {
        name: "metrics",
        shapes: BOTH,
        run: |c| Box::pin(metrics(c)),
    },
    Scenario {
        name: "executorctl_ls",
        shapes: BOTH,
        run: |c| Box::pin(executorctl_ls(c)),
    },
];

/// Files every scenario uses: the binaries and the hooks archive; and the
/// drop-in cluster's Logstash stand-in.
pub struct Fixtures {
    executor: PathBuf,
    executorctl: PathBuf,
    hooks_archive: PathBuf,
    /// The `json_lines` listener of the drop-in cluster: a drop-in executor's
    /// settings are the agent's (fixed when it starts), so its Logstash
    /// address is bound before the cluster starts. Only `task_output`'s task
    /// ships (the `log-scraping` label); the others never connect.
    dropin_collector: std::net::TcpListener,
}

/// The before-start hook in the suite's hooks archive: adds a task variable.
const HOOK_SCRIPT: &str = "#!/bin/sh\n# before-start: each KEY=VALUE line becomes a task variable\necho \"SUITE_HOOK=from-before-start\"\necho \"SUITE_HOOK_TASK=$MESOS_TASK_ID\"\n";

impl Fixtures {
    /// Writes the hooks archive (`hooks/before-start.d/10-suite-env`) under `base`.
    pub fn create(base: &Path) -> Result<Self, String> {
        let src = base.join("fixtures");
        let dir = src.join("hooks").join("before-start.d");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let script = dir.join("10-suite-env");
        std::fs::write(&script, HOOK_SCRIPT).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let archive = src.join("hooks.tar.gz");
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg("hooks")
            .status()
            .map_err(|e| format!("tar: {e}"))?;
        if !status.success() {
            return Err(format!("tar -czf {} failed", archive.display()));
        }
        let dropin_collector =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("collector: {e}"))?;
        Ok(Self {
            executor: PathBuf::from(env!("CARGO_BIN_EXE_mesos-hook-executor")),
            executorctl: PathBuf::from(env!("CARGO_BIN_EXE_executorctl")),
            hooks_archive: archive,
            dropin_collector,
        })
    }

    /// The drop-in cluster's `mesos-executor`.
    pub fn dropin_bin(&self, shape: Shape) -> Option<&Path> {
        (shape == Shape::DropIn).then_some(self.executor.as_path())
    }

    /// The agent's port range: disjoint per shape, as both clusters run at once.
    pub fn ports(shape: Shape) -> &'static str {
        match shape {
            Shape::Marathon => "[31000-31499]",
            Shape::DropIn => "[31500-31999]",
        }
    }

    /// The agent's `--executor_environment_variables`: a drop-in executor's
    /// settings can only come from there (the agent builds a command task's
    /// executor environment without the task's); Marathon's come with the app.
    pub fn executor_env(&self, shape: Shape) -> Result<serde_json::Value, String> {
        Ok(match shape {
            Shape::Marathon => json!({}),
            Shape::DropIn => {
                let mut env = executor_settings();
                let collector = self
                    .dropin_collector
                    .local_addr()
                    .map_err(|e| format!("collector: {e}"))?;
                env.insert(
                    "HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS".into(),
                    json!(collector.to_string()),
                );
                json!(env)
            }
        })
    }
}

/// Our executor's settings in the suite: the exec hook from the fetched
/// archive, debug logs in the sandbox's stderr.
fn executor_settings() -> serde_json::Map<String, serde_json::Value> {
    [
        ("HOOK_EXECUTOR_HOOKS", "exec"),
        ("HOOK_EXECUTOR_HOOKS_DIR", "hooks"),
        ("HOOK_EXECUTOR_LOG_LEVEL", "debug"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), json!(v)))
    .collect()
}

/// What a scenario's task is.
#[derive(Default)]
struct TaskSpec {
    cmd: String,
    env: Vec<(&'static str, String)>,
    /// The task's kill policy grace (Marathon: `taskKillGracePeriodSeconds`).
    grace_secs: Option<f64>,
    /// A Mesos HTTP health check on the task's port `PORT0`.
    http_health: bool,
    /// The task's labels (Marathon: the app's `labels`).
    labels: Vec<(&'static str, &'static str)>,
}

/// A launched task and where it lives.
struct Launched {
    task: v1::TaskInfo,
    executor_id: v1::ExecutorId,
    framework_dir: PathBuf,
}

/// One scenario's run: its cluster, shape and frameworks.
pub struct Ctx<'c> {
    cluster: &'c mut Cluster,
    shape: Shape,
    scenario: &'static str,
    fixtures: &'c Fixtures,
    /// (framework id, agent id) of every framework, for the clean-up.
    frameworks: Vec<(String, Option<String>)>,
}

impl<'c> Ctx<'c> {
    pub fn new(
        cluster: &'c mut Cluster,
        shape: Shape,
        scenario: &'static str,
        fixtures: &'c Fixtures,
    ) -> Self {
        Self {
            cluster,
            shape,
            scenario,
            fixtures,
            frameworks: Vec::new(),
        }
    }

    async fn framework(&mut self) -> Result<Framework, String> {
        let name = format!("suite-{}-{}", self.shape.name(), self.scenario);
        let fw = Framework::subscribe(&self.cluster.master, &name)
            .await
            .map_err(|e| e.to_string())?;
        self.frameworks.push((fw.id.value.clone(), None));
        Ok(fw)
    }

    /// Launches `spec` in this scenario's shape on the first offer.
    /// Launches `spec` and waits until it runs: the launch, its sandbox and
    /// the task's pid (the task writes it to `task.pid`).
    async fn launch_running(
        &mut self,
        fw: &mut Framework,
        spec: &TaskSpec,
    ) -> Result<(Launched, PathBuf, i32), String> {
        let l = self.launch(fw, spec).await?;
        fw.wait_state(&l.task.task_id, v1::TaskState::TaskRunning, SOON)
            .await
            .map_err(err)?;
        let sandbox = sandbox(&l)?;
        let pid = task_pid(&sandbox).await?;
        Ok((l, sandbox, pid))
    }

    async fn launch(&mut self, fw: &mut Framework, spec: &TaskSpec) -> Result<Launched, String> {
        let uuid = uuid::Uuid::new_v4();
        let task_id = match self.shape {
            // Marathon's task ids: <app id with dots>.instance-<uuid>._app.<n>.
            Shape::Marathon => format!("suite_{}.instance-{uuid}._app.1", self.scenario),
            Shape::DropIn => format!("{}-{uuid}", self.scenario),
        };
        let framework_id = fw.id.value.clone();
        let (shape, scenario, fixtures) = (self.shape, self.scenario, self.fixtures);
        let task = fw
            .launch(SOON, |offer| {
                build_task(
                    shape,
                    scenario,
                    fixtures,
                    offer,
                    &task_id,
                    &framework_id,
                    spec,
                )
            })
            .await
            .map_err(|e| e.to_string())?;
        let agent_id = task.agent_id.value.clone();
        if let Some(entry) = self
            .frameworks
            .iter_mut()
            .find(|(id, _)| id == &framework_id)
        {
            entry.1 = Some(agent_id.clone());
        }
        let executor_id = task.executor.as_ref().map_or_else(
            || task.task_id.value.clone(),
            |e| e.executor_id.value.clone(),
        );
        Ok(Launched {
            framework_dir: self.cluster.framework_dir(&agent_id, &framework_id),
            executor_id: v1::ExecutorId { value: executor_id },
            task,
        })
    }

    /// Ends every framework of the scenario (the master's teardown endpoint;
    /// an unknown framework is fine) and checks that no executor or task
    /// process of theirs is left.
    pub async fn finish(&mut self) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        for (framework, _) in &self.frameworks {
            let _ = client
                .post(format!("http://{}/master/teardown", self.cluster.master))
                .body(format!("frameworkId={framework}"))
                .send()
                .await;
        }
        for (framework, agent) in &self.frameworks {
            let Some(agent) = agent else { continue };
            let dir = self.cluster.framework_dir(agent, framework);
            wait_no_processes(&dir, SOON)
                .await
                .map_err(|left| format!("processes left after the scenario: {left}"))?;
        }
        Ok(())
    }
}

/// Builds the TaskInfo for `shape` from `offer`.
fn build_task(
    shape: Shape,
    scenario: &str,
    fixtures: &Fixtures,
    offer: &Offer,
    task_id: &str,
    framework_id: &str,
    spec: &TaskSpec,
) -> Result<v1::TaskInfo, String> {
    let (ports_resource, port) = port_of(offer)?;
    let mut resources = vec![scalar(offer, "cpus", 0.1)?, scalar(offer, "mem", 32.0)?];
    if spec.http_health {
        resources.push(ports_resource);
    }
    let hooks_uri = v1::command_info::Uri {
        value: fixtures.hooks_archive.display().to_string(),
        executable: Some(false),
        extract: Some(true),
        cache: Some(false),
        ..Default::default()
    };
    match shape {
        Shape::Marathon => {
            let mut env = executor_settings();
            for (k, v) in &spec.env {
                env.insert((*k).to_owned(), json!(v));
            }
            let mut app = json!({
                "id": format!("/suite/{scenario}"),
                "cmd": spec.cmd,
                "executor": "./mesos-hook-executor",
                "env": env,
            });
            if let Some(grace) = spec.grace_secs {
                app["taskKillGracePeriodSeconds"] = json!(grace);
            }
            if !spec.labels.is_empty() {
                app["labels"] = spec
                    .labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect();
            }
            if spec.http_health {
                app["healthChecks"] = json!([{
                    "protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
                    "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 2,
                    "delaySeconds": 0, "maxConsecutiveFailures": 3
                }]);
            }
            let ports = if spec.http_health {
                vec![port]
            } else {
                Vec::new()
            };
            let launch =
                marathon::translate(&app, task_id, &offer.agent_id.value, framework_id, &ports)
                    .map_err(|e| e.to_string())?;
            let mut task = launch.task;
            task.resources = resources;
            let executor = task
                .executor
                .as_mut()
                .ok_or("no ExecutorInfo from the translation")?;
            executor.resources = vec![scalar(offer, "cpus", 0.1)?, scalar(offer, "mem", 32.0)?];
            let command = executor.command.as_mut().ok_or("no executor command")?;
            // Marathon's `fetch`: the binary (executable) and the hooks archive.
            command.uris = vec![
                v1::command_info::Uri {
                    value: fixtures.executor.display().to_string(),
                    executable: Some(true),
                    extract: Some(false),
                    cache: Some(false),
                    ..Default::default()
                },
                hooks_uri,
            ];
            Ok(task)
        }
        Shape::DropIn => {
            let mut variables: Vec<v1::environment::Variable> =
                spec.env.iter().map(|(k, v)| variable(k, v)).collect();
            if spec.http_health {
                variables.push(variable("PORT0", &port.to_string()));
            }
            let health_check = spec.http_health.then(|| v1::HealthCheck {
                r#type: Some(v1::health_check::Type::Http as i32),
                http: Some(v1::health_check::HttpCheckInfo {
                    port: u32::from(port),
                    path: Some("/".into()),
                    ..Default::default()
                }),
                delay_seconds: Some(0.0),
                interval_seconds: Some(1.0),
                timeout_seconds: Some(2.0),
                grace_period_seconds: Some(30.0),
                consecutive_failures: Some(3),
                ..Default::default()
            });
            Ok(v1::TaskInfo {
                name: format!("suite-{scenario}"),
                task_id: v1::TaskId {
                    value: task_id.to_owned(),
                },
                agent_id: offer.agent_id.clone(),
                resources,
                command: Some(v1::CommandInfo {
                    value: Some(spec.cmd.clone()),
                    shell: Some(true),
                    uris: vec![hooks_uri],
                    environment: Some(v1::Environment { variables }),
                    ..Default::default()
                }),
                kill_policy: spec.grace_secs.map(kill_policy),
                health_check,
                labels: (!spec.labels.is_empty()).then(|| v1::Labels {
                    labels: spec
                        .labels
                        .iter()
                        .map(|(k, v)| v1::Label {
                            key: (*k).to_owned(),
                            value: Some((*v).to_owned()),
                        })
                        .collect(),
                }),
                ..Default::default()
            })
        }
    }
}

fn variable(name: &str, value: &str) -> v1::environment::Variable {
    v1::environment::Variable {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

fn kill_policy(secs: f64) -> v1::KillPolicy {
    #[allow(clippy::cast_possible_truncation)]
    let nanoseconds = (secs * 1e9) as i64;
    v1::KillPolicy {
        grace_period: Some(v1::DurationInfo { nanoseconds }),
    }
}

/// `amount` of the offer's scalar resource `name` (role and reservation kept).
fn scalar(offer: &Offer, name: &str, amount: f64) -> Result<v1::Resource, String> {
    let mut r = offer
        .resources
        .iter()
        .find(|r| r.name == name)
        .cloned()
        .ok_or_else(|| format!("the offer has no {name}"))?;
    r.scalar = Some(v1::value::Scalar { value: amount });
    Ok(r)
}

/// One port of the offer that is free on this machine right now (the two
/// clusters offer disjoint ranges, but other programs may hold a port), as a
/// resource and a number.
fn port_of(offer: &Offer) -> Result<(v1::Resource, u16), String> {
    let mut r = offer
        .resources
        .iter()
        .find(|r| r.name == "ports")
        .cloned()
        .ok_or("the offer has no ports")?;
    let port = r
        .ranges
        .iter()
        .flat_map(|rs| rs.range.iter())
        .flat_map(|range| range.begin..=range.end)
        .filter_map(|p| u16::try_from(p).ok())
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or("no offered port is free")?;
    r.ranges = Some(v1::value::Ranges {
        range: vec![v1::value::Range {
            begin: u64::from(port),
            end: u64::from(port),
        }],
    });
    Ok((r, port))
}

/// The sandbox of the launched task's executor (the agent's `runs/latest`).
fn sandbox(l: &Launched) -> Result<PathBuf, String> {
    let latest = l
        .framework_dir
        .join("executors")
        .join(&l.executor_id.value)
        .join("runs")
        .join("latest");
    std::fs::canonicalize(&latest).map_err(|e| format!("{}: {e}", latest.display()))
}

/// Waits until no process lives under `dir`; on timeout, the ones left.
async fn wait_no_processes(dir: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_under(dir);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(left
                .iter()
                .map(|(pid, cmd)| format!("{pid} {cmd}"))
                .collect::<Vec<_>>()
                .join("; "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `path` exists with non-empty content; returns it.
async fn wait_file(path: &Path, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return Ok(text);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not appear within {timeout:?}",
                path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// The pid the task wrote to `task.pid` in its sandbox.
async fn task_pid(sandbox: &Path) -> Result<i32, String> {
    let text = wait_file(&sandbox.join("task.pid"), SOON).await?;
    text.trim().parse().map_err(|e| format!("task.pid: {e}"))
}

fn state_name(status: &v1::TaskStatus) -> &'static str {
    v1::TaskState::try_from(status.state).map_or("?", |s| s.as_str_name())
}

fn expect_state(status: &v1::TaskStatus, want: v1::TaskState) -> Outcome {
    if status.state == want as i32 {
        Ok(())
    } else {
        Err(format!(
            "expected {}, got {} ({})",
            want.as_str_name(),
            state_name(status),
            status.message.as_deref().unwrap_or("")
        ))
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// A task that writes its pid and runs until killed; with `on_term`, a SIGTERM
/// trap (whose body runs in the task's shell).
fn long_task(on_term: Option<&str>) -> String {
    let trap = on_term
        .map(|t| format!("trap '{t}' TERM; "))
        .unwrap_or_default();
    format!("{trap}echo $$ > task.pid; while :; do sleep 0.2; done")
}

// --- scenarios ---------------------------------------------------------------

/// A task runs and finishes: STARTING/RUNNING then FINISHED; its output lands in
/// the sandbox's stdout, its environment came from the app/command.
async fn finishes(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: "echo \"suite says $SUITE_MARK\"; exit 0".into(),
        env: vec![("SUITE_MARK", "finish-mark".into())],
        ..Default::default()
    };
    let l = ctx.launch(&mut fw, &spec).await?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskFinished)?;
    ensure(
        fw.updates
            .iter()
            .any(|s| s.state == v1::TaskState::TaskRunning as i32),
        || format!("no TASK_RUNNING before the end: {}", fw.update_summary()),
    )?;
    let sandbox = sandbox(&l)?;
    let stdout = std::fs::read_to_string(sandbox.join("stdout")).map_err(err)?;
    ensure(stdout.contains("suite says finish-mark"), || {
        format!("the sandbox stdout lacks the task's output: {stdout:?}")
    })?;
    // Our executor ran it (in the drop-in shape, not upstream's
    // mesos-executor): its log is the sandbox's stderr.
    let stderr = std::fs::read_to_string(sandbox.join("stderr")).map_err(err)?;
    ensure(stderr.contains("mesos_hook_executor"), || {
        format!("the sandbox stderr has no mesos-hook-executor log: {stderr:?}")
    })
}

/// A non-zero exit is TASK_FAILED, with the exit code in the message.
async fn non_zero_exit_fails(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: "echo failing now; exit 3".into(),
        ..Default::default()
    };
    let l = ctx.launch(&mut fw, &spec).await?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskFailed)?;
    let message = end.message.clone().unwrap_or_default();
    ensure(message.contains('3'), || {
        format!("exit code missing from {message:?}")
    })
}

/// KILL with the task's grace: the task's SIGTERM handler runs (it exits on
/// its own), TASK_KILLING then TASK_KILLED, and no process is left. Also
/// reconciles the running task first.
async fn kill_with_grace(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("echo graceful > term.log; exit 0")),
        grace_secs: Some(30.0),
        ..Default::default()
    };
    let (l, sandbox, pid) = ctx.launch_running(&mut fw, &spec).await?;
    let reconciled = fw.reconcile(&l.task, SOON).await.map_err(err)?;
    expect_state(&reconciled, v1::TaskState::TaskRunning)?;
    fw.kill(&l.task, None).await.map_err(err)?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)?;
    ensure(
        fw.updates
            .iter()
            .any(|s| s.state == v1::TaskState::TaskKilling as i32),
        || {
            format!(
                "no TASK_KILLING (the framework has TASK_KILLING_STATE): {}",
                fw.update_summary()
            )
        },
    )?;
    let log = wait_file(&sandbox.join("term.log"), SOON).await?;
    ensure(log.contains("graceful"), || format!("term.log: {log:?}"))?;
    ensure(!alive(pid), || format!("task process {pid} still alive"))
}

/// A task that ignores SIGTERM (its handler only notes it) is SIGKILLed when
/// its grace period ends.
async fn sigterm_ignored_sigkilled(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("echo ignored >> term.log")),
        grace_secs: Some(2.0),
        ..Default::default()
    };
    let (l, sandbox, pid) = ctx.launch_running(&mut fw, &spec).await?;
    fw.kill(&l.task, None).await.map_err(err)?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)?;
    let log = wait_file(&sandbox.join("term.log"), SOON).await?;
    ensure(log.contains("ignored"), || {
        format!("the task never saw SIGTERM: {log:?}")
    })?;
    ensure(!alive(pid), || {
        format!("task process {pid} survived the grace period")
    })
}

/// The KILL call's own kill policy (1 s) overrides the task's (10 min): the
/// SIGTERM-ignoring task ends long before its own grace would allow.
async fn kill_policy_overrides(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("echo ignored >> term.log")),
        grace_secs: Some(600.0),
        ..Default::default()
    };
    let (l, sandbox, pid) = ctx.launch_running(&mut fw, &spec).await?;
    fw.kill(&l.task, Some(Duration::from_secs(1)))
        .await
        .map_err(err)?;
    // SOON (60 s) is far below the task's own 600 s: only the KILL's policy
    // can end it in time.
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)?;
    let log = wait_file(&sandbox.join("term.log"), SOON).await?;
    ensure(log.contains("ignored"), || {
        format!("the task never saw SIGTERM: {log:?}")
    })?;
    ensure(!alive(pid), || format!("task process {pid} still alive"))
}

/// Counts the agent log's marks of the end of its executor re-registration
/// window (after a recovery).
fn reregistration_window_ends(cluster: &Cluster) -> usize {
    cluster
        .agent_log()
        .matches("Cleaning up un-reregistered executors")
        .count()
}

/// Restarts the agent and waits until its re-registration window has closed,
/// so an executor that failed to resubscribe would have been killed by now.
async fn restart_agent_and_settle(cluster: &mut Cluster) -> Outcome {
    let before = reregistration_window_ends(cluster);
    cluster.stop_agent().await?;
    cluster.start_agent().await?;
    let deadline = Instant::now() + SOON;
    while reregistration_window_ends(cluster) <= before {
        if Instant::now() > deadline {
            return Err(
                "the restarted agent never closed its executor re-registration window".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The agent restarts while the task runs: the executor resubscribes within
/// the agent's window, the task keeps running (same process), the master
/// reconciles it as RUNNING, and a later KILL works.
async fn agent_restart(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("exit 0")),
        grace_secs: Some(10.0),
        ..Default::default()
    };
    let (l, _, pid) = ctx.launch_running(&mut fw, &spec).await?;
    restart_agent_and_settle(ctx.cluster).await?;
    let log = ctx.cluster.agent_log();
    ensure(
        !log.lines().any(|line| {
            line.contains("un-reregistered executor") && line.contains(&l.executor_id.value)
        }),
        || "the agent killed the executor as un-reregistered".into(),
    )?;
    ensure(alive(pid), || {
        format!("task process {pid} did not survive the agent restart")
    })?;
    let reconciled = fw.reconcile(&l.task, SOON).await.map_err(err)?;
    expect_state(&reconciled, v1::TaskState::TaskRunning)?;
    ensure(
        !fw.updates.iter().any(|s| {
            s.task_id == l.task.task_id
                && v1::TaskState::try_from(s.state).is_ok_and(crate::scheduler::is_terminal)
        }),
        || {
            format!(
                "a terminal update during the restart: {}",
                fw.update_summary()
            )
        },
    )?;
    fw.kill(&l.task, None).await.map_err(err)?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)?;
    ensure(!alive(pid), || format!("task process {pid} still alive"))
}

/// The task ends while the agent is down: the executor keeps the update and
/// delivers it when it resubscribes to the restarted agent; the framework
/// gets TASK_FINISHED stamped before the agent came back.
async fn update_while_agent_down(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: "echo $$ > task.pid; while [ ! -e release ]; do sleep 0.1; done; echo released".into(),
        ..Default::default()
    };
    let (l, sandbox, pid) = ctx.launch_running(&mut fw, &spec).await?;
    ctx.cluster.stop_agent().await?;
    std::fs::write(sandbox.join("release"), "go").map_err(err)?;
    // The task's process turning into a zombie is not enough: the executor
    // stamps the update only after it has reaped it, and logs "task ended"
    // once the stamp is taken.
    let deadline = Instant::now() + SOON;
    loop {
        let log = std::fs::read_to_string(sandbox.join("stderr")).unwrap_or_default();
        if !alive(pid) && log.contains("task ended") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("task {pid} did not end after release"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent_back = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(err)?
        .as_secs_f64();
    ctx.cluster.start_agent().await?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskFinished)?;
    let stamped = end.timestamp.unwrap_or(f64::MAX);
    ensure(stamped < agent_back, || {
        format!("the update was stamped {stamped}, not before the agent came back at {agent_back}")
    })
}

/// TEARDOWN: the master removes the framework; the agent shuts the executor
/// down, which stops the task gracefully; no process is left.
async fn framework_teardown(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("echo term > term.log; exit 0")),
        ..Default::default()
    };
    let (l, sandbox, pid) = ctx.launch_running(&mut fw, &spec).await?;
    fw.teardown().await.map_err(err)?;
    wait_no_processes(&l.framework_dir, SOON)
        .await
        .map_err(|left| format!("left after TEARDOWN: {left}"))?;
    let log = std::fs::read_to_string(sandbox.join("term.log")).unwrap_or_default();
    ensure(log.contains("term"), || {
        "the task got no SIGTERM (not a graceful stop)".into()
    })?;
    ensure(!alive(pid), || format!("task process {pid} still alive"))
}

/// SHUTDOWN of the executor: TASK_KILLED reaches the framework, the task
/// stopped gracefully, executor and task are gone.
async fn shutdown_executor(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("echo term > term.log; exit 0")),
        ..Default::default()
    };
    let (l, sandbox, pid) = ctx.launch_running(&mut fw, &spec).await?;
    fw.shutdown(&l.executor_id, &l.task.agent_id)
        .await
        .map_err(err)?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)?;
    wait_no_processes(&l.framework_dir, SOON)
        .await
        .map_err(|left| format!("left after SHUTDOWN: {left}"))?;
    let log = std::fs::read_to_string(sandbox.join("term.log")).unwrap_or_default();
    ensure(log.contains("term"), || {
        "the task got no SIGTERM (not a graceful stop)".into()
    })?;
    ensure(!alive(pid), || format!("task process {pid} still alive"))
}

/// A Mesos HTTP health check: the executor's `healthy=true` update reaches the
/// framework through the master, and the master's `/tasks` shows it.
async fn http_health_check(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: "exec python3 -m http.server \"$PORT0\" --bind 127.0.0.1".into(),
        http_health: true,
        grace_secs: Some(5.0),
        ..Default::default()
    };
    let l = ctx.launch(&mut fw, &spec).await?;
    let healthy = fw
        .wait_update(&l.task.task_id, SOON, "healthy=true", |s| {
            s.healthy == Some(true)
        })
        .await
        .map_err(err)?;
    expect_state(&healthy, v1::TaskState::TaskRunning)?;
    ensure(
        healthy.reason == Some(v1::task_status::Reason::TaskHealthCheckStatusUpdated as i32),
        || format!("reason {:?}", healthy.reason),
    )?;
    let tasks = ctx.cluster.master_tasks().await?;
    let at_master = tasks["tasks"].as_array().is_some_and(|tasks| {
        tasks.iter().any(|t| {
            t["id"].as_str() == Some(l.task.task_id.value.as_str())
                && t["statuses"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["healthy"].as_bool() == Some(true)))
        })
    });
    ensure(at_master, || {
        "the master's /tasks shows no healthy status".into()
    })?;
    fw.kill(&l.task, None).await.map_err(err)?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)
}

/// The before-start exec hook from the fetched hooks archive adds task
/// environment.
async fn before_start_hook_env(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: "echo \"SUITE_HOOK=$SUITE_HOOK SUITE_HOOK_TASK=$SUITE_HOOK_TASK\" > hook.out".into(),
        ..Default::default()
    };
    let l = ctx.launch(&mut fw, &spec).await?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskFinished)?;
    let out = std::fs::read_to_string(sandbox(&l)?.join("hook.out")).map_err(err)?;
    let want = format!(
        "SUITE_HOOK=from-before-start SUITE_HOOK_TASK={}",
        l.task.task_id.value
    );
    ensure(out.trim() == want, || {
        format!("task saw {out:?}, expected {want:?}")
    })
}

/// Runs `executorctl` with a time limit; (exit code, stdout, stderr).
async fn executorctl(bin: &Path, args: &[&str]) -> Result<(i32, String, String), String> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("HOOK_EXECUTOR_REMOTE_SOCKET")
        .env_remove("MESOS_SANDBOX");
    run_limited(cmd, None).await
}

/// Runs `cmd` (with `input` on its stdin) for at most [`SOON`], killing it
/// then; (exit code, stdout, stderr).
async fn run_limited(
    mut cmd: Command,
    input: Option<String>,
) -> Result<(i32, String, String), String> {
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).map_err(err)?);
    let stdin = child.stdin.take();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A tool that exits early closes its stdin; its exit code says why.
            let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
        }
        let _ = tx.send(child.wait_with_output());
    });
    match tokio::time::timeout(SOON, rx).await {
        Ok(Ok(Ok(out))) => Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )),
        Ok(_) => Err(format!("{what}: lost its output")),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            Err(format!(
                "{what} {:?} did not finish within {SOON:?}",
                cmd.get_args().collect::<Vec<_>>()
            ))
        }
    }
}

/// The remote API answers on the real sandbox's socket (a path beyond the
/// 108-byte limit), and `executorctl` runs a command next to the task.
async fn remote_api_and_executorctl(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("exit 0")),
        ..Default::default()
    };
    let (l, sandbox, _) = ctx.launch_running(&mut fw, &spec).await?;
    let socket = sandbox.join("executor.sock");
    ensure(socket.as_os_str().len() > 108, || {
        format!(
            "the sandbox socket path is short ({}): not the long-path case",
            socket.display()
        )
    })?;
    let sandbox_arg = sandbox.display().to_string();
    let bin = ctx.fixtures.executorctl.clone();
    // The socket appears once the executor serves it.
    wait_file_exists(&socket, SOON).await?;
    let (code, out, stderr) =
        executorctl(&bin, &["--sandbox", &sandbox_arg, "--json", "status"]).await?;
    ensure(code == 0, || {
        format!("executorctl status: exit {code}: {stderr}")
    })?;
    let status: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("status JSON {out:?}: {e}"))?;
    ensure(status["status"] == "active", || format!("status: {status}"))?;
    ensure(
        status["sandbox_dir"].as_str() == Some(sandbox_arg.as_str()),
        || format!("status names another sandbox: {status}"),
    )?;
    let (code, out, stderr) = executorctl(
        &bin,
        &[
            "--sandbox",
            &sandbox_arg,
            "exec",
            "--follow",
            "--",
            "echo",
            "next-to-task;",
            "cat",
            "task.pid",
        ],
    )
    .await?;
    ensure(code == 0, || {
        format!("executorctl exec: exit {code}: {stderr}")
    })?;
    let pid = std::fs::read_to_string(sandbox.join("task.pid")).map_err(err)?;
    ensure(
        out.contains("next-to-task") && out.contains(pid.trim()),
        || {
            format!(
                "exec output {out:?} (expected the task's pid {})",
                pid.trim()
            )
        },
    )?;
    fw.kill(&l.task, None).await.map_err(err)?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)
}

async fn wait_file_exists(path: &Path, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    while std::fs::symlink_metadata(path).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not appear within {timeout:?}",
                path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// --- the task output, metrics and discovery under the real agent -------------

/// Lines the `task_output` task writes.
const OUTPUT_LINES: usize = 300;

/// The rotation size of the Marathon shape's `task_output` (`4KB`).
const ROTATE_BYTES: u64 = 4096;

/// Line `seq` of the `task_output` task: a JSON object of about 90 bytes.
fn output_line(seq: usize) -> String {
    format!(
        r#"{{"seq":{seq},"msg":"suite line {seq}","pad":"{}"}}"#,
        "x".repeat(40)
    )
}

/// A Logstash stand-in: accepts `json_lines` connections and hands each line
/// on; ends (with its connections) when dropped.
struct Collector {
    lines: tokio::sync::mpsc::Receiver<String>,
    accept: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Largest number of bytes read from one connection.
    const MAX_BYTES: u64 = 16 << 20;

    fn start(listener: tokio::net::TcpListener) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let (tx, lines) = tokio::sync::mpsc::channel(4 * OUTPUT_LINES);
        let accept = tokio::spawn(async move {
            let mut readers = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                readers.spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stream.take(Self::MAX_BYTES)).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if tx.send(line).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { lines, accept }
    }

    /// The first `n` entries, parsed; an error if they do not arrive within
    /// `timeout`.
    async fn entries(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<serde_json::Value>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut entries = Vec::with_capacity(n);
        while entries.len() < n {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => entries.push(serde_json::from_str(&line).map_err(|e| {
                    format!("the collector got a line that is not JSON ({e}): {line:?}")
                })?),
                Ok(None) | Err(_) => {
                    return Err(format!(
                        "the collector got {} of {n} entries within {timeout:?}",
                        entries.len()
                    ))
                }
            }
        }
        Ok(entries)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The agent's hostname as the master knows it (what SUBSCRIBED tells the
/// executor).
async fn agent_hostname(cluster: &Cluster, agent_id: &str) -> Result<String, String> {
    let slaves = cluster
        .get_json(&format!("http://{}/master/slaves", cluster.master))
        .await?;
    slaves["slaves"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"].as_str() == Some(agent_id)))
        .and_then(|s| s["hostname"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("the master's /master/slaves has no agent {agent_id}: {slaves}"))
}

/// The sandbox's `stdout` files, oldest first: `stdout.N` … `stdout.1`, `stdout`.
fn stdout_files(sandbox: &Path) -> Result<Vec<PathBuf>, String> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(sandbox)
        .map_err(|e| format!("{}: {e}", sandbox.display()))?
        .flatten()
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("stdout.")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(sandbox.join("stdout"));
    Ok(files)
}

/// The task's output through the executor under the agent's sandbox logger:
/// a task labelled `log-scraping: json` writes 300 JSON lines; the sandbox's
/// `stdout` files (rotated at 4 KB in the Marathon shape: `stdout.N` …
/// `stdout`) hold every line in order, and every line reaches the suite's
/// `json_lines` listener as an entry with the real task, framework and
/// executor ids and the agent's hostname. In the drop-in shape the settings
/// are the agent's, shared by every task, so there is no rotation there (it
/// would rotate every scenario's files); the address is the drop-in
/// collector's.
async fn task_output(ctx: &mut Ctx<'_>) -> Outcome {
    let listener = match ctx.shape {
        Shape::Marathon => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(err)?,
        Shape::DropIn => {
            let std = ctx.fixtures.dropin_collector.try_clone().map_err(err)?;
            std.set_nonblocking(true).map_err(err)?;
            tokio::net::TcpListener::from_std(std).map_err(err)?
        }
    };
    let address = listener.local_addr().map_err(err)?.to_string();
    let mut collector = Collector::start(listener);
    let mut fw = ctx.framework().await?;
    let env = match ctx.shape {
        Shape::Marathon => vec![
            ("HOOK_EXECUTOR_LOG_ROTATE_SIZE", "4KB".to_owned()),
            ("HOOK_EXECUTOR_LOG_ROTATE_KEEP", "50".to_owned()),
            ("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS", address),
        ],
        Shape::DropIn => Vec::new(),
    };
    let spec = TaskSpec {
        cmd: format!(
            "i=1; while [ $i -le {OUTPUT_LINES} ]; do printf '{{\"seq\":%d,\"msg\":\"suite line %d\",\"pad\":\"{}\"}}\\n' $i $i; i=$((i+1)); done",
            "x".repeat(40)
        ),
        env,
        labels: vec![("log-scraping", "json")],
        ..Default::default()
    };
    let l = ctx.launch(&mut fw, &spec).await?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskFinished)?;
    let sandbox = sandbox(&l)?;
    let expected: Vec<String> = (1..=OUTPUT_LINES).map(output_line).collect();

    // The sandbox files: every line, in order, across the rotated files.
    let files = stdout_files(&sandbox)?;
    let names = || {
        files
            .iter()
            .filter_map(|f| f.file_name()?.to_str().map(str::to_owned))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut seen = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        seen.extend(
            text.lines()
                .filter(|line| line.starts_with("{\"seq\":"))
                .map(str::to_owned),
        );
    }
    ensure(seen == expected, || {
        let first = seen.iter().zip(&expected).position(|(a, b)| a != b);
        format!(
            "the sandbox's {} hold {} task lines, not the {OUTPUT_LINES} written in order (first difference at index {first:?})",
            names(),
            seen.len()
        )
    })?;
    if ctx.shape == Shape::Marathon {
        ensure(files.len() > 1, || {
            format!("no rotation at {ROTATE_BYTES} bytes: only {}", names())
        })?;
        for file in &files {
            let size = std::fs::metadata(file).map_err(err)?.len();
            ensure(size <= ROTATE_BYTES, || {
                format!(
                    "{} has {size} bytes, more than the rotation size",
                    file.display()
                )
            })?;
        }
    }

    // The entries: every line, in order, with the real ids and host.
    let entries = collector.entries(OUTPUT_LINES, SOON).await?;
    let host = agent_hostname(ctx.cluster, &l.task.agent_id.value).await?;
    let want = [
        ("task_id", l.task.task_id.value.clone()),
        ("framework_id", fw.id.value.clone()),
        ("executor_id", l.executor_id.value.clone()),
        ("agent_host", host),
        ("stream", "stdout".to_owned()),
    ];
    for (i, entry) in entries.iter().enumerate() {
        let seq = i + 1;
        ensure(entry["seq"].as_u64() == u64::try_from(seq).ok(), || {
            format!("entry {i} is not line {seq}: {entry}")
        })?;
        ensure(
            entry["message"].as_str() == Some(format!("suite line {seq}").as_str()),
            || format!("entry {i}'s message: {entry}"),
        )?;
        for (key, value) in &want {
            ensure(entry[*key].as_str() == Some(value.as_str()), || {
                format!("entry {i}: {key} is not {value:?}: {entry}")
            })?;
        }
        if ctx.shape == Shape::Marathon {
            ensure(
                entry["marathon_app_id"].as_str() == Some("/suite/task_output"),
                || format!("entry {i}: marathon_app_id: {entry}"),
            )?;
        }
    }
    Ok(())
}

/// One sample of a Prometheus text exposition: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// The samples of `text` (Prometheus text format 0.0.4; the executor's label
/// values have no escapes that matter here, but `\"` is kept as `"`).
fn samples(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("a metrics line without a value: {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|e| format!("metrics line {line:?}: {e}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("metrics line {line:?}: unclosed labels"))?;
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if chars.next() != Some('"') {
                        return Err(format!("metrics line {line:?}: label {key} unquoted"));
                    }
                    let mut val = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => val.extend(chars.next()),
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    labels.push((key.trim_start_matches(',').to_owned(), val));
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name, labels)
            }
        };
        out.push((name.to_owned(), labels, value));
    }
    Ok(out)
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}

/// A metric to check: name, labels it must have, the test of its value, and
/// what that test wants (for the message).
type Check<'a> = (&'a str, Vec<(&'a str, &'a str)>, fn(f64) -> bool, &'a str);

/// `GET /metrics` of a task under the real agent, through the sandbox socket
/// (`executorctl metrics`): valid for `promtool`; `task_info` carries the
/// real ids; the task is RUNNING (gauge 1) with at least one process; the
/// agent accepted TASK_RUNNING and acknowledged updates (counters moved).
async fn metrics(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("exit 0")),
        ..Default::default()
    };
    let (l, sandbox, _) = ctx.launch_running(&mut fw, &spec).await?;
    wait_file_exists(&sandbox.join("executor.sock"), SOON).await?;
    let sandbox_arg = sandbox.display().to_string();
    let bin = ctx.fixtures.executorctl.clone();
    const P: &str = "mesos_hook_executor_";
    // The agent's ACKNOWLEDGED follows its checkpoint of the update, which
    // may come after the framework saw TASK_RUNNING: scrape until it is there.
    let deadline = Instant::now() + SOON;
    let (text, got) = loop {
        let (code, out, stderr) =
            executorctl(&bin, &["--sandbox", &sandbox_arg, "metrics"]).await?;
        ensure(code == 0, || {
            format!("executorctl metrics: exit {code}: {stderr}")
        })?;
        let got = samples(&out)?;
        if sample(&got, &format!("{P}status_updates_acknowledged_total"), &[])
            .is_some_and(|v| v >= 1.0)
        {
            break (out, got);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no acknowledged update counted within {SOON:?}:\n{out}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut promtool = Command::new("promtool");
    promtool.args(["check", "metrics"]);
    let (code, _, complaints) = run_limited(promtool, Some(text.clone())).await?;
    ensure(code == 0, || {
        format!("promtool check metrics: exit {code}: {complaints}")
    })?;
    let ids = [
        ("task_id", l.task.task_id.value.as_str()),
        ("framework_id", fw.id.value.as_str()),
        ("executor_id", l.executor_id.value.as_str()),
    ];
    let checks: [Check; 5] = [
        ("task_info", ids.to_vec(), |v| v == 1.0, "1"),
        (
            "task_state",
            vec![("state", "TASK_RUNNING")],
            |v| v == 1.0,
            "1",
        ),
        ("task_processes", vec![], |v| v >= 1.0, ">= 1"),
        (
            "status_updates_sent_total",
            vec![("state", "TASK_RUNNING")],
            |v| v >= 1.0,
            ">= 1",
        ),
        ("agent_subscriptions_total", vec![], |v| v >= 1.0, ">= 1"),
    ];
    for (name, labels, ok, want) in &checks {
        let value = sample(&got, &format!("{P}{name}"), labels);
        ensure(value.is_some_and(ok), || {
            format!("{P}{name}{labels:?} is {value:?}, expected {want}:\n{text}")
        })?;
    }
    fw.kill(&l.task, None).await.map_err(err)?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)
}

/// `executorctl ls --work-dir <the agent's work dir>` finds the scenario's
/// running executor there (the right ids, its real sandbox socket, reachable),
/// and only it (the earlier scenarios' executors have ended); `--task
/// <prefix>` reaches it and `exec --follow` runs a command next to the task.
async fn executorctl_ls(ctx: &mut Ctx<'_>) -> Outcome {
    let mut fw = ctx.framework().await?;
    let spec = TaskSpec {
        cmd: long_task(Some("exit 0")),
        ..Default::default()
    };
    let (l, sandbox, pid) = ctx.launch_running(&mut fw, &spec).await?;
    let socket = sandbox.join("executor.sock");
    wait_file_exists(&socket, SOON).await?;
    let work_dir = ctx.cluster.work_dir().display().to_string();
    let bin = ctx.fixtures.executorctl.clone();
    let task_id = l.task.task_id.value.as_str();

    let (code, out, stderr) = executorctl(&bin, &["--work-dir", &work_dir, "--json", "ls"]).await?;
    ensure(code == 0, || {
        format!("executorctl ls: exit {code}: {stderr}{out}")
    })?;
    let listing: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("ls JSON {out:?}: {e}"))?;
    let executors = listing["executors"]
        .as_array()
        .ok_or_else(|| format!("ls without executors: {listing}"))?;
    let running: Vec<_> = executors
        .iter()
        .filter(|e| e["executor"] == "running")
        .collect();
    ensure(running.len() == 1, || {
        format!(
            "ls shows {} running executors, expected this scenario's one: {listing}",
            running.len()
        )
    })?;
    let found = running[0];
    let mut want = vec![
        ("task_id", task_id.to_owned()),
        ("framework_id", fw.id.value.clone()),
        ("executor_id", l.executor_id.value.clone()),
        ("task_state", "TASK_RUNNING".to_owned()),
        ("socket", socket.display().to_string()),
    ];
    if ctx.shape == Shape::Marathon {
        want.push(("marathon_app_id", "/suite/executorctl_ls".to_owned()));
    }
    for (key, value) in &want {
        ensure(found[*key].as_str() == Some(value.as_str()), || {
            format!("ls: {key} is not {value:?}: {found}")
        })?;
    }
    // Earlier scenarios' executors have ended: their sockets, where left, are
    // stale; none is unreachable.
    ensure(
        executors
            .iter()
            .all(|e| e["executor"] == "running" || e["executor"] == "stale"),
        || format!("ls shows an unreachable executor: {listing}"),
    )?;
    let (code, out, stderr) = executorctl(&bin, &["--work-dir", &work_dir, "ls"]).await?;
    ensure(code == 0, || {
        format!("executorctl ls: exit {code}: {stderr}")
    })?;
    ensure(
        out.lines()
            .any(|line| line.starts_with(task_id) && line.contains("TASK_RUNNING")),
        || format!("the ls table has no TASK_RUNNING line for {task_id}:\n{out}"),
    )?;

    // --task by a prefix of the task id (and, for Marathon, by the app id).
    let prefix = match ctx.shape {
        Shape::Marathon => "suite_executorctl_ls",
        Shape::DropIn => "executorctl_ls-",
    };
    let (code, out, stderr) = executorctl(
        &bin,
        &[
            "--work-dir",
            &work_dir,
            "--task",
            prefix,
            "exec",
            "--follow",
            "--",
            "echo",
            "hi;",
            "cat",
            "task.pid",
        ],
    )
    .await?;
    ensure(code == 0, || {
        format!("executorctl --task {prefix} exec: exit {code}: {stderr}")
    })?;
    ensure(
        out.lines().next() == Some("hi") && out.contains(&pid.to_string()),
        || format!("exec output {out:?} (expected hi and the task's pid {pid})"),
    )?;
    if ctx.shape == Shape::Marathon {
        let (code, out, stderr) = executorctl(
            &bin,
            &[
                "--work-dir",
                &work_dir,
                "--task",
                "suite/executorctl_ls",
                "--json",
                "status",
            ],
        )
        .await?;
        ensure(code == 0, || {
            format!("executorctl --task <app id> status: exit {code}: {stderr}{out}")
        })?;
        ensure(out.contains(&format!("\"{task_id}\"")), || {
            format!("status by app id names another task: {out}")
        })?;
    }
    fw.kill(&l.task, None).await.map_err(err)?;
    let end = fw.wait_terminal(&l.task.task_id, SOON).await.map_err(err)?;
    expect_state(&end, v1::TaskState::TaskKilled)?;
    ensure(!alive(pid), || format!("task process {pid} still alive"))
}
