//! SUBSCRIBE → LAUNCH → updates → exit, with the real binary, real processes
//! and the agent emulator.

use mesos_hook_executor::{
    emulator::EmulatorOptions,
    proto::{
        executor::call,
        v1::{self, task_status::Source, TaskState},
    },
};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_with_the_agent_ids_and_protobuf() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_subscribed(1, SOON).await.expect("subscribed");
    let calls = emu.calls();
    let subscribe = calls
        .iter()
        .find(|c| {
            c.call
                .as_ref()
                .is_some_and(|c| c.r#type() == call::Type::Subscribe)
        })
        .expect("a SUBSCRIBE");
    let c = subscribe.call.as_ref().expect("decoded");
    assert_eq!(c.framework_id.value, "framework-1");
    assert_eq!(c.executor_id.value, "executor-1");
    assert!(
        c.subscribe.is_some(),
        "subscribe field present even when empty"
    );
    assert_eq!(
        subscribe.content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(subscribe.accept.as_deref(), Some("application/x-protobuf"));
    assert_eq!(subscribe.status, 200);
    emu.shutdown();
    let status = exec.wait_exit(SOON).await;
    assert_eq!(
        status.code(),
        Some(0),
        "SHUTDOWN before any task exits 0; log:\n{}",
        exec.log()
    );
    assert!(emu.updates().is_empty(), "no updates without a task");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_zero_is_finished_after_starting_and_running() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(shell_task("t-ok", "exit 0"));
    let finished = wait_state(&emu, &exec, "t-ok", TaskState::TaskFinished).await;
    assert_eq!(
        finished.message.as_deref(),
        Some("Command exited with status 0")
    );
    assert_eq!(label(&finished, "exit_code").as_deref(), Some("0"));
    assert_eq!(
        emu.states("t-ok"),
        vec![
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ]
    );
    for s in emu.updates() {
        assert_eq!(s.source(), Source::Executor);
        assert_eq!(s.uuid.as_ref().map(Vec::len), Some(16));
        assert_eq!(
            s.executor_id.as_ref().map(|e| e.value.as_str()),
            Some("executor-1")
        );
        assert!(s.timestamp.is_some());
    }
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", exec.log());
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_is_failed_with_the_code() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(shell_task("t-3", "exit 3"));
    let failed = wait_state(&emu, &exec, "t-3", TaskState::TaskFailed).await;
    assert_eq!(
        failed.message.as_deref(),
        Some("Command exited with status 3")
    );
    assert_eq!(label(&failed, "exit_code").as_deref(), Some("3"));
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_by_signal_is_failed_with_the_signal() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(shell_task("t-sig", "kill -SEGV $$"));
    let failed = wait_state(&emu, &exec, "t-sig", TaskState::TaskFailed).await;
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("Command terminated with signal Segmentation fault"),
        "{message}"
    );
    assert_eq!(label(&failed, "signal").as_deref(), Some("11"));
    assert_eq!(label(&failed, "signal_name").as_deref(), Some("SIGSEGV"));
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_fails_with_a_message() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(argv_task(
        "t-bad",
        "/nonexistent/binary",
        &["binary", "--flag"],
    ));
    let failed = wait_state(&emu, &exec, "t-bad", TaskState::TaskFailed).await;
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.contains("cannot start `binary --flag`"),
        "{message}"
    );
    assert!(message.contains("No such file or directory"), "{message}");
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

