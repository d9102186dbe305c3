//! Production hardening with the real binary: the executor survives a log it
//! cannot write, keeps its secrets from same-uid processes, and leaves no
//! hook or check process behind when it is SIGKILLed.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
};

use mesos_hook_executor::{emulator::EmulatorOptions, proto::v1::TaskState};

use crate::helpers::*;

/// Starts the executor binary like [`Executor::start`], but with the given
/// stdout and stderr.
fn start_with_output(
    emu: &mesos_hook_executor::emulator::AgentEmulator,
    extra: &[(&str, &str)],
    stdout: Stdio,
    stderr: Stdio,
) -> Executor {
    let sandbox = tempfile::Builder::new()
        .prefix("sandbox-")
        .tempdir()
        .expect("tempdir");
    let mut env: BTreeMap<String, String> =
        emu.executor_env_in(sandbox.path()).into_iter().collect();
    env.insert("HOOK_EXECUTOR_LOG_LEVEL".into(), "debug".into());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let child = Command::new(env!("CARGO_BIN_EXE_mesos-hook-executor"))
        .env_clear()
        .envs(&env)
        .current_dir(sandbox.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn executor");
    let pid = i32::try_from(child.id()).expect("pid");
    Executor {
        child: Some(child),
        sandbox,
        pid,
    }
}

/// Runs a task, kills it, and checks the whole end: TASK_KILLED, a clean
/// exit of its own, no task process left, the socket file removed.
async fn kill_and_check_the_end(
    emu: &mesos_hook_executor::emulator::AgentEmulator,
    mut exec: Executor,
) {
    emu.launch(shell_task("t-log", "echo $$ > task.pid; exec sleep 600"));
    wait_state(emu, &exec, "t-log", TaskState::TaskRunning).await;
    let task = exec.read_pid("task.pid").await;
    let socket = exec.path("executor.sock");
    assert!(
        poll(SOON, || socket.exists().then_some(())).await.is_some(),
        "the remote API socket appears"
    );
    emu.kill("t-log", None);
    wait_state(emu, &exec, "t-log", TaskState::TaskKilled).await;
    let status = exec.wait_exit(SOON).await;
    assert_eq!(
        status.code(),
        Some(0),
        "a clean exit, not SIGABRT: {status:?}"
    );
    assert_gone(&[task]).await;
    assert!(!socket.exists(), "the socket file is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_whose_output_goes_to_a_full_device_still_ends_its_task() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    for format in ["text", "json"] {
        let emu = emulator(EmulatorOptions::default()).await;
        let exec = start_with_output(
            &emu,
            &[("HOOK_EXECUTOR_LOG_FORMAT", format)],
            Stdio::from(full()),
            Stdio::from(full()),
        );
        kill_and_check_the_end(&emu, exec).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_whose_stderr_is_a_closed_pipe_still_ends_its_task() {
    let emu = emulator(EmulatorOptions::default()).await;
    let (read, write) = nix::unistd::pipe().expect("pipe");
    // Nobody will ever read: every log write is EPIPE (SIGPIPE must not kill).
    drop(read);
    let exec = start_with_output(&emu, &[], Stdio::null(), Stdio::from(write));
    kill_and_check_the_end(&emu, exec).await;
}

/// A duration too large for any sane setting (and for clock arithmetic) is
/// a configuration error naming the variable: exit 2, before subscribing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_duration_is_refused_at_start_naming_the_variable() {
    let emu = emulator(EmulatorOptions::default()).await;
    for (name, value) in [
        ("HOOK_EXECUTOR_HOOK_TIMEOUT", "18446744073709551615s"),
        ("HOOK_EXECUTOR_KILL_GRACE_PERIOD", "366days"),
    ] {
        let mut exec = Executor::start(&emu, &[(name, value)]);
        let status = exec.wait_exit(SOON).await;
        assert_eq!(status.code(), Some(2), "log:\n{}", exec.log());
        let log = exec.log();
        assert!(
            log.contains(&format!(
                "{name}: \"{value}\" is longer than the maximum of 365days"
            )),
            "{log}"
        );
    }
    assert!(emu.updates().is_empty(), "nothing was launched or reported");
}
