//! The remote-execution API against the real executor binary: a real socket,
//! real processes, the exact answers of the compatible shape, our endpoints,
//! every error code, security (mode, SO_PEERCRED, token), long paths, limits,
//! cleanup at exit, and `executorctl` end to end.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use mesos_hook_executor::emulator::EmulatorOptions;
use serde_json::{json, Value};

use crate::helpers::*;

fn pid_of(v: &Value) -> i32 {
    i32::try_from(v["pid"].as_i64().expect("pid")).expect("fits")
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

fn assert_error(status: u16, v: &Value, want: u16) {
    assert_eq!(status, want, "{v}");
    assert_eq!(keys(v), ["error", "result"], "{v}");
    assert_eq!(v["result"], "error");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatible_shape_examples_answer_exactly() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let sandbox = exec.sandbox.path().display().to_string();

    let (status, v) = api_json(&socket, "GET", "/remote/status", None).await;
    assert_eq!(status, 200);
    let task_pid = v["task_pid"]
        .as_i64()
        .expect("task pid while the task runs");
    assert_eq!(
        v,
        json!({
            "release": mesos_hook_executor::RELEASE, "result": "ok", "sandbox_dir": sandbox, "status": "active", "work_dir": sandbox,
            "framework_id": "framework-1", "executor_id": "executor-1", "task_id": "t-remote", "marathon_app_id": null, "task_state": "TASK_RUNNING",
            "task_pid": task_pid, "healthy": null, "running_commands": 0, "retained_results": 0
        })
    );

    // The issue's example, verbatim.
    let (status, v) = api_json(
        &socket,
        "POST",
        "/remote/execute",
        Some(r#"{"command": "ls", "shell": false, "arguments": ["-la", "/tmp"], "timeout": 10}"#),
    )
    .await;
    assert_eq!(status, 200);
    let ls = pid_of(&v);
    assert_eq!(v, json!({"result": "OK", "pid": ls}));
    let r = remote_result(&socket, ls).await;
    assert_eq!(keys(&r), ["exitCode", "signaled", "stderr", "stdout"]);
    assert_eq!(
        (
            r["exitCode"].as_i64(),
            r["signaled"].as_bool(),
            r["stderr"].as_str()
        ),
        (Some(0), Some(false), Some(""))
    );
    assert!(
        r["stdout"]
            .as_str()
            .is_some_and(|s| s.starts_with("total ")),
        "{r}"
    );

    // shell: false passes arguments verbatim: no expansion.
    let echo = remote_execute(
        &socket,
        r#"{"command": "echo", "arguments": ["$PATH"], "shell": false}"#,
    )
    .await;
    assert_eq!(
        remote_result(&socket, echo).await,
        json!({"exitCode": 0, "signaled": false, "stdout": "$PATH\n", "stderr": ""})
    );

    // shell defaults to true; arguments are then ignored, and we say so.
    let (status, v) = api_json(
        &socket,
        "POST",
        "/remote/execute",
        Some(r#"{"command": "echo $0-ok", "arguments": ["ignored"]}"#),
    )
    .await;
    assert_eq!(status, 200);
    let shell = pid_of(&v);
    assert_eq!(v["result"], "OK");
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        remote_result(&socket, shell).await,
        json!({"exitCode": 0, "signaled": false, "stdout": "sh-ok\n", "stderr": ""})
    );

    // Mesos CommandInfo spelling; a failing command still answers 200.
    let failing = remote_execute(
        &socket,
        r#"{"value": "echo $GREETING; echo oops >&2; exit 3", "environment": {"variables": [{"name": "GREETING", "value": "hi"}]}}"#,
    )
    .await;
    assert_eq!(
        remote_result(&socket, failing).await,
        json!({"exitCode": 3, "signaled": false, "stdout": "hi\n", "stderr": "oops\n"})
    );

    let (status, v) = api_json(&socket, "GET", "/remote/task", None).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"pids": [ls, echo, shell, failing]}));
    let (_, v) = api_json(&socket, "GET", "/remote/status", None).await;
    assert_eq!(
        (
            v["running_commands"].as_i64(),
            v["retained_results"].as_i64()
        ),
        (Some(0), Some(4))
    );

    let log = exec.log();
    let audit = log
        .lines()
        .find(|l| l.contains("remote execute") && l.contains(&format!(" pid={ls} ")))
        .unwrap_or_else(|| panic!("no audit line for pid {ls}:\n{log}"));
    // Each fact once, with the executor's ids like every other line.
    assert!(
        audit.contains("peer_uid=0") && audit.contains("outcome=started"),
        "{audit}"
    );
    for fact in ["uid=", "framework_id=", "executor_id=", "started"] {
        assert_eq!(audit.matches(fact).count(), 1, "{fact} once: {audit}");
    }
    assert!(
        log.contains("are ignored when \"shell\" is true"),
        "the ignored arguments are not logged:\n{log}"
    );
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_get_the_task_environment_rules_sandbox_and_own_group() {
    let emu = emulator(EmulatorOptions {
        auth_token: Some("agent-t0ken".into()),
        ..Default::default()
    })
    .await;
    let (mut exec, socket) = executor_with_api(
        &emu,
        &[
            ("HOOK_EXECUTOR_ENV_DENYLIST", "MY_SECRET_*"),
            ("MY_SECRET_KEY", "s3cret"),
            ("VISIBLE", "yes"),
            ("CONSUL_HTTP_TOKEN", "c0nsul"),
        ],
    )
    .await;
    let pid = remote_execute(
        &socket,
        r#"{"command": "env; pwd; echo pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$"}"#,
    )
    .await;
    let r = remote_result(&socket, pid).await;
    let out = r["stdout"].as_str().expect("stdout");
    assert!(out.contains("VISIBLE=yes\n"), "{out}");
    assert!(out.contains("MESOS_TASK_ID=t-remote\n"), "{out}");
    assert!(
        out.contains(&format!(
            "MESOS_SANDBOX={}\n",
            exec.sandbox.path().display()
        )),
        "{out}"
    );
    for secret in ["s3cret", "agent-t0ken", "c0nsul", "HOOK_EXECUTOR_"] {
        assert!(
            !out.contains(secret),
            "{secret} leaked into a remote command:\n{out}"
        );
    }
    assert!(
        out.contains(&format!("\n{}\n", exec.sandbox.path().display())),
        "not run in the sandbox:\n{out}"
    );
    // The group is led by the command's guard, whose pid the API gives.
    assert!(
        out.contains(&format!("pgid={pid} pid=")),
        "not its own process group:\n{out}"
    );
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_by_both_spellings_signals_the_group() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) =
        executor_with_api(&emu, &[("HOOK_EXECUTOR_REMOTE_KILL_GRACE", "500ms")]).await;
    let started = Instant::now();
    let term = remote_execute(&socket, r#"{"command": "sleep 30", "timeout": 1}"#).await;
    let ignoring = remote_execute(
        &socket,
        r#"{"command": "trap '' TERM; sleep 30", "environment": {"variables": [{"name": "EXECUTE_TIMEOUT_SEC", "value": "1"}]}}"#,
    )
    .await;
    assert_eq!(
        remote_result(&socket, term).await,
        json!({"exitCode": 15, "signaled": true, "stdout": "", "stderr": "", "timedOut": true})
    );
    assert_eq!(
        remote_result(&socket, ignoring).await,
        json!({"exitCode": 9, "signaled": true, "stdout": "", "stderr": "", "timedOut": true})
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "SIGKILL came before timeout + grace"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    let (status, v) = api_json(
        &socket,
        "POST",
        "/remote/execute",
        Some(r#"{"command": "true", "environment": {"variables": [{"name": "EXECUTE_TIMEOUT_SEC", "value": "ten"}]}}"#),
    )
    .await;
    assert_error(status, &v, 400);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("EXECUTE_TIMEOUT_SEC")),
        "{v}"
    );
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_while_running_wait_and_terminate() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) =
        executor_with_api(&emu, &[("HOOK_EXECUTOR_REMOTE_KILL_GRACE", "500ms")]).await;
    let sleeper = remote_execute(&socket, r#"{"command": "echo started; sleep 30"}"#).await;
    let (status, v) = api_json(&socket, "GET", &format!("/remote/task/{sleeper}"), None).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        (
            v["running"].as_bool(),
            v["pid"].as_i64(),
            v["command"].as_str()
        ),
        (
            Some(true),
            Some(i64::from(sleeper)),
            Some("echo started; sleep 30")
        )
    );
    let asked = Instant::now();
    let (status, _) = api_json(
        &socket,
        "GET",
        &format!("/remote/task/{sleeper}?wait=0.3"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "wait did not block"
    );

    let (status, v) = api_json(&socket, "DELETE", &format!("/remote/task/{sleeper}"), None).await;
    assert_eq!(status, 200);
    let terminated = json!({"exitCode": 15, "signaled": true, "stdout": "started\n", "stderr": "", "terminated": true});
    assert_eq!(v, terminated);
    assert_eq!(
        api_json(&socket, "GET", &format!("/remote/task/{sleeper}"), None).await,
        (200, terminated.clone())
    );
    // Terminating a finished command answers its result again.
    assert_eq!(
        api_json(&socket, "DELETE", &format!("/remote/task/{sleeper}"), None).await,
        (200, terminated)
    );

    let stubborn = remote_execute(
        &socket,
        r#"{"command": "trap '' TERM; echo ignoring; sleep 30"}"#,
    )
    .await;
    // Only once the shell has installed its trap is SIGTERM ignored.
    assert_eq!(first_line(&socket, stubborn).await, "ignoring");
    let asked = Instant::now();
    let (status, v) = api_json(&socket, "DELETE", &format!("/remote/task/{stubborn}"), None).await;
    assert_eq!(
        (status, v["exitCode"].as_i64(), v["terminated"].as_bool()),
        (200, Some(9), Some(true)),
        "{v}"
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "SIGKILL before the grace"
    );

    let quick = remote_execute(&socket, r#"{"command": "sleep 0.3; echo done"}"#).await;
    let (status, v) = api_json(
        &socket,
        "GET",
        &format!("/remote/task/{quick}?wait=20"),
        None,
    )
    .await;
    assert_eq!(
        (status, v),
        (
            200,
            json!({"exitCode": 0, "signaled": false, "stdout": "done\n", "stderr": ""})
        )
    );
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_output_streams_live_and_replays_finished_commands() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let pid =
        remote_execute(&socket, r#"{"command": "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.3; done; printf tail; exit 4"}"#)
            .await;

    let mut sender = api_connect(&socket).await.expect("connect");
    let request = hyper::Request::builder()
        .uri(format!("/remote/task/{pid}/output"))
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut body = response.into_body();
    let mut text = String::new();
    let mut first_line_at = None;
    while let Some(frame) = tokio::time::timeout(SOON, body.frame())
        .await
        .expect("frame in time")
    {
        if let Ok(data) = frame.expect("frame").into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
            if first_line_at.is_none() && text.contains("event: stdout") {
                first_line_at = Some(Instant::now());
            }
        }
    }
    let ended = Instant::now();
    let first = first_line_at.expect("a stdout event");
    assert!(
        ended.duration_since(first) >= Duration::from_millis(400),
        "lines were not streamed while the command ran"
    );
    let events = sse_events(&text);
    let lines = |kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|(e, _)| e == kind)
            .map(|(_, d)| d["line"].as_str().expect("line").to_owned())
            .collect()
    };
    assert_eq!(lines("stdout"), ["out1", "out2", "out3", "tail"]);
    assert_eq!(lines("stderr"), ["err1", "err2", "err3"]);
    let position = |kind: &str, line: &str| {
        events
            .iter()
            .position(|(e, d)| e == kind && d["line"] == line)
            .expect("event")
    };
    assert!(
        position("stderr", "err1") < position("stdout", "out2")
            && position("stderr", "err2") < position("stdout", "out3")
    );
    let exit = events.last().expect("events");
    assert_eq!(exit.0, "exit");
    let result = json!({"exitCode": 4, "signaled": false, "stdout": "out1\nout2\nout3\ntail", "stderr": "err1\nerr2\nerr3\n"});
    assert_eq!(exit.1, result);

    // A finished command replays the same events at once.
    let replay = api(&socket, "GET", &format!("/remote/task/{pid}/output"), None).await;
    assert_eq!(replay.status, 200);
    assert_eq!(sse_events(&replay.body), events);
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(
        &emu,
        &[
            ("HOOK_EXECUTOR_REMOTE_MAX_BODY", "1024"),
            ("HOOK_EXECUTOR_REMOTE_MAX_RUNNING", "2"),
            // No queue: the third execute is refused at once.
            ("HOOK_EXECUTOR_REMOTE_MAX_QUEUED", "0"),
        ],
    )
    .await;
    for body in [
        "{not json",
        r#"{"command": 5}"#,
        r#"{"command": "ls", "timeout": "10"}"#,
        r#"{"command": "ls", "arguments": "-la"}"#,
        r#"{"command": ""}"#,
        r"{}",
        r#"{"command": "no-such-program-anywhere", "shell": false}"#,
    ] {
        let (status, v) = api_json(&socket, "POST", "/remote/execute", Some(body)).await;
        assert_error(status, &v, 400);
    }
    assert!(
        exec.log().contains("refused (400)"),
        "refused executes are audited"
    );
    let (status, v) = api_json(&socket, "POST", "/remote/task", Some(r#"{"pid": "x"}"#)).await;
    assert_error(status, &v, 400);
    let (status, v) = api_json(&socket, "GET", "/remote/task/999999", None).await;
    assert_error(status, &v, 404);
    let (status, v) = api_json(&socket, "POST", "/remote/task", Some(r#"{"pid": 999999}"#)).await;
    assert_error(status, &v, 404);
    let (status, v) = api_json(&socket, "DELETE", "/remote/task/999999/output", None).await;
    assert_error(status, &v, 405);
    let (status, v) = api_json(&socket, "GET", "/remote/nothing", None).await;
    assert_error(status, &v, 404);
    let a = api(&socket, "PUT", "/remote/status", None).await;
    assert_error(a.status, &a.json(), 405);
    assert_eq!(
        a.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET")
    );
    let a = api(&socket, "GET", "/remote/execute", None).await;
    assert_error(a.status, &a.json(), 405);
    assert_eq!(
        a.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );

    let big = format!(r#"{{"command": "echo {}"}}"#, "x".repeat(2000));
    let (status, v) = api_json(&socket, "POST", "/remote/execute", Some(&big)).await;
    assert_error(status, &v, 413);

    let a = remote_execute(&socket, r#"{"command": "sleep 30"}"#).await;
    let b = remote_execute(&socket, r#"{"command": "sleep 30"}"#).await;
    let (status, v) = api_json(
        &socket,
        "POST",
        "/remote/execute",
        Some(r#"{"command": "true"}"#),
    )
    .await;
    assert_error(status, &v, 429);
    assert!(
        exec.log().contains("refused (429)"),
        "refused executes are audited too"
    );
    for pid in [a, b] {
        assert_eq!(
            api_json(&socket, "DELETE", &format!("/remote/task/{pid}"), None)
                .await
                .0,
            200
        );
    }
    // A slot is free again.
    let c = remote_execute(&socket, r#"{"command": "true"}"#).await;
    assert_eq!(remote_result(&socket, c).await["exitCode"], 0);
    stop_executor(&emu, &mut exec).await;
}

const NOBODY: u32 = 65534;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_0600_and_a_peer_outside_the_allow_list_gets_403() {
    if !nix::unistd::geteuid().is_root() {
        // Dropping to `nobody` needs root (as the suite runs in CI).
        report_skip(
            "remote::socket_is_0600_and_a_peer_outside_the_allow_list_gets_403",
            "needs root to run a peer as nobody",
        );
        return;
    }
    let emu = emulator(EmulatorOptions::default()).await;
    // Default allow-list (root and the executor's uid): mode 0600, so the
    // filesystem already refuses `nobody` (EACCES) before SO_PEERCRED.
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    assert_eq!(
        std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    std::fs::set_permissions(exec.sandbox.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let (code, _, err) = executorctl(
        &["--socket", socket.to_str().expect("utf8"), "status"],
        Some(NOBODY),
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    stop_executor(&emu, &mut exec).await;

    // An allow-list naming another uid opens the file (0666); SO_PEERCRED decides.
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) =
        executor_with_api(&emu, &[("HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS", "0,1000")]).await;
    assert_eq!(
        std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o666
    );
    std::fs::set_permissions(exec.sandbox.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let (code, out, err) = executorctl(
        &[
            "--socket",
            socket.to_str().expect("utf8"),
            "exec",
            "--",
            "touch",
            "pwned",
        ],
        Some(NOBODY),
    );
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        err.contains("403") && err.contains("uid 65534 is not allowed"),
        "{err}"
    );
    assert!(!exec.path("pwned").exists(), "a refused peer's command ran");
    let log = exec.log();
    assert!(
        log.contains("remote API connection refused") && log.contains("peer_uid=65534"),
        "no audit line for the refused peer:\n{log}"
    );
    assert!(
        !log.contains("pwned"),
        "a refused peer's request was logged:\n{log}"
    );
    // Root is on the list.
    assert_eq!(
        api_json(&socket, "GET", "/remote/status", None).await.0,
        200
    );
    stop_executor(&emu, &mut exec).await;
}

fn long_dir(root: &Path) -> PathBuf {
    let mut dir = root.join("slaves/a1b2c3d4-e5f6-7890-abcd-ef1234567890-S0/frameworks/a1b2c3d4-e5f6-7890-abcd-ef1234567890-0000");
    dir.push("executors/my-service.4b3b2e1a-0c5d-11ef-9a3c-0242ac110002/runs/6c6f6e67-2d70-6174-682d-73616e64626f78");
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_path_over_200_bytes_works() {
    let emu = emulator(EmulatorOptions::default()).await;
    let root = tempfile::Builder::new()
        .prefix("sandbox-")
        .tempdir()
        .expect("tempdir");
    let long = long_dir(root.path());
    let long_s = long.display().to_string();
    assert!(long.join("executor.sock").as_os_str().len() > 200);
    let mut exec = Executor::start_in(
        &emu,
        &[("MESOS_SANDBOX", &long_s), ("MESOS_DIRECTORY", &long_s)],
        root,
    );
    emu.launch(sleeping_task("t-remote"));
    wait_state(
        &emu,
        &exec,
        "t-remote",
        mesos_hook_executor::proto::v1::TaskState::TaskRunning,
    )
    .await;
    let socket = long.join("executor.sock");
    wait_api(&exec, &socket).await;
    let (status, v) = api_json(&socket, "GET", "/remote/status", None).await;
    assert_eq!(
        (status, v["sandbox_dir"].as_str()),
        (200, Some(long_s.as_str()))
    );
    let pid = remote_execute(&socket, r#"{"command": "pwd"}"#).await;
    assert_eq!(
        remote_result(&socket, pid).await["stdout"],
        format!("{long_s}\n")
    );
    let (code, out, err) = executorctl(&["--sandbox", &long_s, "status"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("task_state    TASK_RUNNING"), "{out}");
    let (code, out, err) = executorctl(&["--socket", socket.to_str().expect("utf8"), "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&pid.to_string()), "{out}");
    stop_executor(&emu, &mut exec).await;
    assert!(!socket.exists(), "the socket outlived the executor");
}

fn vm_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_executes_all_get_complete_results() {
    // Default limits: 32 run at once, the rest wait in the queue.
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[("HOOK_EXECUTOR_LOG_LEVEL", "info")]).await;
    let mut handles = Vec::new();
    for i in 0..200 {
        let socket = socket.clone();
        handles.push(tokio::spawn(async move {
            // Every 10th prints 60,000 bytes (under the default 64 KiB
            // capture), so some output is substantial.
            let body = if i % 10 == 0 {
                format!(
                    r#"{{"command": "head -c 60000 /dev/zero | tr '\\0' x; echo; echo n-{i}"}}"#
                )
            } else {
                format!(r#"{{"command": "echo", "arguments": ["n-{i}"], "shell": false}}"#)
            };
            let pid = remote_execute(&socket, &body).await;
            (i, remote_result(&socket, pid).await)
        }));
    }
    for h in handles {
        let (i, r) = h.await.expect("task");
        let out = r["stdout"].as_str().expect("stdout");
        if i % 10 == 0 {
            assert_eq!(
                out.len(),
                60000 + 1 + format!("n-{i}\n").len(),
                "incomplete output for {i}"
            );
            assert!(out.ends_with(&format!("\nn-{i}\n")));
        } else {
            assert_eq!(
                r,
                json!({"exitCode": 0, "signaled": false, "stdout": format!("n-{i}\n"), "stderr": ""})
            );
        }
    }
    let (_, list) = api_json(&socket, "GET", "/remote/task", None).await;
    assert_eq!(list["pids"].as_array().map(Vec::len), Some(200));
    let hwm = vm_kib(exec.pid, "VmHWM:");
    assert!(
        hwm < 64 * 1024,
        "executor peak RSS {hwm} KiB for 200 concurrent commands"
    );
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_is_truncated_and_flagged() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) =
        executor_with_api(&emu, &[("HOOK_EXECUTOR_REMOTE_MAX_OUTPUT", "1000")]).await;
    let pid = remote_execute(
        &socket,
        r#"{"command": "head -c 50000 /dev/zero | tr '\\0' a; echo err >&2"}"#,
    )
    .await;
    let r = remote_result(&socket, pid).await;
    assert_eq!(r["stdout"], "a".repeat(1000));
    assert_eq!(
        (
            r["stdoutTruncated"].as_bool(),
            r.get("stderrTruncated"),
            r["stderr"].as_str()
        ),
        (Some(true), None, Some("err\n")),
        "{r}"
    );
    assert_eq!(
        r["exitCode"], 0,
        "the command was not blocked by the cap: {r}"
    );
    stop_executor(&emu, &mut exec).await;
}

/// Reads a running command's output until it has a line, via `202` answers.
async fn first_line(socket: &Path, pid: i32) -> String {
    let start = Instant::now();
    loop {
        let (_, v) = api_json(socket, "GET", &format!("/remote/task/{pid}"), None).await;
        if let Some(line) = v["stdout"].as_str().and_then(|s| s.lines().next()) {
            return line.to_owned();
        }
        assert!(start.elapsed() < SOON, "no output from {pid}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_survives_the_executor_and_the_socket_is_removed() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) = executor_with_api(&emu, &[]).await;
    let plain = remote_execute(
        &socket,
        r#"{"command": "sleep", "arguments": ["600"], "shell": false}"#,
    )
    .await;
    let parent = remote_execute(&socket, r#"{"command": "sleep 600 & echo $!; wait"}"#).await;
    let stubborn = remote_execute(
        &socket,
        r#"{"command": "trap '' TERM; sleep 600 & echo $!; wait"}"#,
    )
    .await;
    let child: i32 = first_line(&socket, parent).await.parse().expect("pid");
    let stubborn_child: i32 = first_line(&socket, stubborn).await.parse().expect("pid");
    let pids = [plain, parent, child, stubborn, stubborn_child];
    for p in pids {
        assert!(alive(p), "{p} not running");
    }
    stop_executor(&emu, &mut exec).await;
    assert_gone(&pids).await;
    assert!(!socket.exists(), "the socket outlived the executor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_is_replaced_and_a_live_one_is_not_stolen() {
    let emu = emulator(EmulatorOptions::default()).await;
    let sandbox = tempfile::Builder::new()
        .prefix("sandbox-")
        .tempdir()
        .expect("tempdir");
    let socket = sandbox.path().join("executor.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists(), "a stale socket file stays behind");
    let mut exec = Executor::start_in(&emu, &[], sandbox);
    emu.launch(sleeping_task("t-remote"));
    wait_state(
        &emu,
        &exec,
        "t-remote",
        mesos_hook_executor::proto::v1::TaskState::TaskRunning,
    )
    .await;
    wait_api(&exec, &socket).await;
    assert_eq!(
        api_json(&socket, "GET", "/remote/status", None).await.0,
        200
    );
    assert!(
        exec.log().contains("replacing a stale socket file"),
        "{}",
        exec.log()
    );
    stop_executor(&emu, &mut exec).await;

    let emu = emulator(EmulatorOptions::default()).await;
    let sandbox = tempfile::Builder::new()
        .prefix("sandbox-")
        .tempdir()
        .expect("tempdir");
    let socket = sandbox.path().join("executor.sock");
    let live = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let mut exec = Executor::start_in(&emu, &[], sandbox);
    emu.launch(sleeping_task("t-remote"));
    wait_state(
        &emu,
        &exec,
        "t-remote",
        mesos_hook_executor::proto::v1::TaskState::TaskRunning,
    )
    .await;
    let start = Instant::now();
    while !exec.log().contains("in use by a live server") {
        assert!(start.elapsed() < SOON, "{}", exec.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still ours: a connection reaches our listener.
    let _client = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    live.set_nonblocking(true).expect("nonblocking");
    assert!(live.accept().is_ok(), "the live socket was taken over");
    stop_executor(&emu, &mut exec).await;
    assert!(
        socket.exists(),
        "the executor removed a socket that was not its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_requires_the_bearer_token() {
    // Port 0: the executor binds a free port and logs the address it got.
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, _socket) = executor_with_api(
        &emu,
        &[
            ("HOOK_EXECUTOR_REMOTE_TCP", "127.0.0.1:0"),
            ("HOOK_EXECUTOR_REMOTE_TOKEN", "tcp-s3cret"),
        ],
    )
    .await;
    let addr = tcp_address(&exec).await;
    let get = |token: Option<&'static str>| {
        let addr = addr.clone();
        async move {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(conn);
            let mut b = hyper::Request::builder()
                .uri("/remote/status")
                .header("host", "localhost");
            if let Some(t) = token {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            let response = sender
                .send_request(
                    b.body(http_body_util::Full::new(bytes::Bytes::new()))
                        .expect("request"),
                )
                .await
                .expect("response");
            (
                response.status().as_u16(),
                response.headers().get("www-authenticate").is_some(),
            )
        }
    };
    assert_eq!(get(None).await, (401, true));
    assert_eq!(get(Some("wrong")).await, (401, true));
    assert_eq!(get(Some("tcp-s3cret")).await, (200, false));
    // A refused client is answered and disconnected: it cannot sit on one of
    // the listener's connection slots with a kept-alive connection.
    let mut raw = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        b"GET /remote/status HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer),
    )
    .await
    .expect("the server closed the refused connection")
    .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // executorctl takes the token from the environment only.
    let ctl = |token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_executorctl"))
            .args(["--tcp", &addr, "status"])
            .env("HOOK_EXECUTOR_REMOTE_TOKEN", token)
            .output()
            .expect("run executorctl")
    };
    let ok = ctl("tcp-s3cret");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = ctl("wrong");
    assert_eq!(refused.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    assert!(!exec.log().contains("tcp-s3cret"), "the token was logged");
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_api_has_no_socket() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[("HOOK_EXECUTOR_REMOTE_ENABLED", "false")]);
    emu.launch(sleeping_task("t-remote"));
    wait_state(
        &emu,
        &exec,
        "t-remote",
        mesos_hook_executor::proto::v1::TaskState::TaskRunning,
    )
    .await;
    assert!(
        exec.log().contains("remote execution API disabled"),
        "{}",
        exec.log()
    );
    assert!(!exec.path("executor.sock").exists());
    stop_executor(&emu, &mut exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executorctl_end_to_end() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, socket) =
        executor_with_api(&emu, &[("HOOK_EXECUTOR_REMOTE_KILL_GRACE", "500ms")]).await;
    let sandbox = exec.sandbox.path().display().to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["--sandbox", sandbox.as_str()];
        all.extend_from_slice(args);
        executorctl(&all, None)
    };

    let (code, out, err) = ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("status        active") && out.contains("task_id       t-remote"),
        "{out}"
    );
    let (code, out, _) = ctl(&["--json", "status"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["result"].as_str(), v["task_state"].as_str()),
        (Some("ok"), Some("TASK_RUNNING"))
    );

    let (code, out, err) = ctl(&["exec", "--", "echo", "hello", "world"]);
    assert_eq!(code, 0, "{err}");
    let pid: i32 = out
        .trim()
        .strip_prefix("started pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let (code, out, err) = ctl(&["result", &pid.to_string(), "--wait", "10"]);
    assert_eq!((code, out.as_str()), (0, "hello world\n"), "{err}");
    assert_eq!(err, format!("[pid {pid}: exited with code 0]\n"));

    let (code, out, err) = ctl(&["exec", "--follow", "--", "echo out; echo err >&2; exit 7"]);
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));
    let (code, out, _) = ctl(&[
        "exec",
        "--no-shell",
        "--follow",
        "--",
        "echo",
        "$PATH",
        "-n",
    ]);
    assert_eq!((code, out.as_str()), (0, "$PATH -n\n"));
    let (code, _, err) = ctl(&["exec", "--timeout", "1", "--follow", "--", "sleep", "30"]);
    assert_eq!(code, 128 + 15, "{err}");
    assert!(err.contains("killed by signal 15, timed out"), "{err}");
    let (code, out, _) = ctl(&["--json", "exec", "--follow", "--", "echo", "j"]);
    assert_eq!(code, 0);
    let docs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(docs.last().map(|d| d["event"].clone()), Some(json!("exit")));

    let (code, out, _) = ctl(&["exec", "--", "sleep 30"]);
    assert_eq!(code, 0);
    let sleeper = out
        .trim()
        .strip_prefix("started pid ")
        .expect("pid")
        .to_owned();
    let (code, out, _) = ctl(&["list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.contains(&sleeper) && l.contains("running  sleep 30")),
        "{out}"
    );
    assert!(out.contains(&pid.to_string()), "{out}");
    let (code, out, _) = ctl(&["result", &sleeper]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("pid {sleeper} is running")),
        "{out}"
    );
    let (code, out, _) = ctl(&["kill", &sleeper]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("pid {sleeper}: killed by signal 15, terminated").as_str()
        )
    );
    let (code, out, _) = ctl(&["--json", "list"]);
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<Value>(&out).expect("json")["pids"]
        .as_array()
        .is_some_and(|p| p.len() >= 5));
    let (code, _, err) = ctl(&["result", "999999"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("404") && err.contains("no command with pid 999999"),
        "{err}"
    );

    // Missing and stale sockets get clear messages.
    let (code, _, err) = executorctl(&["--socket", "/nonexistent/executor.sock", "status"], None);
    assert_eq!(code, 3);
    assert!(
        err.contains("no executor socket at /nonexistent/executor.sock"),
        "{err}"
    );
    let dead = tempfile::tempdir().expect("tempdir");
    drop(std::os::unix::net::UnixListener::bind(dead.path().join("executor.sock")).expect("bind"));
    let (code, _, err) = executorctl(
        &["--sandbox", dead.path().to_str().expect("utf8"), "status"],
        None,
    );
    assert_eq!(code, 3);
    assert!(err.contains("stale"), "{err}");
    drop(socket);
    stop_executor(&emu, &mut exec).await;
}
