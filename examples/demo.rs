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

struct Printer {
    start: Instant,
    seen: usize,
}

impl Printer {
    fn say(&self, what: &str) {
        println!("[{:>7.3}s] {what}", self.start.elapsed().as_secs_f64());
    }

    /// Prints the calls the agent received since the last look.
    fn agent_view(&mut self, emu: &AgentEmulator) {
        let calls = emu.calls();
        for c in calls.iter().skip(self.seen) {
            let Some(call) = &c.call else { continue };
            match call.r#type() {
                call::Type::Subscribe => {
                    let s = call.subscribe.clone().unwrap_or_default();
                    self.say(&format!(
                        "agent  <- SUBSCRIBE (framework {}, executor {}, {} unacknowledged task(s), {} unacknowledged update(s)) -> {}",
                        call.framework_id.value,
                        call.executor_id.value,
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
                        self.say(&format!(
                            "agent  <- UPDATE {}{msg} -> {}",
                            u.status.state().as_str_name(),
                            c.status
                        ));
                    }
                }
                other => self.say(&format!(
                    "agent  <- {} -> {}",
                    other.as_str_name(),
                    c.status
                )),
            }
        }
        self.seen = calls.len();
    }
}

async fn watch_until(
    emu: &AgentEmulator,
    p: &mut Printer,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&AgentEmulator) -> bool,
) {
    let start = Instant::now();
    while !done(emu) {
        p.agent_view(emu);
        if start.elapsed() > timeout {
            p.say(&format!("!! timed out waiting for {what}"));
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.agent_view(emu);
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
    if Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("(python3 not found: serving with a shell loop instead of http.server)");
        app["cmd"] = serde_json::Value::from("while :; do sleep 1; done");
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
    // The fetcher also extracts the app's hooks.tar.gz into `hooks/`.
    copy_dir(&root.join("hooks"), &sandbox.path().join("hooks"))
        .expect("copy the example hooks into the sandbox");
    let mut p = Printer {
        start: Instant::now(),
        seen: 0,
    };
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

    let mut env: Vec<(String, String)> = emu.executor_env_in(sandbox.path());
    env.extend(launch.executor_env.clone());
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
    let start = p.start;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            println!(
                "[{:>7.3}s]   executor | {line}",
                start.elapsed().as_secs_f64()
            );
        }
    });
    p.say(&format!("agent started the executor (pid {})", child.id()));

    watch_until(&emu, &mut p, "SUBSCRIBE", Duration::from_secs(10), |e| {
        e.subscribed_count() >= 1
    })
    .await;
    p.say(&format!(
        "agent  -> LAUNCH {task_id} (no TaskInfo.command: Marathon's executor form)"
    ));
    emu.launch(launch.task.clone());
    watch_until(&emu, &mut p, "TASK_RUNNING", Duration::from_secs(10), |e| {
        e.states(&task_id).contains(&TaskState::TaskRunning)
    })
    .await;

    let probe_start = Instant::now();
    let answer = loop {
        if let Some(line) = http_get(port) {
            break Some(line);
        }
        if probe_start.elapsed() > Duration::from_secs(5) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    match answer {
        Some(line) => p.say(&format!(
            "the task serves http://127.0.0.1:{port}/ -> {line}"
        )),
        None => p.say("the task does not answer HTTP (no python3?)"),
    }

    // The remote-execution API: an operator runs commands next to the task.
    let ctl = release.join("executorctl");
    let sandbox_arg = sandbox.path().display().to_string();
    for args in [
        vec!["status"],
        vec![
            "exec",
            "--follow",
            "--",
            "echo \"next to $MESOS_TASK_ID in $(pwd)\"; ls",
        ],
    ] {
        p.say(&format!(
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
        match out {
            Ok(Ok(out)) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                for line in text.lines() {
                    p.say(&format!("  executorctl | {line}"));
                }
            }
            _ => p.say("  executorctl could not be run (build it: make demo)"),
        }
    }

    p.say(
        "agent restarts: stream closed, connections refused for 1s, then 1s re-registration window",
    );
    emu.restart(Duration::from_secs(1), Duration::from_secs(1))
        .await
        .expect("restart");
    watch_until(&emu, &mut p, "re-SUBSCRIBE", Duration::from_secs(15), |e| {
        e.subscribed_count() >= 2
    })
    .await;
    p.say(&format!(
        "task still serving after the agent restart: {}",
        http_get(port).unwrap_or_else(|| "no answer".into())
    ));

    p.say("agent  -> KILL (grace from taskKillGracePeriodSeconds = 10s)");
    emu.kill(&task_id, None);
    watch_until(&emu, &mut p, "TASK_KILLED", Duration::from_secs(20), |e| {
        e.states(&task_id).contains(&TaskState::TaskKilled)
    })
    .await;
    let waited = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if waited.elapsed() > Duration::from_secs(70) {
            p.say("!! executor did not exit");
            let _ = child.kill();
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    p.agent_view(&emu);
    p.say(&format!("executor exited with {status}"));
    let left = http_get(port);
    p.say(&format!(
        "port {port} after exit: {}",
        if left.is_some() {
            "STILL SERVING (bug)"
        } else {
            "closed: no process of the task survived"
        }
    ));
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
    if !status.success() || left.is_some() || !violations.is_empty() {
        std::process::exit(1);
    }
}
