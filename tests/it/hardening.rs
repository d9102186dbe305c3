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
    start_as(emu, extra, stdout, stderr, None)
}

/// The executor binary with the given stdout and stderr, as `uid` if given
/// (its sandbox then belongs to that uid).
fn start_as(
    emu: &mesos_hook_executor::emulator::AgentEmulator,
    extra: &[(&str, &str)],
    stdout: Stdio,
    stderr: Stdio,
    uid: Option<u32>,
) -> Executor {
    use std::os::unix::process::CommandExt;
    let sandbox = tempfile::Builder::new()
        .prefix("sandbox-")
        .tempdir()
        .expect("tempdir");
    if let Some(uid) = uid {
        let id = nix::unistd::Uid::from_raw(uid);
        nix::unistd::chown(
            sandbox.path(),
            Some(id),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .expect("chown sandbox");
    }
    let mut env: BTreeMap<String, String> =
        emu.executor_env_in(sandbox.path()).into_iter().collect();
    env.insert("HOOK_EXECUTOR_LOG_LEVEL".into(), "debug".into());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_mesos-hook-executor"));
    command
        .env_clear()
        .envs(&env)
        .current_dir(sandbox.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let child = command.spawn().expect("spawn executor");
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

const NOBODY: u32 = 65534;

/// The executor's secrets, one per kind of secret variable.
const SECRETS: [(&str, &str); 2] = [
    ("CONSUL_HTTP_TOKEN", "consul-s3cret-value"),
    ("HOOK_EXECUTOR_REMOTE_TOKEN", "remote-s3cret-value"),
];

/// The agent's token (the emulator exports it and requires it).
const AGENT_TOKEN: &str = "agent-s3cret-value";

fn emulator_with_token() -> EmulatorOptions {
    EmulatorOptions {
        auth_token: Some(AGENT_TOKEN.into()),
        ..EmulatorOptions::default()
    }
}

/// What a task finds when it tries the executor's (its parent's) environ
/// and memory: the exit code of each attempt and what it read.
const PROBE: &str = "cat /proc/$PPID/environ > environ.out 2> environ.err; echo $? > environ.rc; \
    head -c 16 /proc/$PPID/mem > mem.out 2> mem.err; echo $? > mem.rc; \
    cat /proc/self/environ > own-environ.out; echo done > probe.done; exec sleep 600";

async fn probe_secrets(
    exec: &Executor,
    emu: &mesos_hook_executor::emulator::AgentEmulator,
    task: mesos_hook_executor::proto::v1::TaskInfo,
) {
    let id = task.task_id.value.clone();
    emu.launch(task);
    wait_state(emu, exec, &id, TaskState::TaskRunning).await;
    exec.read_file("probe.done").await;
    let read = |name: &str| std::fs::read(exec.path(name)).unwrap_or_default();
    let text = |name: &str| String::from_utf8_lossy(&read(name)).trim().to_owned();
    assert_ne!(
        text("environ.rc"),
        "0",
        "environ was readable: {:?}",
        text("environ.out")
    );
    assert!(
        text("environ.err").contains("Permission denied"),
        "{}",
        text("environ.err")
    );
    assert_ne!(text("mem.rc"), "0", "mem was readable");
    assert!(
        text("mem.err").contains("Permission denied"),
        "{}",
        text("mem.err")
    );
    assert!(
        read("own-environ.out").len() > 10,
        "the probe itself works: it reads its own environ"
    );
    for secret in SECRETS.iter().map(|(_, s)| *s).chain([AGENT_TOKEN]) {
        for file in ["environ.out", "mem.out", "own-environ.out"] {
            assert!(!text(file).contains(secret), "{secret} leaked into {file}");
        }
    }
    // Root (this test) still can read the executor's environ; even so the
    // secrets' values are gone from it, while ordinary variables remain.
    let environ = std::fs::read(format!("/proc/{}/environ", exec.pid)).expect("root reads environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("MESOS_FRAMEWORK_ID="), "{environ}");
    for (name, secret) in SECRETS
        .into_iter()
        .chain([("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", AGENT_TOKEN)])
    {
        assert!(
            !environ.contains(secret),
            "{name}'s value is still in the environment block"
        );
    }
    let task_pid: i32 =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", exec.pid, exec.pid))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .next()
            .unwrap_or(0);
    emu.kill(&id, None);
    wait_state(emu, exec, &id, TaskState::TaskKilled).await;
    if task_pid > 0 {
        assert_gone(&[task_pid]).await;
    }
}

/// The executor and its task under the same ordinary uid: the task cannot
/// read the executor's environ or memory (the process is non-dumpable), and
/// the secrets are gone from the environment block anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_uid_task_cannot_read_the_executors_secrets() {
    let emu = emulator(emulator_with_token()).await;
    let log = tempfile::tempfile().expect("log file");
    let mut exec = start_as(
        &emu,
        &SECRETS,
        Stdio::null(),
        Stdio::from(log),
        Some(NOBODY),
    );
    probe_secrets(&exec, &emu, shell_task("t-same-uid", PROBE)).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

/// The executor as root, the task as an ordinary user (`CommandInfo.user`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_task_cannot_read_the_executors_secrets() {
    let emu = emulator(emulator_with_token()).await;
    let mut exec = start_with_output(&emu, &SECRETS, Stdio::null(), Stdio::null());
    nix::unistd::chown(
        exec.sandbox.path(),
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        None,
    )
    .expect("the task may write its sandbox");
    let mut task = shell_task("t-nobody", PROBE);
    if let Some(c) = task.command.as_mut() {
        c.user = Some("nobody".into());
    }
    probe_secrets(&exec, &emu, task).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}
