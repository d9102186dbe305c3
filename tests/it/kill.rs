//! KILL and SHUTDOWN: SIGTERM to the whole tree, grace, SIGKILL, TASK_KILLING.
//! Grace periods are asserted as lower bounds (a SIGKILL never comes early) and
//! as "long before the grace would have ended" with wide margins, never as
//! tight timings.

use std::time::{Duration, Instant};

use mesos_hook_executor::{
    emulator::EmulatorOptions,
    proto::v1::{framework_info::capability, TaskState},
};

use crate::helpers::*;

fn helper_task(id: &str, mode: &str, pidfile: &str) -> mesos_hook_executor::proto::v1::TaskInfo {
    argv_task(
        id,
        task_helper().to_str().expect("utf8"),
        &["task-helper", mode, pidfile],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_respecting_task_is_killed_long_before_the_grace_ends() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(helper_task("t-term", "term-exit", "task.pid"));
    wait_state(&emu, &exec, "t-term", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let sent = Instant::now();
    emu.kill("t-term", Some(kill_policy(Duration::from_secs(60))));
    let killed = wait_state(&emu, &exec, "t-term", TaskState::TaskKilled).await;
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "the kill waited for the grace period"
    );
    assert_eq!(
        killed.message.as_deref(),
        Some("Command exited with status 0")
    );
    assert!(
        !emu.states("t-term").contains(&TaskState::TaskKilling),
        "no TASK_KILLING without the capability"
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ignoring_task_gets_sigkill_at_the_task_policy_deadline() {
    let emu = emulator(EmulatorOptions {
        capabilities: vec![capability::Type::TaskKillingState],
        ..Default::default()
    })
    .await;
    let mut exec = Executor::start(&emu, &[]);
    let mut task = helper_task("t-ignore", "ignore-term", "task.pid");
    task.kill_policy = Some(kill_policy(Duration::from_millis(1500)));
    emu.launch(task);
    wait_state(&emu, &exec, "t-ignore", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let sent = Instant::now();
    emu.kill("t-ignore", None);
    let killed = wait_state(&emu, &exec, "t-ignore", TaskState::TaskKilled).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "SIGKILL came before the grace period"
    );
    assert_eq!(
        killed.message.as_deref(),
        Some("Command terminated with signal Killed")
    );
    assert_eq!(
        emu.states("t-ignore"),
        vec![
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskKilling,
            TaskState::TaskKilled
        ]
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_policy_of_the_kill_event_overrides_the_task_and_repeats_only_shorten() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let mut task = helper_task("t-override", "ignore-term", "task.pid");
    task.kill_policy = Some(kill_policy(Duration::from_secs(120)));
    emu.launch(task);
    wait_state(&emu, &exec, "t-override", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let sent = Instant::now();
    emu.kill("t-override", Some(kill_policy(Duration::from_secs(60))));
    // A longer grace changes nothing; a shorter one brings SIGKILL forward.
    emu.kill("t-override", Some(kill_policy(Duration::from_secs(600))));
    emu.kill("t-override", Some(kill_policy(Duration::from_secs(1))));
    let killed = wait_state(&emu, &exec, "t-override", TaskState::TaskKilled).await;
    assert!(sent.elapsed() >= Duration::from_secs(1));
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "the shortened grace was not applied"
    );
    assert_eq!(
        killed.message.as_deref(),
        Some("Command terminated with signal Killed")
    );
    // A KILL after the end is a no-op.
    emu.kill("t-override", None);
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_eq!(
        emu.states("t-override")
            .iter()
            .filter(|s| **s == TaskState::TaskKilled)
            .count(),
        1
    );
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_grandchild_and_double_forked_daemon_do_not_survive() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let helper = task_helper();
    let script = format!(
        "sleep 1000 & echo $! > bg.pid; {h} daemonize daemon.pid; (trap '' TERM; sleep 1000) & echo $! > stubborn.pid; \
         trap 'exit 0' TERM; echo $$ > task.pid; while :; do sleep 0.05; done",
        h = sh_quote(&helper)
    );
    emu.launch(shell_task("t-tree", &script));
    wait_state(&emu, &exec, "t-tree", TaskState::TaskRunning).await;
    let pids = [
        exec.read_pid("task.pid").await,
        exec.read_pid("bg.pid").await,
        exec.read_pid("daemon.pid").await,
        exec.read_pid("stubborn.pid").await,
    ];
    assert!(pids.iter().all(|p| alive(*p)));
    emu.kill("t-tree", Some(kill_policy(Duration::from_secs(2))));
    wait_state(&emu, &exec, "t-tree", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_task_that_exits_by_itself_are_killed() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    let script = format!(
        "sleep 1000 & echo $! > bg.pid; {} daemonize daemon.pid; exit 0",
        sh_quote(&task_helper())
    );
    // Without ACKs the executor stays up: the leftovers must die with the
    // terminal update, not only in the sweep before the executor exits.
    emu.withhold_acks(true);
    emu.launch(shell_task("t-left", &script));
    wait_state(&emu, &exec, "t-left", TaskState::TaskFinished).await;
    let pids = [
        exec.read_pid("bg.pid").await,
        exec.read_pid("daemon.pid").await,
    ];
    assert_gone(&pids).await;
    assert!(exec.running(), "still waiting for the acknowledgement");
    emu.withhold_acks(false);
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_the_task_and_exits_zero() {
    let emu = emulator(EmulatorOptions {
        shutdown_grace: "5secs".into(),
        ..Default::default()
    })
    .await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(helper_task("t-shut", "ignore-term", "task.pid"));
    wait_state(&emu, &exec, "t-shut", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let sent = Instant::now();
    emu.shutdown();
    let killed = wait_state(&emu, &exec, "t-shut", TaskState::TaskKilled).await;
    assert_eq!(
        killed.message.as_deref(),
        Some("Command terminated with signal Killed")
    );
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", exec.log());
    // Kill grace = min(3s default, 5s - 2s): the executor is gone inside the
    // agent's shutdown grace.
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "exceeded the shutdown grace: {:?}",
        sent.elapsed()
    );
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exclusion_spares_named_processes_until_sigkill() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[("HOOK_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES", "task-helper")],
    );
    // term-exit would exit on SIGTERM; being spared, it only dies at SIGKILL.
    emu.launch(helper_task("t-spare", "term-exit", "task.pid"));
    wait_state(&emu, &exec, "t-spare", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let sent = Instant::now();
    emu.kill("t-spare", Some(kill_policy(Duration::from_secs(1))));
    let killed = wait_state(&emu, &exec, "t-spare", TaskState::TaskKilled).await;
    assert!(sent.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        killed.message.as_deref(),
        Some("Command terminated with signal Killed")
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_sigterm_kills_the_task_gracefully() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(helper_task("t-sigterm", "term-exit", "task.pid"));
    wait_state(&emu, &exec, "t-sigterm", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(exec.pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    wait_state(&emu, &exec, "t-sigterm", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_for_a_task_never_launched_is_answered() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_subscribed(1, SOON).await.expect("subscribed");
    emu.kill("t-ghost", None);
    let killed = wait_state(&emu, &exec, "t-ghost", TaskState::TaskKilled).await;
    assert!(killed.message.unwrap_or_default().contains("not running"));
    assert!(
        exec.running(),
        "the executor keeps waiting for its task or SHUTDOWN"
    );
    emu.shutdown();
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}
