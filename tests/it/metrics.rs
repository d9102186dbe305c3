//! `GET /metrics` with the real binary: the exposition is valid for the real
//! `promtool`, a real Prometheus server scrapes the TCP listener with its
//! bearer token and answers a query about the task, counters move as the
//! task, its health check, hooks and remote commands act, `executorctl
//! metrics` prints them, and the Graphite push reaches a TCP listener and
//! keeps flowing after it restarts.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mesos_hook_executor::{
    emulator::EmulatorOptions,
    proto::v1::{self, health_check, TaskState},
};

use crate::helpers::*;

const TOKEN: &str = "metrics-s3cret";

/// The value of the sample `name{labels}` exactly as written, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A command health check probing every 0.1 s.
fn command_health(command: &str) -> v1::HealthCheck {
    v1::HealthCheck {
        r#type: Some(health_check::Type::Command as i32),
        command: Some(v1::CommandInfo {
            value: Some(command.into()),
            shell: Some(true),
            ..Default::default()
        }),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.1),
        timeout_seconds: Some(5.0),
        grace_period_seconds: Some(5.0),
        consecutive_failures: Some(1000),
        ..Default::default()
    }
}

/// A hooks directory with an after-start script.
fn hooks_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hooks-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path().join("after-start.d");
    std::fs::create_dir_all(&d).expect("mkdir");
    let script = d.join("10-note");
    std::fs::write(&script, "#!/bin/sh\necho started > after-start.ran\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Runs `promtool check metrics` on `text`; panics with its complaints.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test-tools.txt)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_is_valid_and_counters_move_as_the_task_acts() {
    let hooks = hooks_dir();
    let emu = emulator(EmulatorOptions::default()).await;
    let hooks_path = hooks.path().display().to_string();
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &hooks_path),
        ],
    );
    let mut task = shell_task("t-metrics", "echo $$ > task.pid; exec sleep 600");
    task.health_check = Some(command_health("true"));
    emu.launch(task);
    wait_state(&emu, &exec, "t-metrics", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let socket = exec.path("executor.sock");
    wait_api(&exec, &socket).await;
    exec.read_file("after-start.ran").await;

    // Health probes run every 0.1 s: wait until one succeeded.
    let mut first = String::new();
    let start = Instant::now();
    while sample(
        &first,
        "mesos_hook_executor_health_probes_total{check=\"health\",result=\"success\"}",
    )
    .is_none()
    {
        assert!(
            start.elapsed() < SOON,
            "no successful probe counted:\n{first}"
        );
        let answer = api(&socket, "GET", "/metrics", None).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        first = answer.body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    promtool_check(&first);
    assert_eq!(
        sample(
            &first,
            "mesos_hook_executor_task_state{state=\"TASK_RUNNING\"}"
        ),
        Some(1.0)
    );
    assert!(first.contains("mesos_hook_executor_task_info{executor_id="));
    assert!(sample(&first, "mesos_hook_executor_task_processes").is_some_and(|n| n >= 1.0));
    // Present; a tiny `sleep` may read 0 pages (the kernel folds its per-CPU
    // RSS counters lazily), so only the executor's own is checked for size.
    assert!(sample(&first, "mesos_hook_executor_task_memory_rss_bytes").is_some());
    assert!(
        sample(&first, "mesos_hook_executor_executor_memory_rss_bytes").is_some_and(|n| n > 0.0)
    );
    assert!(sample(&first, "mesos_hook_executor_executor_cpu_seconds_total").is_some());
    assert_eq!(
        sample(
            &first,
            "mesos_hook_executor_hook_runs_total{event=\"after-start\",hook=\"exec\"}"
        ),
        Some(1.0)
    );
    assert!(first.contains(
        "mesos_hook_executor_hook_duration_seconds_count{event=\"after-start\",hook=\"exec\"} 1"
    ));
    assert!(first.contains(
        "mesos_hook_executor_health_probe_duration_seconds_bucket{check=\"health\",le=\"+Inf\"}"
    ));
    assert!(sample(
        &first,
        "mesos_hook_executor_status_updates_sent_total{state=\"TASK_RUNNING\"}"
    )
    .is_some_and(|n| n >= 1.0));
    assert!(
        sample(&first, "mesos_hook_executor_agent_subscriptions_total").is_some_and(|n| n >= 1.0)
    );
    assert!(!first.contains("pid=\""), "no pid labels");

    // A remote command, and a rejected request.
    let cmd = remote_execute(&socket, r#"{"command":"exit 0"}"#).await;
    remote_result(&socket, cmd).await;
    let bad = api(&socket, "POST", "/remote/execute", Some("{not json")).await;
    assert_eq!(bad.status, 400);
    let probes = |t: &str| {
        sample(
            t,
            "mesos_hook_executor_health_probes_total{check=\"health\",result=\"success\"}",
        )
        .unwrap_or(0.0)
    };
    let mut second = api(&socket, "GET", "/metrics", None).await.body;
    let start = Instant::now();
    while probes(&second) <= probes(&first) {
        assert!(start.elapsed() < SOON, "health probes stopped counting");
        tokio::time::sleep(Duration::from_millis(50)).await;
        second = api(&socket, "GET", "/metrics", None).await.body;
    }
    promtool_check(&second);
    assert_eq!(
        sample(&second, "mesos_hook_executor_remote_commands_started_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&second, "mesos_hook_executor_remote_commands_running"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &second,
            "mesos_hook_executor_remote_commands_rejected_total{reason=\"invalid\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &second,
            "mesos_hook_executor_health_consecutive_failures{check=\"health\"}"
        ),
        Some(0.0)
    );
    assert!(sample(&second, "mesos_hook_executor_metrics_scrapes_total").is_some_and(|n| n >= 2.0));

    // executorctl prints the same exposition.
    let sock = socket.display().to_string();
    let (code, out, err) = executorctl(&["--socket", &sock, "metrics"], None);
    assert_eq!(code, 0, "{err}");
    promtool_check(&out);
    assert!(out.contains("mesos_hook_executor_task_state{state=\"TASK_RUNNING\"} 1"));

    emu.kill("t-metrics", None);
    wait_state(&emu, &exec, "t-metrics", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0), "{}", exec.log());
    assert_gone(&[pid]).await;
}

/// A Prometheus server for the test, killed when dropped.
struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Prometheus {
    fn start(target: &str, token: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: executor\n    metrics_path: /metrics\n\
                 \x20   authorization:\n      type: Bearer\n      credentials: {token}\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config");
        // A free port: bound by us, released, then taken by Prometheus.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (scripts/test-tools.txt)");
        Self {
            child,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<serde_json::Value> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .ok()?
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_tcp_listener_with_its_token() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(
        &emu,
        &[
            ("HOOK_EXECUTOR_REMOTE_TCP", "127.0.0.1:0"),
            ("HOOK_EXECUTOR_REMOTE_TOKEN", TOKEN),
        ],
    )
    .await;
    let addr = tcp_address(&exec).await;
    let prometheus = Prometheus::start(&addr, TOKEN);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut up = None;
    while up.is_none() {
        assert!(
            Instant::now() < deadline,
            "the target never came up; last answer {up:?}; Prometheus log:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        up = prometheus.get("/api/v1/targets").await.filter(|t| {
            t["data"]["activeTargets"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["health"] == "up"))
        });
    }
    let query =
        "/api/v1/query?query=mesos_hook_executor_task_state%7Bstate%3D%22TASK_RUNNING%22%7D";
    let mut value = None;
    while value.is_none() {
        assert!(
            Instant::now() < deadline,
            "no task metric from Prometheus:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        value = prometheus.get(query).await.and_then(|q| {
            let result = q["data"]["result"].as_array()?.first()?.clone();
            result["value"][1].as_str().map(str::to_owned)
        });
    }
    assert_eq!(value.as_deref(), Some("1"));
    let pid = api(&socket, "GET", "/remote/status", None).await.json()["task_pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .expect("the task's pid");
    drop(prometheus);
    stop_executor(&emu, &mut exec).await;
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphite_lines_arrive_with_the_prefix_and_keep_flowing_after_a_restart() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = listener.local_addr().expect("address");
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_GRAPHITE_ADDRESS", &addr.to_string()),
            ("HOOK_EXECUTOR_GRAPHITE_PREFIX", "ops.{app_id}.{task_id}"),
            ("HOOK_EXECUTOR_GRAPHITE_INTERVAL", "200ms"),
            ("MARATHON_APP_ID", "/team/web"),
        ],
    );
    emu.launch(shell_task(
        "t-graphite",
        "echo $$ > task.pid; exec sleep 600",
    ));
    wait_state(&emu, &exec, "t-graphite", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let wanted = "ops.team_web.t-graphite.task_state.TASK_RUNNING 1 ";
    let first = tokio::task::spawn_blocking(move || read_until(&listener, wanted))
        .await
        .expect("reader");
    for line in first.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(parts[0].starts_with("ops.team_web."), "{line}");
    }
    // The listener goes away and comes back on the same port.
    let again = std::net::TcpListener::bind(addr).expect("rebind the same port");
    let second = tokio::task::spawn_blocking(move || read_until(&again, wanted))
        .await
        .expect("reader");
    assert!(second.contains("ops.team_web.t-graphite.graphite_lines_sent_total "));
    emu.kill("t-graphite", None);
    wait_state(&emu, &exec, "t-graphite", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0), "{}", exec.log());
    assert_gone(&[pid]).await;
}

