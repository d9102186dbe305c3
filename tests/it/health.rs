//! Health checks and generic checks against real servers started by the task
//! itself (`task-helper http-server|https-server|tcp-server`). The HTTP
//! servers answer with the status written in a file in the sandbox, so a test
//! flips a task's health by rewriting it. Delays and intervals are asserted by
//! counting probes (the servers log every request) against generous time
//! bounds measured by the test, never by tight timing.

use std::time::{Duration, Instant};

use mesos_hook_executor::{
    emulator::{AgentEmulator, EmulatorOptions},
    proto::v1::{
        self, check_info, framework_info::capability, health_check, task_status::Reason, TaskState,
    },
};

use crate::helpers::*;

/// A task running `task-helper <server> PORT [status]` in its sandbox.
fn server_task(id: &str, server: &str, port: u16) -> v1::TaskInfo {
    let port = port.to_string();
    let mut args = vec!["task-helper", server, port.as_str()];
    if server != "tcp-server" {
        args.push("status");
    }
    argv_task(id, task_helper().to_str().expect("utf8"), &args)
}

fn helper_task(id: &str, mode: &str, pidfile: &str) -> v1::TaskInfo {
    argv_task(
        id,
        task_helper().to_str().expect("utf8"),
        &["task-helper", mode, pidfile],
    )
}

/// Fast timings for tests: no delay, 0.1 s interval, 5 s timeout, and
/// failures that never kill unless a test says so. The 5 s grace covers the
/// task's server starting up (the first probes may find the port closed).
fn fast(mut hc: v1::HealthCheck) -> v1::HealthCheck {
    hc.delay_seconds = Some(0.0);
    hc.interval_seconds = Some(0.1);
    hc.timeout_seconds = Some(5.0);
    hc.grace_period_seconds = Some(5.0);
    hc.consecutive_failures = Some(1000);
    hc
}

