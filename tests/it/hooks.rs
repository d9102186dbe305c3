//! Hook chains with the real binary: exec scripts, policy, Consul (fake agent
//! following Consul's API), webhooks; ordering observed from the task's side.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mesos_hook_executor::{
    emulator::EmulatorOptions,
    proto::v1::{self, task_status::Reason, TaskState},
};

use crate::{fake_consul::FakeConsul, helpers::*};

/// A hooks directory with one script per (event, name, body).
fn hooks_dir(scripts: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hooks-")
        .tempdir()
        .expect("tempdir");
    for (event, name, body) in scripts {
        let d = dir.path().join(format!("{event}.d"));
        std::fs::create_dir_all(&d).expect("mkdir");
        let path = d.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

fn dir_env(dir: &Path) -> String {
    dir.display().to_string()
}

/// A task that records, on SIGTERM, whether the before-terminate marker
/// already existed, then exits.
const TERM_RECORDER: &str =
    "trap 'if [ -e bt.done ]; then echo hooks-first > order; else echo term-first > order; fi; date +%s%N > term.at; exit 0' TERM; \
                             echo $$ > task.pid; while :; do sleep 0.05; done";

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_start_output_reaches_the_task_and_scripts_get_json_without_secrets() {
    let dir = hooks_dir(&[
        (
            "before-start",
            "10-inject",
            "cat > stdin.json; env > hook-env.out; echo INJECTED=from-hook; echo \"COMPUTED=$HOOK_EVENT-$MESOS_TASK_ID\"",
        ),
        ("before-start", "20-sees-earlier", "echo \"SECOND=saw-$INJECTED\""),
        ("before-start", ".hidden", "exit 1"),
    ]);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
            ("CONSUL_HTTP_TOKEN", "consul-secret"),
        ],
    );
    emu.launch(shell_task("t-inject", "env > task-env.out"));
    wait_state(&emu, &exec, "t-inject", TaskState::TaskFinished).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
    let env = exec.read_file("task-env.out").await;
    assert!(env.lines().any(|l| l == "INJECTED=from-hook"), "{env}");
    assert!(
        env.lines().any(|l| l == "COMPUTED=before-start-t-inject"),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l == "SECOND=saw-from-hook"),
        "later hooks see earlier additions:\n{env}"
    );
    let stdin: serde_json::Value =
        serde_json::from_str(&exec.read_file("stdin.json").await).expect("JSON on stdin");
    assert_eq!(stdin["event"], "before-start");
    assert_eq!(stdin["task"]["task_id"]["value"], "t-inject");
    assert_eq!(stdin["executor_id"], "executor-1");
    let hook_env = exec.read_file("hook-env.out").await;
    assert!(hook_env.lines().any(|l| l == "HOOK_EVENT=before-start"));
    for secret in ["consul-secret", "HOOK_EXECUTOR_"] {
        assert!(
            !hook_env.contains(secret),
            "{secret} reached the hook script"
        );
        assert!(!env.contains(secret), "{secret} reached the task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoing_hook_prevents_the_launch_and_is_named() {
    let dir = hooks_dir(&[(
        "before-start",
        "50-refuse",
        "echo 'maintenance window: no launches' >&2; exit 3",
    )]);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
        ],
    );
    emu.launch(shell_task("t-veto", "touch started"));
    let failed = wait_state(&emu, &exec, "t-veto", TaskState::TaskFailed).await;
    assert_ne!(
        failed.reason(),
        Reason::TaskUnauthorized,
        "only a policy refusal is REASON_TASK_UNAUTHORIZED"
    );
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("before-start hook `exec` refused the launch"),
        "{message}"
    );
    assert!(
        message.contains("50-refuse exited with status 3: maintenance window: no launches"),
        "{message}"
    );
    assert_eq!(
        emu.states("t-veto"),
        vec![TaskState::TaskStarting, TaskState::TaskFailed]
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert!(
        !exec.path("started").exists(),
        "the task's process must never start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hook_output_fails_the_launch_naming_script_and_line() {
    let dir = hooks_dir(&[(
        "before-start",
        "10-bad",
        "echo GOOD=1; echo 'this is not a variable'",
    )]);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
        ],
    );
    emu.launch(shell_task("t-bad-output", "true"));
    let failed = wait_state(&emu, &exec, "t-bad-output", TaskState::TaskFailed).await;
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("10-bad printed an invalid line 2"),
        "{message}"
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

