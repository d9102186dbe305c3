//! The executor's own log formats (`HOOK_EXECUTOR_LOG_FORMAT`): every `json`
//! line carries the framework and executor ids, whichever part of the
//! executor wrote it; `compact` lines are short.

use std::os::unix::fs::PermissionsExt;

use mesos_hook_executor::{emulator::EmulatorOptions, proto::v1::TaskState};

use crate::helpers::*;

/// A hooks directory with one before-start and one after-start script.
fn hooks_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (event, body) in [
        (
            "before-start",
            "#!/bin/sh\necho GREETING=hello\necho 'before-start ran' >&2\n",
        ),
        ("after-start", "#!/bin/sh\necho 'after-start ran' >&2\n"),
    ] {
        let folder = dir.path().join(format!("{event}.d"));
        std::fs::create_dir(&folder).expect("event folder");
        let script = folder.join("10-script");
        std::fs::write(&script, body).expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// Subscription retries, hooks, a remote execute (the audit line), the kill
/// and the exit line: all with the ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_line_carries_the_framework_and_executor_ids() {
    let hooks = hooks_dir();
    let hooks_path = hooks.path().to_str().expect("utf8").to_owned();
    let emu = emulator(EmulatorOptions::default()).await;
    emu.set_starting(true);
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_LOG_FORMAT", "json"),
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &hooks_path),
        ],
    );
    emu.wait_for(SOON, |e| {
        (e.calls().iter().filter(|c| c.status == 404).count() >= 2).then_some(())
    })
    .await
    .expect("SUBSCRIBE retried while the agent starts");
    emu.set_starting(false);
    emu.launch(shell_task("t-ids", "echo $$ > task.pid; exec sleep 600"));
    wait_state(&emu, &exec, "t-ids", TaskState::TaskRunning).await;
    let task_pid = exec.read_pid("task.pid").await;
    let socket = exec.path("executor.sock");
    wait_api(&exec, &socket).await;
    let pid = remote_execute(&socket, r#"{"command": "true"}"#).await;
    remote_result(&socket, pid).await;
    poll(SOON, || {
        exec.log().contains("after-start ran").then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("after-start hook never logged:\n{}", exec.log()));
    emu.kill("t-ids", None);
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0), "{}", exec.log());
    assert_gone(&[task_pid, pid]).await;

    let log = exec.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for l in &lines {
        assert_eq!(
            (&l["span"]["framework_id"], &l["span"]["executor_id"]),
            (&"framework-1".into(), &"executor-1".into()),
            "a line without the ids: {l}"
        );
    }
    // The parts named in the issue are among them.
    let has = |what: &dyn Fn(&serde_json::Value) -> bool, name: &str| {
        assert!(lines.iter().any(what), "no {name} line in:\n{log}");
    };
    has(&|l| l["target"] == "mesos_hook_executor::audit", "audit");
    has(&|l| l["message"] == "exiting", "exit");
    has(&|l| l.to_string().contains("before-start ran"), "hook");
    has(
        &|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("SUBSCRIBE failed"))
        },
        "subscription retry",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_lines_are_short_and_human() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[("HOOK_EXECUTOR_LOG_FORMAT", "compact")]);
    emu.launch(shell_task("t-compact", "exit 0"));
    wait_state(&emu, &exec, "t-compact", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    let log = exec.log();
    assert!(log.lines().count() > 3, "{log}");
    for line in log.lines() {
        let (time, rest) = line.split_at(12);
        assert!(
            time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.',
            "{line}"
        );
        let level = rest.split_whitespace().next().unwrap_or_default();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
        assert!(!line.contains("executor{"), "no span: {line}");
    }
    let ended = log
        .lines()
        .find(|l| l.contains(" task ended ") && l.contains("task_id=t-compact"))
        .unwrap_or_else(|| panic!("no 'task ended' line:\n{log}"));
    assert!(!ended.contains("framework_id"), "no span fields: {ended}");
}
