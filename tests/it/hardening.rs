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

// ---- Hooks: strict modes, the task's user, output limits, drain window ----

/// A root-owned hooks directory (mode 0755) with one script per (event,
/// name, body, mode).
fn hooks_tree(scripts: &[(&str, &str, &str, u32)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("hooks-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (event, name, body, mode) in scripts {
        let d = dir.path().join(format!("{event}.d"));
        std::fs::create_dir_all(&d).expect("mkdir");
        let path = d.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    dir
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown_nobody(path: &std::path::Path) {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .expect("chown");
}

/// A task run as `nobody`, its sandbox its own.
fn nobody_task(
    exec: &Executor,
    id: &str,
    command: &str,
) -> mesos_hook_executor::proto::v1::TaskInfo {
    chown_nobody(exec.sandbox.path());
    let mut task = shell_task(id, command);
    if let Some(c) = task.command.as_mut() {
        c.user = Some("nobody".into());
    }
    task
}

/// Makes one hook file untrusted; returns the file the error must name.
type Planter<'a> = Box<dyn Fn(&std::path::Path) -> std::path::PathBuf + 'a>;

/// Whatever an untrusted hook file is — a script a `nobody` task owns, a
/// world-writable script, a world-writable event folder, a symlink leading
/// out of the hooks directory — before-start is refused naming the file,
/// TASK_FAILED, and the planted code never runs (as root or at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_hook_files_are_refused_and_never_run() {
    let outside = tempfile::tempdir().expect("tempdir");
    let evil = outside.path().join("evil.sh");
    std::fs::write(&evil, "#!/bin/sh\nid -u > \"$MESOS_SANDBOX/evil-ran\"\n").expect("write");
    chmod(&evil, 0o755);
    let body = "id -u > \"$MESOS_SANDBOX/evil-ran\"";
    let cases: Vec<(&str, Planter, &str)> = vec![
        (
            "owned by the task's user",
            Box::new(|d: &std::path::Path| {
                let s = d.join("before-start.d/50-planted");
                chown_nobody(&s);
                s
            }),
            "is owned by uid 65534",
        ),
        (
            "world-writable script",
            Box::new(|d: &std::path::Path| {
                let s = d.join("before-start.d/50-planted");
                chmod(&s, 0o777);
                s
            }),
            "writable by its group or by others (mode 0777)",
        ),
        (
            "world-writable event folder",
            Box::new(|d: &std::path::Path| {
                let f = d.join("before-start.d");
                chmod(&f, 0o777);
                f
            }),
            "writable by its group or by others (mode 0777)",
        ),
        (
            "group-writable hooks directory",
            Box::new(|d: &std::path::Path| {
                chmod(d, 0o775);
                d.to_path_buf()
            }),
            "writable by its group or by others (mode 0775)",
        ),
        (
            "symlink out of the hooks directory",
            Box::new(|d: &std::path::Path| {
                let s = d.join("before-start.d/50-planted");
                std::fs::remove_file(&s).expect("rm");
                std::os::unix::fs::symlink(&evil, &s).expect("symlink");
                s
            }),
            "symlink that resolves outside the hooks directory",
        ),
    ];
    for (what, plant, reason) in cases {
        let dir = hooks_tree(&[("before-start", "50-planted", body, 0o755)]);
        let named = plant(dir.path());
        let emu = emulator(EmulatorOptions::default()).await;
        let mut exec = Executor::start(
            &emu,
            &[
                ("HOOK_EXECUTOR_HOOKS", "exec"),
                ("HOOK_EXECUTOR_HOOKS_DIR", &dir.path().display().to_string()),
            ],
        );
        let task = nobody_task(&exec, "t-strict", "echo $$ > task.pid; exec sleep 600");
        emu.launch(task);
        let failed = wait_state(&emu, &exec, "t-strict", TaskState::TaskFailed).await;
        let message = failed.message.clone().unwrap_or_default();
        assert!(message.contains(reason), "{what}: {message}");
        assert!(
            message.contains(&named.display().to_string()),
            "{what}: the message names {}: {message}",
            named.display()
        );
        assert_eq!(exec.wait_exit(SOON).await.code(), Some(0), "{what}");
        assert!(
            !exec.path("evil-ran").exists(),
            "{what}: the planted script ran"
        );
        assert!(
            !exec.path("task.pid").exists(),
            "{what}: the task never started"
        );
    }
}

/// A task running as `nobody` plants a script in a folder it can write (an
/// operator's mistake): at the kill, before-terminate refuses the whole
/// folder; the kill goes on (TASK_KILLED) and nothing planted runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_planted_by_a_running_task_is_refused_at_the_kill() {
    let dir = hooks_tree(&[(
        "before-terminate",
        "10-operator",
        "echo ran > \"$MESOS_SANDBOX/operator-ran\"",
        0o755,
    )]);
    let folder = dir.path().join("before-terminate.d");
    chown_nobody(&folder);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir.path().display().to_string()),
        ],
    );
    let plant = format!(
        "printf '#!/bin/sh\\nid -u > \"$MESOS_SANDBOX/evil-ran\"\\n' > {f}/50-evil && chmod 755 {f}/50-evil && echo $$ > task.pid && exec sleep 600",
        f = folder.display()
    );
    emu.launch(nobody_task(&exec, "t-plant", &plant));
    wait_state(&emu, &exec, "t-plant", TaskState::TaskRunning).await;
    let task = exec.read_pid("task.pid").await;
    assert!(
        folder.join("50-evil").exists(),
        "the task planted its script"
    );
    emu.kill("t-plant", None);
    wait_state(&emu, &exec, "t-plant", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[task]).await;
    assert!(!exec.path("evil-ran").exists(), "the planted script ran");
    assert!(
        !exec.path("operator-ran").exists(),
        "an untrusted folder runs nothing"
    );
    let log = exec.log();
    assert!(log.contains("refusing to run hooks from"), "{log}");
    assert!(log.contains("is owned by uid 65534"), "{log}");
}

