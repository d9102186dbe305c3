//! `make demo`: the real executor binary against the local agent emulator,
//! running `marathon-test-app.json` end to end on one machine.
//!
//! It plays Marathon (translating the app definition the way Marathon does for
//! a custom executor), the Mesos fetcher (copying the binary into a sandbox)
//! and the agent (starting `sh -c '<executor command>'` in the sandbox with the
//! agent's environment, then driving LAUNCH, an agent restart and KILL), and
//! prints the lifecycle as the agent sees it, interleaved with the executor's
//! own log.

use std::{
    io::{BufRead, Read, Write},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mesos_hook_executor::{
    emulator::marathon,
    emulator::{AgentEmulator, EmulatorOptions},
    proto::{
        executor::call,
        v1::{framework_info::capability, TaskState},
    },
};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Hook files must be writable by their owner only (strict modes), even
    // from a checkout made under a group-writable umask.
    let owner_only = |path: &std::path::Path| -> std::io::Result<()> {
        let mode = std::fs::metadata(path)?.permissions().mode();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o022))
    };
    std::fs::create_dir_all(to)?;
    owner_only(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            owner_only(&target)?;
        }
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(31000)
}

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.lines().next().map(str::to_owned)
}

/// The demo's output: the agent's view (the calls the emulator received) and
/// the executor's log, in the order things happened. Before each executor
/// line, the calls the agent received so far are printed: whatever the
/// executor logs after an agent call (its ACK, say) comes after that call.
struct Printer {
    start: Instant,
    seen: usize,
    emu: AgentEmulator,
    /// Every executor log line so far, for the verdict.
    executor_log: Vec<String>,
}

type Shared = Arc<Mutex<Printer>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Printer> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Printer {
    fn say(&self, what: &str) {
        println!("[{:>7.3}s] {what}", self.start.elapsed().as_secs_f64());
    }

    /// Prints the calls the agent received since the last look.
    fn agent_view(&mut self) {
        let calls = self.emu.calls();
        for c in calls.iter().skip(self.seen) {
            let Some(call) = &c.call else { continue };
            match call.r#type() {
                call::Type::Subscribe => {
                    let s = call.subscribe.clone().unwrap_or_default();
                    self.say(&format!(
                        "agent    <- SUBSCRIBE ({} unacknowledged task(s), {} unacknowledged update(s)) -> {}",
                        s.unacknowledged_tasks.len(),
                        s.unacknowledged_updates.len(),
                        c.status
                    ));
                }
                call::Type::Update => {
                    if let Some(u) = &call.update {
                        let msg = u
                            .status
                            .message
                            .clone()
                            .map(|m| format!(" \"{m}\""))
                            .unwrap_or_default();
                        let health = match u.status.healthy {
                            Some(true) => " healthy",
                            Some(false) => " UNHEALTHY",
                            None => "",
                        };
                        self.say(&format!(
                            "agent    <- UPDATE {}{health}{msg} -> {}",
                            u.status.state().as_str_name(),
                            c.status
                        ));
                    }
                }
                other => self.say(&format!(
                    "agent    <- {} -> {}",
                    other.as_str_name(),
                    c.status
                )),
            }
        }
        self.seen = calls.len();
    }
}

