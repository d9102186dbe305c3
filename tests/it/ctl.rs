//! `executorctl` for operators: precise errors (text and `--json`), host-wide
//! discovery over an agent work-directory layout holding real running
//! executors (`ls`, `--task`), and the completions and man page generated
//! from its clap definition, checked by the real shells and `man`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use mesos_hook_executor::{emulator::EmulatorOptions, proto::v1::TaskState};
use serde_json::Value;

use crate::helpers::*;

/// The single JSON error document on stdout, with nothing on stderr.
fn json_error(out: &str, err: &str) -> Value {
    assert_eq!(err, "", "--json errors go to stdout only");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: Value = serde_json::from_str(lines[0]).expect("JSON error");
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"].clone()
}

#[test]
fn errors_name_the_situation_in_text_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8");

    // A regular file is not called a stale socket.
    let file = dir.path().join("executor.sock");
    std::fs::write(&file, "").expect("file");
    let (code, _, err) = executorctl(&["--sandbox", d, "status"], None);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "{} is a regular file, not a socket",
            file.display()
        )) && !err.contains("stale"),
        "{err}"
    );
    let (code, out, err) = executorctl(&["--json", "--sandbox", d, "status"], None);
    assert_eq!(code, 3);
    assert_eq!(json_error(&out, &err)["kind"], "not_a_socket");

    // A stale socket is.
    std::fs::remove_file(&file).expect("rm");
    drop(std::os::unix::net::UnixListener::bind(&file).expect("bind"));
    let (code, _, err) = executorctl(&["--sandbox", d, "status"], None);
    assert_eq!(code, 3);
    assert!(err.contains("is stale"), "{err}");
    let (_, out, err) = executorctl(&["--json", "--sandbox", d, "list"], None);
    assert_eq!(json_error(&out, &err)["kind"], "stale_socket");

    // A missing socket named relatively is reported by its absolute path,
    // with a hint of --sandbox and --task.
    let empty = tempfile::tempdir().expect("tempdir");
    let dir = &empty;
    let (code, _, err) = ctl_in(dir.path(), &["--socket", "gone.sock", "status"]);
    assert_eq!(code, 3);
    assert!(
        err.contains(&format!(
            "no executor socket at {}",
            dir.path().join("gone.sock").display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: ") && err.contains("--sandbox") && err.contains("--task"));
    let (code, out, err) = ctl_in(dir.path(), &["--json", "status"]);
    assert_eq!(code, 3);
    let e = json_error(&out, &err);
    assert_eq!(e["kind"], "no_socket");
    assert_eq!(
        e["message"],
        format!(
            "no executor socket at {}",
            dir.path().join("executor.sock").display()
        )
    );
    assert!(e["hint"].as_str().is_some_and(|h| h.contains("--sandbox")));
    assert_eq!(e["exit_code"], 3);

    // TCP: refused says TCP and names the address, never "stale".
    let closed = reserve_port();
    let addr = format!("127.0.0.1:{}", closed.port);
    let (code, _, err) = executorctl(&["--tcp", &addr, "status"], None);
    assert_eq!(code, 3);
    assert!(
        err.contains(&format!("connection refused by TCP {addr}")) && !err.contains("stale"),
        "{err}"
    );
    assert!(err.contains("HOOK_EXECUTOR_REMOTE_TCP"), "{err}");
    let (_, out, err) = executorctl(&["--json", "--tcp", &addr, "status"], None);
    assert_eq!(json_error(&out, &err)["kind"], "tcp_refused");

    // Usage errors are JSON too under --json (exit 2), and plain otherwise.
    let (code, out, err) = executorctl(&["--json", "--nonsense", "status"], None);
    assert_eq!(code, 2);
    assert_eq!(json_error(&out, &err)["kind"], "usage");
    let (code, _, err) = executorctl(&["--socket", "a", "--task", "b", "status"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");

    // No agent work directory.
    let (code, out, err) = executorctl(
        &["--json", "--work-dir", &format!("{d}/nowhere"), "ls"],
        None,
    );
    assert_eq!(code, 5);
    assert_eq!(json_error(&out, &err)["kind"], "work_dir");
}

/// `executorctl` run in `dir` (for relative paths).
fn ctl_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_executorctl"))
        .args(args)
        .current_dir(dir)
        .env_remove("HOOK_EXECUTOR_REMOTE_SOCKET")
        .env_remove("MESOS_SANDBOX")
        .output()
        .expect("run executorctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_errors_tell_a_missing_token_from_a_wrong_one() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (mut exec, _socket) = executor_with_api(
        &emu,
        &[
            ("HOOK_EXECUTOR_REMOTE_TCP", "127.0.0.1:0"),
            ("HOOK_EXECUTOR_REMOTE_TOKEN", "tok-3"),
        ],
    )
    .await;
    let addr = tcp_address(&exec).await;
    let ctl = |token: Option<&str>, json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_executorctl"));
        if json {
            cmd.arg("--json");
        }
        cmd.args(["--tcp", &addr, "status"]);
        match token {
            Some(t) => cmd.env("HOOK_EXECUTOR_REMOTE_TOKEN", t),
            None => cmd.env_remove("HOOK_EXECUTOR_REMOTE_TOKEN"),
        };
        let out = cmd.output().expect("run executorctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = ctl(None, false);
    assert_eq!(code, Some(4));
    assert!(
        err.contains(&format!(
            "TCP {addr} refused the request (401): no token given"
        )) && err.contains("set HOOK_EXECUTOR_REMOTE_TOKEN"),
        "{err}"
    );
    let (code, _, err) = ctl(Some("nope"), false);
    assert_eq!(code, Some(4));
    assert!(err.contains("wrong token"), "{err}");
    let (code, out, err) = ctl(Some("nope"), true);
    assert_eq!(code, Some(4));
    assert_eq!(json_error(&out, &err)["kind"], "unauthorized");
    let (code, out, _) = ctl(Some("tok-3"), true);
    assert_eq!(code, Some(0));
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    let task_pid = status["task_pid"].as_i64().expect("task pid");
    stop_executor(&emu, &mut exec).await;
    assert_gone(&[i32::try_from(task_pid).expect("pid")]).await;
}

/// One task of the discovery layout: its emulator, executor and run dir.
struct Placed {
    emu: mesos_hook_executor::emulator::AgentEmulator,
    exec: Executor,
    task: &'static str,
    run: PathBuf,
}

/// Starts a real executor whose sandbox is a run directory of the agent
/// layout under `work`, with `runs/latest` pointing at it, as the agent does.
async fn place(work: &Path, framework: &str, task: &'static str, app: &str) -> Placed {
    let runs = work
        .join("slaves/S0/frameworks")
        .join(framework)
        .join("executors")
        .join(task)
        .join("runs");
    std::fs::create_dir_all(&runs).expect("mkdir runs");
    let sandbox = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&runs)
        .expect("run dir");
    std::os::unix::fs::symlink(
        sandbox.path().file_name().expect("name"),
        runs.join("latest"),
    )
    .expect("latest symlink");
    let run = sandbox.path().to_owned();
    let emu = emulator(EmulatorOptions::default()).await;
    let exec = Executor::start_in(&emu, &[("MARATHON_APP_ID", app)], sandbox);
    emu.launch(sleeping_task(task));
    wait_state(&emu, &exec, task, TaskState::TaskRunning).await;
    wait_api(&exec, &run.join("executor.sock")).await;
    Placed {
        emu,
        exec,
        task,
        run,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_and_task_find_real_executors_in_the_agent_work_dir() {
    let work = tempfile::tempdir().expect("work dir");
    let w = work.path().to_str().expect("utf8");
    let mut placed = vec![
        place(work.path(), "F1", "shop_web.a1", "/shop/web").await,
        place(work.path(), "F2", "shop_worker.b2", "/shop/worker").await,
    ];
    // A third executor that has gone, leaving its socket behind.
    let gone = work
        .path()
        .join("slaves/S0/frameworks/F1/executors/old/runs/r1");
    std::fs::create_dir_all(&gone).expect("mkdir");
    drop(std::os::unix::net::UnixListener::bind(gone.join("executor.sock")).expect("bind"));
    std::os::unix::fs::symlink("r1", gone.parent().expect("runs").join("latest")).expect("symlink");

    let ctl = |args: &[&str]| {
        let mut all = vec!["--work-dir", w];
        all.extend_from_slice(args);
        executorctl(&all, None)
    };

    let (code, out, err) = ctl(&["ls"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("TASK") && lines[0].contains("SOCKET"),
        "{out}"
    );
    for p in &placed {
        let socket = std::fs::canonicalize(&p.run)
            .expect("canonical")
            .join("executor.sock");
        assert!(
            lines.iter().any(|l| l.starts_with(p.task)
                && l.contains("TASK_RUNNING")
                && l.ends_with(&socket.display().to_string())),
            "{out}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stale socket") && l.contains("/old/runs/r1/executor.sock")),
        "{out}"
    );
    assert!(
        out.contains("/shop/web") && out.contains("/shop/worker"),
        "{out}"
    );

    let (code, out, _) = ctl(&["--json", "ls"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("ls JSON");
    let rows = v["executors"].as_array().expect("executors");
    assert_eq!(rows.len(), 3, "{v}");
    let row = |task: &str| {
        rows.iter()
            .find(|r| r["task_id"] == task)
            .unwrap_or_else(|| panic!("{task} in {v}"))
    };
    assert_eq!(row("shop_web.a1")["marathon_app_id"], "/shop/web");
    assert_eq!(row("shop_web.a1")["executor_id"], "shop_web.a1");
    assert_eq!(row("shop_worker.b2")["task_state"], "TASK_RUNNING");
    assert_eq!(row("shop_worker.b2")["executor"], "running");
    assert!(rows
        .iter()
        .any(|r| r["executor"] == "stale" && r["task_id"].is_null()));

    // A unique prefix of a task id, or of an app id, picks the executor.
    let (code, out, err) = ctl(&["--json", "--task", "shop_we", "status"]);
    assert_eq!(code, 0, "{err}");
    let s: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(s["task_id"], "shop_web.a1");
    let (code, out, err) = ctl(&[
        "--task",
        "/shop/wo",
        "exec",
        "--follow",
        "--",
        "echo",
        "$MESOS_SANDBOX",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), placed[1].run.display().to_string());
    let (code, out, err) = ctl(&["--task", "shop_web.a1", "logs", "--stderr"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.is_empty() && placed[0].exec.log().contains(&out),
        "{out}"
    );

    // An ambiguous prefix is refused with both candidates listed.
    let (code, _, err) = ctl(&["--task", "shop", "status"]);
    assert_eq!(code, 5);
    assert!(
        err.contains("\"shop\" matches 2 tasks")
            && err.contains("shop_web.a1 (/shop/web)")
            && err.contains("shop_worker.b2 (/shop/worker)"),
        "{err}"
    );
    let (code, out, err) = ctl(&["--json", "--task", "/shop", "exec", "--", "true"]);
    assert_eq!(code, 5);
    let e = json_error(&out, &err);
    assert_eq!(e["kind"], "ambiguous_task");
    assert_eq!(
        e["candidates"],
        serde_json::json!(["shop_web.a1 (/shop/web)", "shop_worker.b2 (/shop/worker)"])
    );
    let (code, _, err) = ctl(&["--task", "db", "status"]);
    assert_eq!(code, 5);
    assert!(
        err.contains("no running task on this host matches \"db\""),
        "{err}"
    );

    let mut pids = Vec::new();
    for p in &mut placed {
        let (_, out, _) = executorctl(
            &[
                "--json",
                "--sandbox",
                p.run.to_str().expect("utf8"),
                "status",
            ],
            None,
        );
        let s: Value = serde_json::from_str(&out).expect("status");
        pids.push(i32::try_from(s["task_pid"].as_i64().expect("pid")).expect("pid"));
        p.emu.kill(p.task, None);
        let status = p.exec.wait_exit(SOON).await;
        assert_eq!(status.code(), Some(0), "{}", p.exec.log());
    }
    assert_gone(&pids).await;
}

const SUBCOMMANDS: [&str; 8] = [
    "status",
    "exec",
    "result",
    "list",
    "kill",
    "logs",
    "ls",
    "completions",
];

#[test]
fn completions_for_three_shells_pass_their_syntax_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (shell, check) in [
        ("bash", &["bash", "-n"][..]),
        ("zsh", &["zsh", "-n"]),
        ("fish", &["fish", "--no-execute"]),
    ] {
        let (code, script, err) = executorctl(&["completions", shell], None);
        assert_eq!(code, 0, "{err}");
        assert!(script.len() > 1000, "{shell}: {script}");
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(
            script.contains("--work-dir") && script.contains("--task"),
            "{shell}"
        );
        let path = dir.path().join(format!("executorctl.{shell}"));
        std::fs::write(&path, &script).expect("write");
        let out = Command::new(check[0])
            .args(&check[1..])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("{} (scripts/test-tools.txt): {e}", check[0]));
        assert!(
            out.status.success(),
            "{shell} rejects its completion: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn man_page_renders_with_man() {
    let (code, roff, err) = executorctl(&["man"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH executorctl 1"),
        "{roff}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("executorctl.1");
    std::fs::write(&page, &roff).expect("write");
    let out = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(&page)
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man (scripts/test-tools.txt)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS"] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    for sub in SUBCOMMANDS {
        assert!(
            text.contains(&format!("executorctl-{sub}")),
            "{sub} missing:\n{text}"
        );
    }
    assert!(text.contains("--work-dir"), "{text}");

    // `man --dir` writes a page per subcommand; each renders.
    let pages = dir.path().join("man1");
    std::fs::create_dir(&pages).expect("mkdir");
    let (code, _, err) = executorctl(&["man", "--dir", pages.to_str().expect("utf8")], None);
    assert_eq!(code, 0, "{err}");
    for sub in SUBCOMMANDS {
        let page = pages.join(format!("executorctl-{sub}.1"));
        let out = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(&page)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("man");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("SYNOPSIS"),
            "{}: {text}",
            page.display()
        );
    }
}