/// What the executor can see before starting the process fails the launch
/// before TASK_RUNNING: here a script whose `#!` interpreter is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_whose_interpreter_is_missing_fails_before_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_executable(
        dir.path(),
        "needs-python",
        b"#!/nonexistent/python3 -u\nprint('hi')\n",
    );
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(argv_task("t-script", &path, &["needs-python"]));
    let failed = wait_state(&emu, &exec, "t-script", TaskState::TaskFailed).await;
    let message = failed.message.clone().unwrap_or_default();
    assert!(message.contains("cannot start `needs-python`"), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
    assert_eq!(
        emu.states("t-script"),
        [TaskState::TaskStarting, TaskState::TaskFailed]
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

/// What only `execve` finds out (an ELF interpreter that does not exist, as
/// for a binary built against another libc) comes after TASK_RUNNING, as
/// with the Mesos command executor, but with the cause in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_cannot_be_executed_after_running_fails_with_the_cause() {
    // /bin/true naming an interpreter that does not exist (same length).
    let mut bytes = std::fs::read("/bin/true").expect("read /bin/true");
    let interp = bytes
        .windows(3)
        .position(|w| w == b"ld-")
        .expect("a dynamically linked /bin/true names its interpreter");
    bytes[interp..interp + 3].copy_from_slice(b"zz-");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_executable(dir.path(), "foreign-libc", &bytes);
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(argv_task("t-foreign", &path, &["foreign-libc"]));
    let failed = wait_state(&emu, &exec, "t-foreign", TaskState::TaskFailed).await;
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("Command could not be executed: No such file or directory"),
        "{message}"
    );
    assert!(message.contains("ELF interpreter"), "{message}");
    assert_eq!(label(&failed, "exec_errno").as_deref(), Some("2"));
    assert_eq!(
        emu.states("t-foreign"),
        [
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFailed
        ]
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_and_argv_launches_keep_arguments_verbatim() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    // shell=false: no expansion, argv[0] from `arguments`, spaces preserved.
    emu.launch(argv_task(
        "t-argv",
        "printf",
        &["printf", "%s|%s|%s\\n", "$PATH", "a  b", "*"],
    ));
    wait_state(&emu, &exec, "t-argv", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_eq!(exec.stdout(), "$PATH|a  b|*\n");

    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    // shell=true: `sh -c`, expansion happens, arguments are ignored.
    let mut task = shell_task(
        "t-shell",
        "printf '%s\\n' \"$MESOS_TASK_ID\" \"$(echo expanded)\"",
    );
    if let Some(c) = task.command.as_mut() {
        c.arguments = vec!["ignored".into()];
    }
    emu.launch(task);
    wait_state(&emu, &exec, "t-shell", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_eq!(exec.stdout(), "t-shell\nexpanded\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_environment_has_command_variables_and_no_executor_secrets() {
    let emu = emulator(EmulatorOptions {
        auth_token: Some("jwt-secret-token".into()),
        ..Default::default()
    })
    .await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("CONSUL_HTTP_TOKEN", "consul-secret"),
            ("HOOK_EXECUTOR_ENV_DENYLIST", "MY_PASSWORD,VAULT_*"),
            ("MY_PASSWORD", "hunter2"),
            ("VAULT_TOKEN", "vault-secret"),
            ("PLAIN_SETTING", "visible"),
        ],
    );
    let mut task = shell_task("t-env", "env > env.out");
    if let Some(c) = task.command.as_mut() {
        c.environment = Some(v1::Environment {
            variables: vec![
                v1::environment::Variable {
                    name: "FROM_COMMAND".into(),
                    value: Some("hello world".into()),
                    ..Default::default()
                },
                v1::environment::Variable {
                    name: "PLAIN_SETTING".into(),
                    value: Some("overridden".into()),
                    ..Default::default()
                },
            ],
        });
    }
    emu.launch(task);
    wait_state(&emu, &exec, "t-env", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    let env = exec.read_file("env.out").await;
    assert!(
        env.lines().any(|l| l == "FROM_COMMAND=hello world"),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l == "PLAIN_SETTING=overridden"),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "MESOS_TASK_ID=t-env"), "{env}");
    assert!(
        env.lines().any(|l| l.starts_with("MESOS_FRAMEWORK_ID=")),
        "{env}"
    );
    for secret in [
        "jwt-secret-token",
        "consul-secret",
        "hunter2",
        "vault-secret",
        "HOOK_EXECUTOR_",
    ] {
        assert!(
            !env.contains(secret),
            "{secret} leaked into the task environment:\n{env}"
        );
    }
    // Every request carried the token, and the log never shows it.
    assert!(
        emu.calls().iter().all(|c| c.authorization),
        "a request without the Bearer token"
    );
    assert!(!exec.log().contains("jwt-secret-token"), "token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_executor_command_is_recovered() {
    let executor_info = v1::ExecutorInfo {
        executor_id: v1::ExecutorId { value: "executor-1".into() },
        framework_id: Some(v1::FrameworkId { value: "framework-1".into() }),
        r#type: Some(v1::executor_info::Type::Custom as i32),
        command: Some(v1::CommandInfo {
            value: Some("chmod ug+rx './mesos-hook-executor' && exec './mesos-hook-executor' echo \"app:$PORT0\" > marathon.out".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let emu = emulator(EmulatorOptions {
        executor_info: Some(executor_info.clone()),
        ..Default::default()
    })
    .await;
    // Marathon passes the app env as the executor's own environment.
    let mut exec = Executor::start(&emu, &[("PORT0", "31005")]);
    let mut task = mesos_hook_executor::emulator::task_info("t-marathon", None);
    task.executor = Some(executor_info);
    emu.launch(task);
    wait_state(&emu, &exec, "t-marathon", TaskState::TaskFinished).await;
    assert_eq!(exec.read_file("marathon.out").await, "app:31005\n");
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_launch_fails_only_the_second_task() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let helper = task_helper();
    emu.launch(argv_task(
        "t-first",
        helper.to_str().expect("utf8"),
        &["task-helper", "term-exit", "first.pid"],
    ));
    wait_state(&emu, &exec, "t-first", TaskState::TaskRunning).await;
    emu.launch(shell_task("t-second", "true"));
    let failed = wait_state(&emu, &exec, "t-second", TaskState::TaskFailed).await;
    assert!(failed
        .message
        .unwrap_or_default()
        .contains("multiple tasks"));
    let pid = exec.read_pid("first.pid").await;
    assert!(alive(pid), "first task must keep running");
    // A KILL for the refused task is a no-op: it already ended.
    emu.kill("t-second", None);
    emu.kill("t-first", None);
    wait_state(&emu, &exec, "t-first", TaskState::TaskKilled).await;
    assert!(
        status_in(&emu, "t-second", TaskState::TaskKilled).is_none(),
        "no second terminal update for the refused task"
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[pid]).await;
}

/// A task with `CommandInfo.user` runs as that user when the executor is root
/// (the fork path: posix_spawn cannot switch users), in its own session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_as_its_user_in_its_own_session() {
    if !nix::unistd::Uid::effective().is_root() {
        // Switching users needs root, as the suite has in CI.
        report_skip(
            "lifecycle::a_task_runs_as_its_user_in_its_own_session",
            "needs root to run a task as nobody",
        );
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("a nobody user");
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let mut task = shell_task(
        "t-user",
        "echo \"uid=$(id -u) sid=$(awk '{print $6}' /proc/self/stat) pid=$$\"",
    );
    if let Some(command) = task.command.as_mut() {
        command.user = Some("nobody".into());
    }
    emu.launch(task);
    wait_state(&emu, &exec, "t-user", TaskState::TaskFinished).await;
    let out = exec.stdout();
    let line = out
        .lines()
        .find(|l| l.starts_with("uid="))
        .unwrap_or_else(|| panic!("the task's line in stdout: {out}"));
    assert!(
        line.starts_with(&format!("uid={} ", nobody.uid)),
        "runs as nobody: {line}"
    );
    // `$(…)` runs awk in a subshell: its session is the task's, led by the shell.
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .map(str::to_owned)
    };
    assert_eq!(field("sid="), field("pid="), "its own session: {line}");
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

/// Framework teardown as a real agent does it (tests/mesos `framework_teardown`):
/// SHUTDOWN, then the executor's updates are accepted but never acknowledged;
/// the task still stops gracefully and the executor exits 0 when its shutdown
/// budget is spent, leaving no process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_teardown_ends_task_and_executor_without_acks() {
    let emu = emulator(EmulatorOptions {
        shutdown_grace: "2secs".to_owned(),
        ..EmulatorOptions::default()
    })
    .await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(argv_task(
        "t-teardown",
        task_helper().to_str().expect("utf8"),
        &["task-helper", "term-exit", "task.pid"],
    ));
    wait_state(&emu, &exec, "t-teardown", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    emu.teardown_framework();
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[pid]).await;
    let ignored: Vec<_> = emu
        .status_log()
        .into_iter()
        .filter(|r| r.framework_terminating)
        .filter_map(|r| r.state())
        .collect();
    assert!(ignored.contains(&TaskState::TaskKilled), "{ignored:?}");
    assert!(
        exec.log().contains("shutdown budget over"),
        "{}",
        exec.log()
    );
}