/// Waits until `done` holds, printing the agent's view meanwhile; `false`
/// when `timeout` passed first (said on the output).
async fn watch_until(
    p: &Shared,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&Printer) -> bool,
) -> bool {
    let start = Instant::now();
    loop {
        {
            let mut p = lock(p);
            p.agent_view();
            if done(&p) {
                return true;
            }
            if start.elapsed() > timeout {
                p.say(&format!("!! gave up waiting for {what} after {timeout:?}"));
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `line` starts like a compact log line (`HH:MM:SS.mmm `).
fn is_compact_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 13
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && b[12] == b' '
        && [0, 1, 3, 4, 6, 7, 9, 10, 11]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

/// The demo's checks of what happened, each with its outcome.
#[derive(Default)]
struct Verdict {
    checks: Vec<(&'static str, bool)>,
}

impl Verdict {
    fn check(&mut self, what: &'static str, ok: bool) -> bool {
        self.checks.push((what, ok));
        ok
    }

    /// The last line: success, or the checks that failed.
    fn line(&self) -> (bool, String) {
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(what, _)| *what)
            .collect();
        if failed.is_empty() {
            (
                true,
                format!(
                    "demo succeeded: all {} checks passed (subscribe, launch, health, hooks, executorctl, agent restart, kill, clean exit)",
                    self.checks.len()
                ),
            )
        } else {
            (
                false,
                format!(
                    "demo FAILED: {} of {} checks failed: {}",
                    failed.len(),
                    self.checks.len(),
                    failed.join("; ")
                ),
            )
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let app: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("marathon-test-app.json"))
            .expect("marathon-test-app.json"),
    )
    .expect("valid app JSON");
    let mut release = std::env::current_exe().expect("exe");
    release.pop();
    release.pop();
    let binary = release.join("mesos-hook-executor");

    let port = free_port();
    let task_id = format!("mesos-hook-executor_test-app.{}", uuid::Uuid::new_v4());
    let mut app = app;
    let python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !python {
        println!(
            "(python3 not found: the task serves HTTP with the repository's task-helper instead)"
        );
        app["cmd"] = serde_json::Value::from(
            "echo 200 > http-status && exec ./task-helper http-server $PORT0 http-status",
        );
    }
    let launch = marathon::translate(&app, &task_id, "agent-1", "marathon-framework", &[port])
        .expect("translate");

    let emu = AgentEmulator::start(EmulatorOptions {
        framework_id: "marathon-framework".into(),
        executor_id: launch.executor_info.executor_id.value.clone(),
        agent_id: "agent-1".into(),
        checkpoint: true,
        recovery_timeout: "15mins".into(),
        backoff_max: "2secs".into(),
        shutdown_grace: "12secs".into(),
        capabilities: vec![capability::Type::TaskKillingState],
        executor_info: Some(launch.executor_info.clone()),
        ..Default::default()
    })
    .await
    .expect("emulator");

    let sandbox = tempfile::Builder::new()
        .prefix("demo-sandbox-")
        .tempdir()
        .expect("sandbox");
    std::fs::copy(&binary, sandbox.path().join("mesos-hook-executor"))
        .expect("copy the executor into the sandbox (the fetcher's job)");
    if !python {
        std::fs::copy(
            release.join("examples").join("task-helper"),
            sandbox.path().join("task-helper"),
        )
        .expect("copy task-helper into the sandbox");
    }
    // The fetcher also extracts the app's hooks.tar.gz into `hooks/`.
    copy_dir(&root.join("hooks"), &sandbox.path().join("hooks"))
        .expect("copy the example hooks into the sandbox");
    let p: Shared = Arc::new(Mutex::new(Printer {
        start: Instant::now(),
        seen: 0,
        emu: emu.clone(),
        executor_log: Vec::new(),
    }));
    let mut verdict = Verdict::default();
    println!("== mesos-hook-executor demo ==");
    println!(
        "agent emulator on {} (checkpointing on, framework has TASK_KILLING_STATE)",
        emu.addr()
    );
    println!("sandbox {}", sandbox.path().display());
    let command_line = launch
        .executor_info
        .command
        .as_ref()
        .and_then(|c| c.value.clone())
        .unwrap_or_default();
    println!("executor command (as Marathon builds it): {command_line}");
    println!("lines: \"agent <-\" what the agent received, \"executor |\" the executor's log (compact format), \"operator\" executorctl");

    let mut env: Vec<(String, String)> = emu.executor_env_in(sandbox.path());
    env.extend(launch.executor_env.clone());
    // The demo reads the executor's log on a terminal: the compact format.
    env.push(("HOOK_EXECUTOR_LOG_FORMAT".into(), "compact".into()));
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&command_line)
        .env_clear()
        .envs(env)
        .current_dir(sandbox.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the executor");
    let stderr = child.stderr.take().expect("stderr");
    let reader = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut p = lock(&p);
                // The agent's side first: what it received before this line.
                p.agent_view();
                // The task inherits the executor's stderr (the sandbox file):
                // its lines lack the compact format's time stamp.
                let who = if is_compact_log_line(&line) {
                    "executor"
                } else {
                    "task    "
                };
                p.say(&format!("{who} | {line}"));
                p.executor_log.push(line);
            }
        })
    };
    lock(&p).say(&format!("agent started the executor (pid {})", child.id()));

    let subscribed = watch_until(&p, "SUBSCRIBE", Duration::from_secs(10), |_| {
        emu.subscribed_count() >= 1
    })
    .await;
    if verdict.check("the executor subscribed", subscribed) {
        lock(&p).say(&format!(
            "agent    -> LAUNCH {task_id} (no TaskInfo.command: Marathon's executor form)"
        ));
        emu.launch(launch.task.clone());
    }
    let running = watch_until(&p, "TASK_RUNNING", Duration::from_secs(10), |_| {
        emu.states(&task_id).contains(&TaskState::TaskRunning)
    })
    .await;
    verdict.check("TASK_RUNNING", running);

    let probe_start = Instant::now();
    let answer = loop {
        if let Some(line) = http_get(port) {
            break Some(line);
        }
        if probe_start.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    lock(&p).say(&match &answer {
        Some(line) => format!("the task serves http://127.0.0.1:{port}/ -> {line}"),
        None => "the task does not answer HTTP".to_owned(),
    });
    verdict.check("the task serves HTTP", answer.is_some());

    // The app's MESOS_HTTP check: first probe delaySeconds after TASK_RUNNING.
    lock(&p).say(
        "waiting for the health check's first probe (delaySeconds: 2) and the after-healthy hook",
    );
    let healthy = watch_until(
        &p,
        "the first healthy update",
        Duration::from_secs(30),
        |_| {
            emu.updates()
                .iter()
                .any(|u| u.task_id.value == task_id && u.healthy == Some(true))
        },
    )
    .await;
    verdict.check("a healthy health-check update", healthy);
    let after_healthy = watch_until(&p, "the after-healthy hook", Duration::from_secs(15), |p| {
        p.executor_log
            .iter()
            .any(|l| l.contains("hook script succeeded") && l.contains("event=after-healthy"))
    })
    .await;
    verdict.check("the after-healthy hook ran", after_healthy);

    // The remote-execution API: an operator runs commands next to the task.
    let ctl = release.join("executorctl");
    let sandbox_arg = sandbox.path().display().to_string();
    for (check, args) in [
        ("executorctl status", vec!["status"]),
        (
            "executorctl exec --follow",
            vec![
                "exec",
                "--follow",
                "--",
                "echo \"next to $MESOS_TASK_ID in $(pwd)\"; ls",
            ],
        ),
    ] {
        lock(&p).say(&format!(
            "operator -> executorctl --sandbox $SANDBOX {}",
            args.join(" ")
        ));
        let (ctl, sandbox_arg) = (ctl.clone(), sandbox_arg.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(ctl)
                .arg("--sandbox")
                .arg(sandbox_arg)
                .args(args)
                .output()
        })
        .await;
        let ok = match out {
            Ok(Ok(out)) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let p = lock(&p);
                for line in text.lines() {
                    p.say(&format!("operator | {line}"));
                }
                out.status.success()
            }
            _ => {
                lock(&p).say("operator | executorctl could not be run (build it: make demo)");
                false
            }
        };
        verdict.check(check, ok);
    }

    lock(&p).say(
        "agent restarts: stream closed, connections refused for 1s, then 1s re-registration window",
    );
    emu.restart(Duration::from_secs(1), Duration::from_secs(1))
        .await
        .expect("restart");
    let resubscribed = watch_until(&p, "re-SUBSCRIBE", Duration::from_secs(15), |_| {
        emu.subscribed_count() >= 2
    })
    .await;
    verdict.check("re-subscribed after the agent restart", resubscribed);
    let serving = http_get(port);
    lock(&p).say(&format!(
        "task still serving after the agent restart: {}",
        serving.as_deref().unwrap_or("no answer")
    ));
    verdict.check("the task survived the agent restart", serving.is_some());

    lock(&p).say("agent    -> KILL (grace from taskKillGracePeriodSeconds = 10s)");
    emu.kill(&task_id, None);
    let killed = watch_until(&p, "TASK_KILLED", Duration::from_secs(20), |_| {
        emu.states(&task_id).contains(&TaskState::TaskKilled)
    })
    .await;
    verdict.check("TASK_KILLED", killed);
    let waited = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if waited.elapsed() > Duration::from_secs(70) {
            lock(&p).say("!! the executor did not exit; killing it");
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Every line the executor wrote, then whatever the agent received last.
    let _ = reader.join();
    let mut p = lock(&p);
    p.agent_view();
    verdict.check(
        "the executor exited with 0",
        status.is_some_and(|s| s.success()),
    );
    p.say(&match status {
        Some(s) => format!("executor exited with {s}"),
        None => "executor killed".to_owned(),
    });
    let left = http_get(port);
    p.say(&format!(
        "port {port} after exit: {}",
        if left.is_some() {
            "STILL SERVING (a task process survived)"
        } else {
            "closed: no process of the task survived"
        }
    ));
    verdict.check("no task process survived", left.is_none());
    println!(
        "states seen by the agent: {:?}",
        emu.states(&task_id)
            .iter()
            .map(|s| s.as_str_name())
            .collect::<Vec<_>>()
    );
    let violations = emu.violations();
    println!(
        "protocol violations seen by the agent emulator: {}",
        if violations.is_empty() {
            "none".to_owned()
        } else {
            format!("{violations:?}")
        }
    );
    verdict.check("no protocol violations", violations.is_empty());
    let (ok, line) = verdict.line();
    println!("{line}");
    if !ok {
        std::process::exit(1);
    }
}