async fn before_terminate_ordering(trigger: &str) {
    let dir = hooks_dir(&[(
        "before-terminate",
        "10-drain",
        "echo ran >> bt.log; sleep 0.3; touch bt.done",
    )]);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
        ],
    );
    let mut task = shell_task("t-order", TERM_RECORDER);
    task.kill_policy = Some(kill_policy(Duration::from_secs(10)));
    emu.launch(task);
    wait_state(&emu, &exec, "t-order", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    match trigger {
        "kill" => emu.kill("t-order", None),
        "shutdown" => emu.shutdown(),
        "agent-lost" => emu.close_stream(),
        "executor-sigterm" => {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(exec.pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("signal executor");
        }
        other => panic!("unknown trigger {other}"),
    }
    assert_eq!(
        exec.read_file("order").await.trim(),
        "hooks-first",
        "{trigger}: SIGTERM reached the task before the hooks finished"
    );
    let status = exec.wait_exit(SOON).await;
    assert_eq!(
        status.code(),
        Some(if trigger == "agent-lost" { 3 } else { 0 }),
        "log:\n{}",
        exec.log()
    );
    assert_eq!(
        exec.read_file("bt.log").await.lines().count(),
        1,
        "{trigger}: before-terminate ran exactly once"
    );
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_terminate_runs_before_sigterm_on_kill() {
    before_terminate_ordering("kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_terminate_runs_before_sigterm_on_shutdown() {
    before_terminate_ordering("shutdown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_terminate_runs_before_sigterm_on_agent_loss() {
    before_terminate_ordering("agent-lost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_terminate_runs_before_sigterm_on_executor_sigterm() {
    before_terminate_ordering("executor-sigterm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_terminate_runs_once_before_the_report_on_natural_exit_and_without_a_task() {
    let dir = hooks_dir(&[(
        "before-terminate",
        "10-mark",
        "echo \"$MESOS_TASK_ID\" >> bt.log",
    )]);
    let emu = emulator(EmulatorOptions::default()).await;
    emu.withhold_acks(true);
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
        ],
    );
    emu.launch(shell_task("t-natural", "exit 0"));
    wait_state(&emu, &exec, "t-natural", TaskState::TaskFinished).await;
    assert_eq!(
        std::fs::read_to_string(exec.path("bt.log")).unwrap_or_default(),
        "t-natural\n",
        "hooks ran before the terminal update"
    );
    emu.withhold_acks(false);
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_eq!(
        exec.read_file("bt.log").await,
        "t-natural\n",
        "exactly once"
    );

    // No task at all: before-terminate still runs once before the exit.
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
        ],
    );
    emu.wait_subscribed(1, SOON).await.expect("subscribed");
    emu.shutdown();
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_eq!(
        exec.read_file("bt.log").await,
        "\n",
        "ran once with no task id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_hook_is_killed_and_the_kill_stays_within_the_grace() {
    let dir = hooks_dir(&[(
        "before-terminate",
        "10-hang",
        "echo $$ > hang.pid; exec sleep 1000",
    )]);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
        ],
    );
    emu.launch(shell_task("t-hang", TERM_RECORDER));
    wait_state(&emu, &exec, "t-hang", TaskState::TaskRunning).await;
    let task_pid = exec.read_pid("task.pid").await;
    let sent = Instant::now();
    emu.kill("t-hang", Some(kill_policy(Duration::from_secs(2))));
    let hang_pid = exec.read_pid("hang.pid").await;
    let killed = wait_state(&emu, &exec, "t-hang", TaskState::TaskKilled).await;
    assert!(
        sent.elapsed() < Duration::from_secs(2) + Duration::from_millis(1500),
        "the hook blocked the kill past its grace: {:?}",
        sent.elapsed()
    );
    assert_eq!(
        killed.message.as_deref(),
        Some("Command exited with status 0"),
        "the task still got its SIGTERM"
    );
    assert_eq!(exec.read_file("order").await.trim(), "term-first");
    assert!(
        exec.log().contains("before-terminate hooks still running"),
        "{}",
        exec.log()
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[task_pid, hang_pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_before_start_hook_times_out_and_vetoes() {
    let dir = hooks_dir(&[(
        "before-start",
        "10-hang",
        "echo $$ > hang.pid; exec sleep 1000",
    )]);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
            ("HOOK_EXECUTOR_HOOK_TIMEOUT", "1secs"),
        ],
    );
    emu.launch(shell_task("t-slow-start", "touch started"));
    let failed = wait_state(&emu, &exec, "t-slow-start", TaskState::TaskFailed).await;
    assert!(failed
        .message
        .unwrap_or_default()
        .contains("timed out after 1s"));
    let hang_pid = exec.read_pid("hang.pid").await;
    assert_gone(&[hang_pid]).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert!(!exec.path("started").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_start_failure_kills_the_task_as_failed() {
    let dir = hooks_dir(&[(
        "after-start",
        "10-check",
        "echo 'port not open' >&2; exit 1",
    )]);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
        ],
    );
    emu.launch(shell_task("t-after", TERM_RECORDER));
    let failed = wait_state(&emu, &exec, "t-after", TaskState::TaskFailed).await;
    let message = failed.message.unwrap_or_default();
    assert!(
        message.starts_with(
            "after-start hook `exec` failed: 10-check exited with status 1: port not open"
        ),
        "{message}"
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refuses_privileged_and_foreign_volumes_and_accepts_allowed_ones() {
    let allowed = tempfile::tempdir().expect("tempdir");
    let env = [
        ("HOOK_EXECUTOR_HOOKS", "policy"),
        (
            "HOOK_EXECUTOR_POLICY_ALLOWED_HOST_PATHS",
            allowed.path().to_str().expect("utf8"),
        ),
    ];
    let container = |privileged: bool, host: &str| v1::ContainerInfo {
        r#type: v1::container_info::Type::Mesos as i32,
        docker: privileged.then(|| v1::container_info::DockerInfo {
            image: "x".into(),
            privileged: Some(true),
            ..Default::default()
        }),
        volumes: vec![v1::Volume {
            container_path: "/data".into(),
            host_path: Some(host.into()),
            mode: v1::volume::Mode::Ro as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    let cases: [(&str, bool, PathBuf, Option<&str>); 3] = [
        (
            "t-priv",
            true,
            allowed.path().join("ok"),
            Some("Docker privileged mode is not allowed"),
        ),
        (
            "t-etc",
            false,
            PathBuf::from("/etc"),
            Some("volume host path \"/etc\""),
        ),
        ("t-fine", false, allowed.path().join("data"), None),
    ];
    for (id, privileged, host, refusal) in cases {
        let emu = emulator(EmulatorOptions::default()).await;
        let mut exec = Executor::start(&emu, &env);
        let mut task = shell_task(id, "exit 0");
        task.container = Some(container(privileged, host.to_str().expect("utf8")));
        emu.launch(task);
        match refusal {
            Some(text) => {
                let failed = wait_state(&emu, &exec, id, TaskState::TaskFailed).await;
                let message = failed.message.clone().unwrap_or_default();
                assert!(
                    message.contains("before-start hook `policy` refused the launch")
                        && message.contains(text),
                    "{message}"
                );
                assert_eq!(failed.reason(), Reason::TaskUnauthorized);
            }
            None => {
                wait_state(&emu, &exec, id, TaskState::TaskFinished).await;
            }
        }
        assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_registers_after_start_and_deregisters_and_drains_before_sigterm() {
    let consul = FakeConsul::start(Some("acl-token")).await;
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "consul"),
            ("CONSUL_HTTP_ADDR", &consul.addr.to_string()),
            ("CONSUL_HTTP_TOKEN", "acl-token"),
            ("HOOK_EXECUTOR_CONSUL_DEREGISTER_WAIT", "1secs"),
        ],
    );
    let mut task = shell_task(
        "t-consul",
        &format!("echo \"$CONSUL_HTTP_TOKEN\" > token.seen; {TERM_RECORDER}"),
    );
    task.labels = Some(v1::Labels {
        labels: vec![
            v1::Label {
                key: "consul".into(),
                value: Some("web".into()),
            },
            v1::Label {
                key: "canary".into(),
                value: Some("tag".into()),
            },
        ],
    });
    task.resources.push(v1::Resource {
        name: "ports".into(),
        r#type: v1::value::Type::Ranges as i32,
        ranges: Some(v1::value::Ranges {
            range: vec![v1::value::Range {
                begin: 31555,
                end: 31555,
            }],
        }),
        ..Default::default()
    });
    task.kill_policy = Some(kill_policy(Duration::from_secs(10)));
    emu.launch(task);
    wait_state(&emu, &exec, "t-consul", TaskState::TaskRunning).await;
    let registered = emu
        .wait_for(SOON, |_| consul.services().get("t-consul").cloned())
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", exec.log()));
    assert_eq!(registered["Name"], "web");
    assert_eq!(registered["Port"], 31555);
    assert_eq!(
        registered["Address"], "localhost",
        "the agent's hostname from SUBSCRIBED"
    );
    assert!(registered["Tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x == "canary")));
    assert!(
        consul
            .requests()
            .iter()
            .all(|r| r.token.as_deref() == Some("acl-token")),
        "token sent on every call"
    );
    emu.kill("t-consul", None);
    wait_state(&emu, &exec, "t-consul", TaskState::TaskKilled).await;
    let deregistered = consul
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/agent/service/deregister/t-consul")
        .expect("deregistered");
    assert_eq!(
        (deregistered.method.as_str(), deregistered.status),
        ("PUT", 200)
    );
    let dereg_nanos = deregistered
        .at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let term_nanos: u128 = exec
        .read_file("term.at")
        .await
        .trim()
        .parse()
        .expect("nanoseconds");
    assert!(
        term_nanos >= dereg_nanos + 1_000_000_000,
        "SIGTERM came less than the drain wait after deregistration"
    );
    assert!(term_nanos <= now_nanos());
    assert!(consul.services().is_empty());
    assert_eq!(
        exec.read_file("token.seen").await.trim(),
        "",
        "CONSUL_HTTP_TOKEN must not reach the task"
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_every_event_and_a_required_one_can_veto() {
    let receiver = FakeConsul::start(None).await;
    let url = format!("http://{}/hook/events", receiver.addr);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "webhook"),
            ("HOOK_EXECUTOR_WEBHOOK_URLS", &url),
        ],
    );
    // Lives long enough for after-start and after-healthy (which follow each
    // other at once without a health check) to complete.
    emu.launch(shell_task("t-web", "sleep 1"));
    wait_state(&emu, &exec, "t-web", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    let events: Vec<String> = receiver
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
        .map(|v| v["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        events,
        [
            "before-start",
            "after-start",
            "after-healthy",
            "before-terminate"
        ]
    );

    receiver.set_webhook_status(500);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "webhook"),
            ("HOOK_EXECUTOR_WEBHOOK_URLS", &url),
            ("HOOK_EXECUTOR_WEBHOOK_REQUIRED", "true"),
        ],
    );
    emu.launch(shell_task("t-web-required", "touch started"));
    let failed = wait_state(&emu, &exec, "t-web-required", TaskState::TaskFailed).await;
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("before-start hook `webhook` refused the launch")
            && message.contains("answered 500"),
        "{message}"
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert!(!exec.path("started").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_configuration_errors_are_named_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mesos-hook-executor"))
        .env_clear()
        .env("MESOS_FRAMEWORK_ID", "f")
        .env("MESOS_EXECUTOR_ID", "e")
        .env("MESOS_AGENT_ENDPOINT", "127.0.0.1:1")
        .env("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs")
        .env("HOOK_EXECUTOR_HOOKS", "exec,consol")
        .env("HOOK_EXECUTOR_HOOKS_DIR", "/nonexistent/hooks")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("HOOK_EXECUTOR_HOOKS: unknown hook \"consol\""),
        "{err}"
    );
    assert!(
        err.contains("HOOK_EXECUTOR_HOOKS_DIR: /nonexistent/hooks is not a directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_executable_scripts_are_skipped_with_a_warning() {
    let dir = hooks_dir(&[("before-start", "20-runs", "echo RAN=yes")]);
    let disabled = dir.path().join("before-start.d").join("10-disabled");
    std::fs::write(&disabled, "#!/bin/sh\nexit 1\n").expect("write");
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir_env(dir.path())),
        ],
    );
    emu.launch(shell_task("t-skip", "echo $RAN > ran.out"));
    wait_state(&emu, &exec, "t-skip", TaskState::TaskFinished).await;
    assert_eq!(exec.read_file("ran.out").await.trim(), "yes");
    assert!(exec
        .log()
        .contains("skipping a hook script that is not executable"));
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_example_hooks_work() {
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks");
    let marker_dir = tempfile::tempdir().expect("tempdir");
    let marker = marker_dir.path().join("maintenance");
    let env = [
        ("HOOK_EXECUTOR_HOOKS", "exec"),
        ("HOOK_EXECUTOR_HOOKS_DIR", hooks),
        ("HOOK_MAINTENANCE_FILE", marker.to_str().expect("utf8")),
        ("DRAIN_SECONDS", "0"),
    ];
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &env);
    emu.launch(shell_task("shop.instance-1", "env > env.out"));
    wait_state(&emu, &exec, "shop.instance-1", TaskState::TaskFinished).await;
    let task_env = exec.read_file("env.out").await;
    assert!(
        task_env.lines().any(|l| l == "INSTANCE_APP=shop"),
        "{task_env}"
    );
    assert!(
        task_env
            .lines()
            .any(|l| l.starts_with("INSTANCE_STARTED_AT=20")),
        "{task_env}"
    );
    assert!(exec.path("hook-before-start.json").exists());
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert!(
        exec.log().contains("draining shop.instance-1"),
        "{}",
        exec.log()
    );

    std::fs::write(&marker, "kernel upgrade").expect("marker");
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &env);
    emu.launch(shell_task("shop.instance-2", "touch started"));
    let failed = wait_state(&emu, &exec, "shop.instance-2", TaskState::TaskFailed).await;
    assert!(failed
        .message
        .unwrap_or_default()
        .contains("node is in maintenance"));
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert!(!exec.path("started").exists());
}