/// With `HOOK_EXECUTOR_HOOKS_EXEC_USER=task`, task-owned hooks are accepted
/// and run as the task's user, never as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_as_the_task_user_accept_task_owned_files() {
    let dir = hooks_tree(&[(
        "before-start",
        "10-who",
        "id -u > \"$MESOS_SANDBOX/hook-uid\"; echo HOOK_UID=$(id -u)",
        0o755,
    )]);
    for path in [
        dir.path().to_path_buf(),
        dir.path().join("before-start.d"),
        dir.path().join("before-start.d/10-who"),
    ] {
        chown_nobody(&path);
    }
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir.path().display().to_string()),
            ("HOOK_EXECUTOR_HOOKS_EXEC_USER", "task"),
        ],
    );
    emu.launch(nobody_task(
        &exec,
        "t-as-task",
        "echo \"$HOOK_UID\" > task-saw",
    ));
    wait_state(&emu, &exec, "t-as-task", TaskState::TaskFinished).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
    assert_eq!(exec.read_file("hook-uid").await.trim(), NOBODY.to_string());
    assert_eq!(exec.read_file("task-saw").await.trim(), NOBODY.to_string());
}

/// A before-start script printing more than its limit fails the hook,
/// saying so; one that exits while its background child holds stdout is
/// ended after the drain window (not after the 10-minute hook timeout),
/// with a message that says so, and the child is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_output_over_the_limit_and_held_pipes_fail_the_hook_clearly() {
    let cases = [
        (
            "yes A=1 | head -c 100000; exit 0",
            "printed more than 1024 bytes on stdout (HOOK_EXECUTOR_HOOK_MAX_OUTPUT)",
        ),
        (
            "sleep 600 & echo $! > \"$MESOS_SANDBOX/held.pid\"; echo A=1; exit 0",
            "exited with status 0, but a process it left behind kept its stdout or stderr open",
        ),
    ];
    for (body, reason) in cases {
        let dir = hooks_tree(&[("before-start", "10-hook", body, 0o755)]);
        let emu = emulator(EmulatorOptions::default()).await;
        let mut exec = Executor::start(
            &emu,
            &[
                ("HOOK_EXECUTOR_HOOKS", "exec"),
                ("HOOK_EXECUTOR_HOOKS_DIR", &dir.path().display().to_string()),
                ("HOOK_EXECUTOR_HOOK_MAX_OUTPUT", "1024"),
                ("HOOK_EXECUTOR_HOOK_TIMEOUT", "10mins"),
            ],
        );
        emu.launch(shell_task("t-out", "true"));
        let failed = wait_state(&emu, &exec, "t-out", TaskState::TaskFailed).await;
        let message = failed.message.clone().unwrap_or_default();
        assert!(message.contains("10-hook"), "{message}");
        assert!(message.contains(reason), "{message}");
        assert!(!message.contains("timed out"), "{message}");
        assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
        if exec.path("held.pid").exists() {
            assert_gone(&[exec.read_pid("held.pid").await]).await;
        }
    }
}