fn http_health(port: u16, path: &str, scheme: Option<&str>) -> v1::HealthCheck {
    fast(v1::HealthCheck {
        r#type: Some(health_check::Type::Http as i32),
        http: Some(health_check::HttpCheckInfo {
            port: u32::from(port),
            path: Some(path.into()),
            scheme: scheme.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn tcp_health(port: u16) -> v1::HealthCheck {
    fast(v1::HealthCheck {
        r#type: Some(health_check::Type::Tcp as i32),
        tcp: Some(health_check::TcpCheckInfo {
            port: u32::from(port),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn shell(command: &str, env: &[(&str, &str)]) -> v1::CommandInfo {
    v1::CommandInfo {
        value: Some(command.into()),
        shell: Some(true),
        environment: (!env.is_empty()).then(|| v1::Environment {
            variables: env
                .iter()
                .map(|(k, v)| v1::environment::Variable {
                    name: (*k).into(),
                    value: Some((*v).into()),
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    }
}

fn command_health(command: &str, env: &[(&str, &str)]) -> v1::HealthCheck {
    fast(v1::HealthCheck {
        r#type: Some(health_check::Type::Command as i32),
        command: Some(shell(command, env)),
        ..Default::default()
    })
}

fn fast_check(mut check: v1::CheckInfo) -> v1::CheckInfo {
    check.delay_seconds = Some(0.0);
    check.interval_seconds = Some(0.1);
    check.timeout_seconds = Some(5.0);
    check
}

/// Effective updates of a task (no duplicates), in order.
fn updates_of(emu: &AgentEmulator, task_id: &str) -> Vec<v1::TaskStatus> {
    emu.status_log()
        .into_iter()
        .filter(|r| r.effective() && r.status.task_id.value == task_id)
        .map(|r| r.status)
        .collect()
}

fn with_reason(emu: &AgentEmulator, task_id: &str, reason: Reason) -> Vec<v1::TaskStatus> {
    updates_of(emu, task_id)
        .into_iter()
        .filter(|s| s.reason == Some(reason as i32))
        .collect()
}

/// The `healthy` values of the task's health updates, in order.
fn health_reports(emu: &AgentEmulator, task_id: &str) -> Vec<bool> {
    with_reason(emu, task_id, Reason::TaskHealthCheckStatusUpdated)
        .iter()
        .filter_map(|s| s.healthy)
        .collect()
}

fn lines(exec: &Executor, file: &str) -> Vec<String> {
    std::fs::read_to_string(exec.path(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn set_status(exec: &Executor, text: &str) {
    let tmp = exec.path("status.tmp");
    std::fs::write(&tmp, text).expect("write status");
    std::fs::rename(tmp, exec.path("status")).expect("rename status");
}

/// Polls `f` (bounded by [`SOON`]) until it holds.
async fn eventually(emu: &AgentEmulator, exec: &Executor, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < SOON,
            "{what}: not reached within {SOON:?}\nupdates: {:?}\nexecutor log:\n{}",
            emu.updates()
                .iter()
                .map(|s| (s.state().as_str_name(), s.reason, s.healthy))
                .collect::<Vec<_>>(),
            exec.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_health_update_shape(emu: &AgentEmulator, task_id: &str) {
    for s in with_reason(emu, task_id, Reason::TaskHealthCheckStatusUpdated) {
        assert_eq!(
            s.state(),
            TaskState::TaskRunning,
            "health updates are TASK_RUNNING"
        );
        assert!(s.healthy.is_some(), "health updates carry `healthy`");
        assert_eq!(s.source(), v1::task_status::Source::Executor);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_flips_are_reported_once_per_change() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let reserved = reserve_port();
    let port = reserved.port;
    set_status(&exec, "200");
    let mut task = server_task("t-flip", "http-server", port);
    task.health_check = Some(http_health(port, "/health", None));
    emu.launch(task);
    eventually(&emu, &exec, "first healthy", || {
        health_reports(&emu, "t-flip") == [true]
    })
    .await;
    set_status(&exec, "500");
    eventually(&emu, &exec, "failures reported", || {
        health_reports(&emu, "t-flip")
            .iter()
            .filter(|h| !**h)
            .count()
            >= 2
    })
    .await;
    set_status(&exec, "200");
    eventually(&emu, &exec, "healthy again", || {
        health_reports(&emu, "t-flip").last() == Some(&true)
    })
    .await;
    // While the answer stays the same, more probes bring no more updates.
    let reports = health_reports(&emu, "t-flip");
    let probes = lines(&exec, "requests.log").len();
    eventually(&emu, &exec, "five more probes", || {
        lines(&exec, "requests.log").len() >= probes + 5
    })
    .await;
    assert_eq!(
        health_reports(&emu, "t-flip"),
        reports,
        "no update while the health did not change"
    );
    // Shape: healthy once, every counted failure unhealthy, healthy once again.
    assert!(reports.len() >= 4, "{reports:?}");
    assert!(reports[0] && reports[reports.len() - 1]);
    assert!(
        reports[1..reports.len() - 1].iter().all(|h| !h),
        "{reports:?}"
    );
    assert_health_update_shape(&emu, "t-flip");
    assert!(lines(&exec, "requests.log")
        .iter()
        .all(|l| l.starts_with("GET /health ")));
    emu.kill("t-flip", None);
    let killed = wait_state(&emu, &exec, "t-flip", TaskState::TaskKilled).await;
    assert_eq!(
        killed.healthy, None,
        "a kill not caused by the health check says nothing about health"
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_in_the_grace_period_are_ignored_and_consecutive_failures_kill() {
    let emu = emulator(EmulatorOptions {
        capabilities: vec![capability::Type::TaskKillingState],
        ..Default::default()
    })
    .await;
    let mut exec = Executor::start(&emu, &[]);
    let reserved = reserve_port();
    let port = reserved.port;
    set_status(&exec, "503");
    let mut task = server_task("t-grace", "http-server", port);
    let mut hc = http_health(port, "/", None);
    hc.grace_period_seconds = Some(2.0);
    hc.consecutive_failures = Some(3);
    task.health_check = Some(hc);
    emu.launch(task);
    wait_state(&emu, &exec, "t-grace", TaskState::TaskRunning).await;
    let pid = exec.read_pid("server.pid").await;
    let killed = wait_state(&emu, &exec, "t-grace", TaskState::TaskKilled).await;
    // The probes inside the grace period were made and ignored; after it,
    // each failure was reported and the third one killed the task.
    assert_eq!(health_reports(&emu, "t-grace"), vec![false, false, false]);
    let probes = lines(&exec, "requests.log").len();
    assert!(
        probes > 3,
        "only {probes} probes: none inside the grace period?"
    );
    assert!(
        exec.log().contains("still in the grace period"),
        "log:\n{}",
        exec.log()
    );
    assert_health_update_shape(&emu, "t-grace");
    assert_eq!(
        emu.states("t-grace"),
        vec![
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskRunning,
            TaskState::TaskRunning,
            TaskState::TaskRunning,
            TaskState::TaskKilling,
            TaskState::TaskKilled
        ]
    );
    // Mesos' terminal update for a health kill: TASK_KILLED, healthy=false, no reason.
    assert_eq!(killed.healthy, Some(false));
    assert_eq!(killed.reason, None);
    assert_eq!(
        killed.message.as_deref(),
        Some("Command terminated with signal Terminated")
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_and_interval_are_honoured() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let reserved = reserve_port();
    let port = reserved.port;
    set_status(&exec, "200");
    let mut task = server_task("t-sched", "http-server", port);
    let mut hc = http_health(port, "/", None);
    hc.delay_seconds = Some(2.0);
    hc.interval_seconds = Some(0.5);
    task.health_check = Some(hc);
    let launched = Instant::now();
    emu.launch(task);
    wait_state(&emu, &exec, "t-sched", TaskState::TaskRunning).await;
    exec.read_pid("server.pid").await;
    eventually(&emu, &exec, "healthy", || {
        health_reports(&emu, "t-sched") == [true]
    })
    .await;
    // When the first probe was judged, by the executor's own update
    // timestamps: no earlier than delay_seconds after TASK_RUNNING.
    let stamp = |pick: &dyn Fn(&v1::TaskStatus) -> bool| {
        emu.updates()
            .iter()
            .find(|s| s.task_id.value == "t-sched" && pick(s))
            .and_then(|s| s.timestamp)
            .expect("a timestamped update")
    };
    let running = stamp(&|s| s.state() == TaskState::TaskRunning && s.reason.is_none());
    let first_probe = stamp(&|s| s.reason() == Reason::TaskHealthCheckStatusUpdated);
    assert!(
        first_probe - running >= 2.0 - 0.01,
        "the first probe came {:.3} s after TASK_RUNNING, before delay_seconds",
        first_probe - running
    );
    eventually(&emu, &exec, "four probes", || {
        lines(&exec, "requests.log").len() >= 4
    })
    .await;
    // The first probe came at least 2 s after `launched`, each next one at
    // least 0.5 s after the previous one: at most 1 + window / 0.5 probes by
    // now (plus one of slack), where an ignored interval would give many more.
    let probes = lines(&exec, "requests.log").len();
    let window = launched
        .elapsed()
        .saturating_sub(Duration::from_secs(2))
        .as_secs_f64();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let most = (window / 0.5) as usize + 2;
    assert!(
        probes <= most,
        "{probes} probes in {window:.2}s with a 0.5s interval (at most {most})"
    );
    emu.kill("t-sched", None);
    wait_state(&emu, &exec, "t-sched", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_check_runs_in_the_task_environment_and_sandbox_and_never_overlaps() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    std::fs::write(exec.path("marker"), "x").expect("marker");
    let mut task = helper_task("t-cmd", "term-exit", "task.pid");
    if let Some(command) = task.command.as_mut() {
        command.environment = shell("", &[("GREETING", "hello")]).environment;
    }
    // Each run takes 0.2 s and the interval is 0: runs must still not overlap.
    let script = "echo start >> trace; test \"$GREETING\" = hello && test -f marker && test \"$CHECK_VAR\" = x \
                  && test \"$MESOS_TASK_ID\" = t-cmd; r=$?; sleep 0.2; echo end >> trace; exit $r";
    let mut hc = command_health(script, &[("CHECK_VAR", "x")]);
    hc.interval_seconds = Some(0.0);
    task.health_check = Some(hc);
    emu.launch(task);
    eventually(&emu, &exec, "healthy", || {
        health_reports(&emu, "t-cmd") == [true]
    })
    .await;
    eventually(&emu, &exec, "three runs", || {
        lines(&exec, "trace").len() >= 6
    })
    .await;
    let trace = lines(&exec, "trace");
    for (i, line) in trace.iter().enumerate() {
        assert_eq!(
            line,
            if i % 2 == 0 { "start" } else { "end" },
            "overlapping runs: {trace:?}"
        );
    }
    emu.kill("t-cmd", None);
    wait_state(&emu, &exec, "t-cmd", TaskState::TaskKilled).await;
    assert_eq!(health_reports(&emu, "t-cmd"), vec![true]);
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_command_check_is_killed_at_its_timeout_and_counts_as_a_failure() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let mut task = helper_task("t-hang", "term-exit", "task.pid");
    let mut hc = command_health("echo $$ >> check.pids; exec sleep 1000", &[]);
    hc.timeout_seconds = Some(0.5);
    hc.consecutive_failures = Some(2);
    hc.grace_period_seconds = Some(0.0);
    task.health_check = Some(hc);
    emu.launch(task);
    let task_pid = exec.read_pid("task.pid").await;
    let killed = wait_state(&emu, &exec, "t-hang", TaskState::TaskKilled).await;
    assert_eq!(health_reports(&emu, "t-hang"), vec![false, false]);
    assert_eq!(killed.healthy, Some(false));
    assert!(
        exec.log().contains("timed out after"),
        "log:\n{}",
        exec.log()
    );
    let pids: Vec<i32> = lines(&exec, "check.pids")
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(pids.len() >= 2, "{pids:?}");
    assert_gone(&pids).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[task_pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_check_against_a_self_signed_server_follows_redirects() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let reserved = reserve_port();
    let port = reserved.port;
    // A 302 to a 200 is healthy (curl -L, as Mesos).
    set_status(&exec, "302 /ok");
    let mut task = server_task("t-tls", "https-server", port);
    task.health_check = Some(http_health(port, "/health", Some("https")));
    emu.launch(task);
    eventually(&emu, &exec, "healthy over TLS", || {
        health_reports(&emu, "t-tls") == [true]
    })
    .await;
    let requests = lines(&exec, "requests.log");
    assert!(
        requests.iter().any(|l| l.starts_with("GET /health "))
            && requests.iter().any(|l| l.starts_with("GET /ok ")),
        "{requests:?}"
    );
    // A 404 is unhealthy.
    set_status(&exec, "404");
    eventually(&emu, &exec, "unhealthy", || {
        health_reports(&emu, "t-tls").last() == Some(&false)
    })
    .await;
    emu.kill("t-tls", None);
    wait_state(&emu, &exec, "t-tls", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_against_a_closed_port_fail_cleanly() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let reserved = reserve_port();
    let closed = reserved.port;
    let mut task = helper_task("t-closed", "term-exit", "task.pid");
    let mut hc = tcp_health(closed);
    hc.consecutive_failures = Some(2);
    hc.grace_period_seconds = Some(0.0);
    task.health_check = Some(hc);
    // A generic HTTP check on the same closed port: an error is the empty
    // typed status, equal to the initial one, so it is never reported.
    task.check = Some(fast_check(v1::CheckInfo {
        r#type: Some(check_info::Type::Http as i32),
        http: Some(check_info::Http {
            port: u32::from(closed),
            path: None,
        }),
        ..Default::default()
    }));
    emu.launch(task);
    let killed = wait_state(&emu, &exec, "t-closed", TaskState::TaskKilled).await;
    assert_eq!(health_reports(&emu, "t-closed"), vec![false, false]);
    assert_eq!(killed.healthy, Some(false));
    assert!(with_reason(&emu, "t-closed", Reason::TaskCheckStatusUpdated).is_empty());
    for s in updates_of(&emu, "t-closed") {
        let check = s.check_status.expect("every update carries check_status");
        assert_eq!(
            (check.r#type, check.http),
            (
                Some(check_info::Type::Http as i32),
                Some(Default::default())
            )
        );
    }
    assert!(!exec.log().contains("panicked"));
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_http_check_reports_check_status_when_it_changes() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let reserved = reserve_port();
    let port = reserved.port;
    set_status(&exec, "200");
    let mut task = server_task("t-check", "http-server", port);
    task.check = Some(fast_check(v1::CheckInfo {
        r#type: Some(check_info::Type::Http as i32),
        http: Some(check_info::Http {
            port: u32::from(port),
            path: Some("/status".into()),
        }),
        ..Default::default()
    }));
    emu.launch(task);
    let code_of = |s: &v1::TaskStatus| {
        s.check_status
            .and_then(|c| c.http)
            .and_then(|h| h.status_code)
    };
    let codes = |emu: &AgentEmulator| {
        with_reason(emu, "t-check", Reason::TaskCheckStatusUpdated)
            .iter()
            .map(code_of)
            .collect::<Vec<_>>()
    };
    eventually(&emu, &exec, "first check result", || {
        codes(&emu) == [Some(200)]
    })
    .await;
    set_status(&exec, "404");
    eventually(&emu, &exec, "changed result", || {
        codes(&emu) == [Some(200), Some(404)]
    })
    .await;
    let probes = lines(&exec, "requests.log").len();
    eventually(&emu, &exec, "five more probes", || {
        lines(&exec, "requests.log").len() >= probes + 5
    })
    .await;
    assert_eq!(
        codes(&emu),
        [Some(200), Some(404)],
        "no update while the result did not change"
    );
    emu.kill("t-check", None);
    wait_state(&emu, &exec, "t-check", TaskState::TaskKilled).await;
    let all = updates_of(&emu, "t-check");
    // Every update carries check_status of the check's type; the ones Mesos
    // creates from scratch (STARTING, RUNNING, KILLED) carry it empty.
    for s in &all {
        let check = s.check_status.expect("check_status on every update");
        assert_eq!(check.r#type, Some(check_info::Type::Http as i32));
        assert!(check.http.is_some());
        if s.reason != Some(Reason::TaskCheckStatusUpdated as i32) {
            assert_eq!(code_of(s), None, "{:?}", s.state());
        } else {
            assert_eq!(s.state(), TaskState::TaskRunning);
            assert_eq!(s.healthy, None);
        }
    }
    assert_eq!(
        all.first().map(v1::TaskStatus::state),
        Some(TaskState::TaskStarting)
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_command_check_reports_exit_codes_and_an_empty_status_on_timeout() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    std::fs::write(exec.path("code"), "0").expect("code");
    let mut task = helper_task("t-cmdcheck", "term-exit", "task.pid");
    let mut check = fast_check(v1::CheckInfo {
        r#type: Some(check_info::Type::Command as i32),
        command: Some(check_info::Command {
            command: shell(
                "c=$(cat code); [ \"$c\" = hang ] && exec sleep 1000; exit $c",
                &[],
            ),
        }),
        ..Default::default()
    });
    check.timeout_seconds = Some(0.5);
    task.check = Some(check);
    emu.launch(task);
    let exit_codes = |emu: &AgentEmulator| {
        with_reason(emu, "t-cmdcheck", Reason::TaskCheckStatusUpdated)
            .iter()
            .map(|s| s.check_status.and_then(|c| c.command).map(|c| c.exit_code))
            .collect::<Vec<_>>()
    };
    eventually(&emu, &exec, "exit 0", || {
        exit_codes(&emu) == [Some(Some(0))]
    })
    .await;
    std::fs::write(exec.path("code"), "3").expect("code");
    eventually(&emu, &exec, "exit 3", || {
        exit_codes(&emu).last() == Some(&Some(Some(3)))
    })
    .await;
    std::fs::write(exec.path("code"), "hang").expect("code");
    // A timeout gives the empty typed message (`command` set, no exit code).
    eventually(&emu, &exec, "timeout", || {
        exit_codes(&emu).last() == Some(&Some(None))
    })
    .await;
    assert_eq!(exit_codes(&emu), [Some(Some(0)), Some(Some(3)), Some(None)]);
    emu.kill("t-cmdcheck", None);
    wait_state(&emu, &exec, "t-cmdcheck", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_and_tcp_check_against_a_listening_task() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let reserved = reserve_port();
    let port = reserved.port;
    let mut task = server_task("t-tcp", "tcp-server", port);
    task.health_check = Some(tcp_health(port));
    task.check = Some(fast_check(v1::CheckInfo {
        r#type: Some(check_info::Type::Tcp as i32),
        tcp: Some(check_info::Tcp {
            port: u32::from(port),
        }),
        ..Default::default()
    }));
    emu.launch(task);
    eventually(&emu, &exec, "healthy and connected", || {
        health_reports(&emu, "t-tcp") == [true]
            && with_reason(&emu, "t-tcp", Reason::TaskCheckStatusUpdated)
                .iter()
                .any(|s| s.check_status.and_then(|c| c.tcp).and_then(|t| t.succeeded) == Some(true))
    })
    .await;
    // The health update copies the last status, check_status included, and
    // the check update keeps `healthy`: each carries both once both exist.
    let last = updates_of(&emu, "t-tcp").pop().expect("updates");
    assert_eq!(last.healthy, Some(true));
    assert_eq!(
        last.check_status
            .and_then(|c| c.tcp)
            .and_then(|t| t.succeeded),
        Some(true)
    );
    // The server logs a connection after accepting it, which may come after
    // the probe's connect has already succeeded.
    eventually(&emu, &exec, "connection logged", || {
        !lines(&exec, "connections.log").is_empty()
    })
    .await;
    emu.kill("t-tcp", None);
    wait_state(&emu, &exec, "t-tcp", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_health_check_is_logged_and_the_task_runs_without_it() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let mut task = helper_task("t-invalid", "term-exit", "task.pid");
    // Would kill the task at once if it ran: a closed port, first failure kills.
    let closed = reserve_port();
    let mut hc = tcp_health(closed.port);
    hc.consecutive_failures = Some(0);
    hc.grace_period_seconds = Some(0.0);
    hc.interval_seconds = Some(-1.0);
    task.health_check = Some(hc);
    emu.launch(task);
    wait_state(&emu, &exec, "t-invalid", TaskState::TaskRunning).await;
    eventually(&emu, &exec, "validation error logged", || {
        exec.log().contains("invalid health check")
    })
    .await;
    assert!(exec
        .log()
        .contains("Expecting 'interval_seconds' to be non-negative"));
    emu.kill("t-invalid", None);
    let killed = wait_state(&emu, &exec, "t-invalid", TaskState::TaskKilled).await;
    assert!(health_reports(&emu, "t-invalid").is_empty());
    assert_eq!(killed.healthy, None);
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_registration_waits_for_the_first_healthy_result() {
    let consul = crate::fake_consul::FakeConsul::start(None).await;
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "consul"),
            ("CONSUL_HTTP_ADDR", &consul.addr.to_string()),
        ],
    );
    let reserved = reserve_port();
    let port = reserved.port;
    set_status(&exec, "503");
    let mut task = server_task("t-consul-healthy", "http-server", port);
    task.health_check = Some(http_health(port, "/health", None));
    task.labels = Some(v1::Labels {
        labels: vec![v1::Label {
            key: "consul".into(),
            value: Some("api".into()),
        }],
    });
    task.resources.push(v1::Resource {
        name: "ports".into(),
        r#type: v1::value::Type::Ranges as i32,
        ranges: Some(v1::value::Ranges {
            range: vec![v1::value::Range {
                begin: u64::from(port),
                end: u64::from(port),
            }],
        }),
        ..Default::default()
    });
    emu.launch(task);
    // Running but unhealthy: probes come and go, nothing is registered.
    eventually(&emu, &exec, "several probes", || {
        lines(&exec, "requests.log").len() >= 5
    })
    .await;
    assert!(
        consul.requests().is_empty(),
        "registered before the task was healthy"
    );
    set_status(&exec, "200");
    eventually(&emu, &exec, "first healthy", || {
        health_reports(&emu, "t-consul-healthy").last() == Some(&true)
    })
    .await;
    eventually(&emu, &exec, "registration", || {
        consul.services().contains_key("t-consul-healthy")
    })
    .await;
    let service = &consul.services()["t-consul-healthy"];
    assert_eq!(service["Name"], "api");
    assert_eq!(
        service["Check"]["HTTP"],
        format!("http://localhost:{port}/health"),
        "the health check is mirrored"
    );
    emu.kill("t-consul-healthy", None);
    wait_state(&emu, &exec, "t-consul-healthy", TaskState::TaskKilled).await;
    assert!(consul.services().is_empty(), "deregistered");
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}