/// Accepts connections on `listener` and reads lines until one starts with
/// `wanted` (bounded by [`SOON`]); returns everything read. The listener is
/// closed on return.
fn read_until(listener: &std::net::TcpListener, wanted: &str) -> String {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + SOON;
    let mut seen = String::new();
    while Instant::now() < deadline {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with(wanted) {
                return seen;
            }
            if Instant::now() > deadline {
                break;
            }
        }
    }
    panic!("no line starting with {wanted:?} within {SOON:?}; got:\n{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_graphite_only_counts_drops() {
    // A reserved port nobody listens on: every connect is refused.
    let closed = reserve_port();
    let address = format!("127.0.0.1:{}", closed.port);
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(
        &emu,
        &[
            ("HOOK_EXECUTOR_GRAPHITE_ADDRESS", &address),
            ("HOOK_EXECUTOR_GRAPHITE_INTERVAL", "100ms"),
        ],
    )
    .await;
    let series = "mesos_hook_executor_graphite_lines_dropped_total{cause=\"connect\"}";
    let mut dropped = None;
    let start = Instant::now();
    while dropped.is_none() {
        assert!(start.elapsed() < SOON, "no connect drop counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = api(&socket, "GET", "/metrics", None).await.body;
        dropped = sample(&text, series).filter(|n| *n > 0.0);
    }
    let text = api(&socket, "GET", "/metrics", None).await.body;
    assert_eq!(
        sample(&text, "mesos_hook_executor_graphite_lines_sent_total"),
        Some(0.0)
    );
    let pid = api(&socket, "GET", "/remote/status", None).await.json()["task_pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .expect("the task's pid");
    stop_executor(&emu, &mut exec).await;
    assert_gone(&[pid]).await;
}
