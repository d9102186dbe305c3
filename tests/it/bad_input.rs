//! Bad input never panics or hangs: it gets a clear log line and a defined
//! behaviour.

use std::time::Duration;

use mesos_hook_executor::{
    emulator::EmulatorOptions,
    proto::{executor::Event, v1::TaskState},
};
use prost::Message;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_invalid_variables_are_all_named_before_any_network_call() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mesos-hook-executor"))
        .env_clear()
        .env("MESOS_CHECKPOINT", "yes")
        .env("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5")
        .env("HOOK_EXECUTOR_ACK_TIMEOUT", "soon")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    for name in [
        "MESOS_FRAMEWORK_ID",
        "MESOS_EXECUTOR_ID",
        "MESOS_SLAVE_PID",
        "MESOS_CHECKPOINT",
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
        "HOOK_EXECUTOR_ACK_TIMEOUT",
    ] {
        assert!(err.contains(name), "{name} not named in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_version_and_ignored_mesos_executor_flags() {
    let bin = env!("CARGO_BIN_EXE_mesos-hook-executor");
    // --help anywhere on a typed command line: the short usage.
    let help = std::process::Command::new(bin)
        .args(["some", "words", "--help"])
        .env_remove("MESOS_EXECUTOR_ID")
        .output()
        .expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.starts_with("mesos-hook-executor: "), "{text}");
    for needed in ["Usage:", "Marathon", "--help-env", "docs/configuration.md"] {
        assert!(text.contains(needed), "--help lacks {needed}:\n{text}");
    }
    assert!(text.lines().count() < 30, "--help is short:\n{text}");
    let help_env = std::process::Command::new(bin)
        .arg("--help-env")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&help_env.stdout);
    for v in mesos_hook_executor::config::VARIABLES {
        assert!(text.contains(v.name), "--help-env lacks {}", v.name);
    }
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("mesos-hook-executor 0."));
    // Started like the built-in mesos-executor: flags are ignored.
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    drop(exec.child.take().map(|mut c| {
        let _ = c.kill();
        c.wait()
    }));
    let env = emu.executor_env_in(exec.sandbox.path());
    let mut child = std::process::Command::new(bin)
        .env_clear()
        .envs(env)
        .args([
            "--launcher_dir=/usr/libexec/mesos",
            "--sandbox_directory=/mnt/mesos/sandbox",
        ])
        .stderr(std::fs::File::create(exec.path("stderr")).expect("file"))
        .spawn()
        .expect("spawn");
    emu.wait_subscribed(1, SOON)
        .await
        .expect("subscribed despite the flags");
    emu.shutdown();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < SOON);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(exec.log().contains("ignoring command-line arguments"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_unreachable_at_start_gives_up_after_the_registration_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let sandbox = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mesos-hook-executor"))
        .env_clear()
        .env("MESOS_FRAMEWORK_ID", "f")
        .env("MESOS_EXECUTOR_ID", "e")
        .env("MESOS_SLAVE_PID", format!("slave(1)@127.0.0.1:{port}"))
        .env("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs")
        .env("MESOS_SANDBOX", sandbox.path())
        .env("HOOK_EXECUTOR_REGISTRATION_TIMEOUT", "1secs")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(3));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("SUBSCRIBE failed") && err.contains("connecting to the agent"),
        "{err}"
    );
    assert!(
        err.contains("could not subscribe to the agent in time"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_protobuf_and_unknown_events_are_skipped() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_subscribed(1, SOON).await.expect("subscribed");
    // A well-framed record that is not an Event, an unknown event type, a
    // heartbeat, a message and an empty record.
    emu.send_raw(b"5\n\xff\xff\xff\xff\xff");
    emu.send_raw(&mesos_hook_executor::agent::recordio::frame(
        &Event {
            r#type: Some(99),
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    emu.heartbeat();
    emu.message(b"hello executor");
    emu.send_raw(b"0\n");
    emu.launch(shell_task("t-after-garbage", "exit 0"));
    wait_state(&emu, &exec, "t-after-garbage", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    let log = exec.log();
    assert!(log.contains("not a valid Event"), "{log}");
    assert!(log.contains("ignoring an event of unknown type"), "{log}");
    assert!(log.contains("framework message received"), "{log}");
    assert_eq!(
        emu.subscriptions().len(),
        1,
        "skipping a bad record did not cost the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_length_breaks_the_stream_and_resubscribes_with_checkpointing() {
    let emu = emulator(EmulatorOptions {
        checkpoint: true,
        recovery_timeout: "1mins".into(),
        backoff_max: "1secs".into(),
        ..Default::default()
    })
    .await;
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_subscribed(1, SOON).await.expect("subscribed");
    emu.send_raw(b"12x\nnot a length");
    emu.wait_subscribed(2, SOON)
        .await
        .expect("resubscribed after a framing error");
    assert!(
        exec.log().contains("invalid recordio length header"),
        "{}",
        exec.log()
    );
    emu.shutdown();
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_is_refused_without_reading_it() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[("HOOK_EXECUTOR_MAX_RECORD_SIZE", "4096")]);
    emu.launch(argv_task(
        "t-big",
        task_helper().to_str().expect("utf8"),
        &["task-helper", "term-exit", "task.pid"],
    ));
    wait_state(&emu, &exec, "t-big", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    emu.send_raw(b"99999999\n");
    // Without checkpointing, a broken stream means shutting down, task included.
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(3));
    assert!(
        exec.log().contains("exceeds the 4096-byte limit"),
        "{}",
        exec.log()
    );
    assert_gone(&[pid]).await;
}