/// SIGKILL the executor while an after-start hook and a COMMAND health check
/// (each a shell with a child) hang: within a few seconds none of them, nor
/// their children, is left. (The task itself is the agent's to clean up;
/// the test kills it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_executor_leaves_no_hook_or_check_process() {
    use mesos_hook_executor::proto::v1::{self, health_check};
    let dir = hooks_tree(&[(
        "after-start",
        "10-hang",
        "echo $$ > \"$MESOS_SANDBOX/hook.pid\"; sleep 600 & echo $! > \"$MESOS_SANDBOX/hook-child.pid\"; wait",
        0o755,
    )]);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_HOOKS", "exec"),
            ("HOOK_EXECUTOR_HOOKS_DIR", &dir.path().display().to_string()),
            ("HOOK_EXECUTOR_HOOK_TIMEOUT", "10mins"),
        ],
    );
    let mut task = shell_task("t-orphans", "echo $$ > task.pid; exec sleep 600");
    task.health_check = Some(v1::HealthCheck {
        r#type: Some(health_check::Type::Command as i32),
        command: Some(v1::CommandInfo {
            value: Some("echo $$ > check.pid; sleep 600 & echo $! > check-child.pid; wait".into()),
            shell: Some(true),
            ..Default::default()
        }),
        delay_seconds: Some(0.0),
        interval_seconds: Some(1.0),
        timeout_seconds: Some(0.0),
        grace_period_seconds: Some(600.0),
        ..Default::default()
    });
    emu.launch(task);
    wait_state(&emu, &exec, "t-orphans", TaskState::TaskRunning).await;
    let mut pids = Vec::new();
    for name in ["hook.pid", "hook-child.pid", "check.pid", "check-child.pid"] {
        pids.push(exec.read_pid(name).await);
    }
    let task = exec.read_pid("task.pid").await;
    assert!(
        pids.iter().all(|p| alive(*p)),
        "all running before the kill"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(exec.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the executor");
    let _ = exec.wait_exit(SOON).await;
    assert_gone(&pids).await;
    // The task is the agent's to clean up; here the test is the agent.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(task),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_gone(&[task]).await;
}

// ---- Input edges: values that are not UTF-8 ----

/// The executor binary with extra variables given as raw bytes.
fn start_with_bytes(
    emu: &mesos_hook_executor::emulator::AgentEmulator,
    extra: &[(&str, &[u8])],
) -> Executor {
    use std::os::unix::ffi::OsStrExt;
    let sandbox = tempfile::Builder::new()
        .prefix("sandbox-")
        .tempdir()
        .expect("tempdir");
    let stdout = mesos_hook_executor::emulator::open_sandbox_output(&sandbox.path().join("stdout"))
        .expect("stdout file");
    let stderr = mesos_hook_executor::emulator::open_sandbox_output(&sandbox.path().join("stderr"))
        .expect("stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_mesos-hook-executor"));
    command
        .env_clear()
        .envs(emu.executor_env_in(sandbox.path()))
        .current_dir(sandbox.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for (name, value) in extra {
        command.env(name, std::ffi::OsStr::from_bytes(value));
    }
    let child = command.spawn().expect("spawn executor");
    let pid = i32::try_from(child.id()).expect("pid");
    Executor {
        child: Some(child),
        sandbox,
        pid,
    }
}

/// A variable of ours (or Mesos') that is not UTF-8 stops the start with
/// exit 2 naming it; any other reaches the task byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_are_not_utf8_are_named_if_ours_and_passed_on_otherwise() {
    let emu = emulator(EmulatorOptions::default()).await;
    for name in [
        "HOOK_EXECUTOR_KILL_GRACE_PERIOD",
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
    ] {
        let mut exec = start_with_bytes(&emu, &[(name, b"5\xffsecs")]);
        assert_eq!(
            exec.wait_exit(SOON).await.code(),
            Some(2),
            "log:\n{}",
            exec.log()
        );
        let log = exec.log();
        assert!(
            log.contains(&format!("{name}: is not valid UTF-8")),
            "{log}"
        );
    }
    assert!(emu.updates().is_empty());

    let value: &[u8] = b"caf\xe9 \xff\xfe end";
    let mut exec = start_with_bytes(&emu, &[("APP_BYTES", value)]);
    emu.launch(shell_task(
        "t-bytes",
        "printf %s \"$APP_BYTES\" > bytes.out",
    ));
    wait_state(&emu, &exec, "t-bytes", TaskState::TaskFinished).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
    assert_eq!(
        std::fs::read(exec.path("bytes.out")).expect("bytes.out"),
        value
    );
}
