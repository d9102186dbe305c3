//! Agent loss and restart: resubscribe carrying unacknowledged tasks and
//! updates, recovery timeout, checkpointing off, acknowledgement waits.

use std::time::Duration;

use mesos_hook_executor::{emulator::EmulatorOptions, proto::v1::TaskState};

use crate::helpers::*;

fn checkpointing() -> EmulatorOptions {
    EmulatorOptions {
        checkpoint: true,
        recovery_timeout: "15mins".into(),
        backoff_max: "1secs".into(),
        ..Default::default()
    }
}

fn helper_task(id: &str, mode: &str) -> mesos_hook_executor::proto::v1::TaskInfo {
    argv_task(
        id,
        task_helper().to_str().expect("utf8"),
        &["task-helper", mode, "task.pid"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_resubscribes_with_unacknowledged_task_and_updates() {
    let emu = emulator(checkpointing()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.withhold_acks(true);
    emu.launch(helper_task("t-resub", "term-exit"));
    wait_state(&emu, &exec, "t-resub", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let sent: Vec<Vec<u8>> = emu
        .updates()
        .iter()
        .filter_map(|s| s.uuid.clone())
        .collect();
    assert_eq!(sent.len(), 2);
    emu.close_stream();
    emu.wait_subscribed(2, SOON).await.expect("resubscribed");
    let subscribe = emu
        .subscriptions()
        .last()
        .cloned()
        .expect("second SUBSCRIBE");
    let resent: Vec<Vec<u8>> = subscribe
        .unacknowledged_updates
        .iter()
        .filter_map(|u| u.status.uuid.clone())
        .collect();
    assert_eq!(
        resent, sent,
        "unacknowledged updates resent with their original uuids, in order"
    );
    assert_eq!(
        subscribe
            .unacknowledged_tasks
            .iter()
            .map(|t| t.task_id.value.as_str())
            .collect::<Vec<_>>(),
        vec!["t-resub"]
    );
    emu.withhold_acks(false);
    assert!(alive(pid), "the task keeps running across the reconnect");
    emu.kill("t-resub", None);
    wait_state(&emu, &exec, "t-resub", TaskState::TaskKilled).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_with_checkpointing_keeps_the_task() {
    let emu = emulator(checkpointing()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(helper_task("t-restart", "term-exit"));
    wait_state(&emu, &exec, "t-restart", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    emu.restart(Duration::from_secs(2), Duration::from_secs(1))
        .await
        .expect("agent restarts");
    emu.wait_subscribed(2, SOON)
        .await
        .expect("re-subscribed after the restart");
    assert!(alive(pid), "task survived the agent restart");
    assert!(exec.running());
    emu.kill("t-restart", None);
    wait_state(&emu, &exec, "t-restart", TaskState::TaskKilled).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
    assert_gone(&[pid]).await;
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_sent_while_the_agent_is_down_arrives_in_the_next_subscribe() {
    let emu = emulator(checkpointing()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(helper_task("t-down", "term-exit"));
    wait_state(&emu, &exec, "t-down", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    emu.go_down().await;
    // The task ends while the agent is away: its terminal update must not be lost.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal task");
    assert_gone(&[pid]).await;
    emu.come_back().await.expect("agent comes back");
    let finished = wait_state(&emu, &exec, "t-down", TaskState::TaskFinished).await;
    // Delivered after the agent came back, with the uuid it was created with:
    // inside the resubscription, or (when that SUBSCRIBE was built just before
    // the exit was recorded) as an UPDATE right after SUBSCRIBED.
    let in_subscribe = emu.subscriptions().iter().any(|s| {
        s.unacknowledged_updates
            .iter()
            .any(|u| u.status.uuid == finished.uuid)
    });
    let as_update = emu.calls().iter().any(|c| {
        c.call
            .as_ref()
            .and_then(|c| c.update.as_ref())
            .is_some_and(|u| u.status.uuid == finished.uuid)
    });
    assert!(
        in_subscribe || as_update,
        "the terminal update was not delivered by the executor"
    );
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_checkpointing_a_lost_agent_kills_the_task_and_exits_non_zero() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(helper_task("t-nocp", "ignore-term"));
    wait_state(&emu, &exec, "t-nocp", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    emu.close_stream();
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(3), "log:\n{}", exec.log());
    assert!(exec.log().contains("MESOS_CHECKPOINT is off"));
    assert_eq!(
        emu.subscriptions().len(),
        1,
        "no reconnect attempts without checkpointing"
    );
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_timeout_kills_the_task_and_exits_non_zero() {
    let emu = emulator(EmulatorOptions {
        recovery_timeout: "2secs".into(),
        ..checkpointing()
    })
    .await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(helper_task("t-timeout", "term-exit"));
    wait_state(&emu, &exec, "t-timeout", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    emu.go_down().await;
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(3), "log:\n{}", exec.log());
    assert!(exec.log().contains("MESOS_RECOVERY_TIMEOUT"));
    assert_gone(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_only_after_the_terminal_update_is_acknowledged() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.withhold_acks(true);
    emu.launch(shell_task("t-ack", "exit 0"));
    wait_state(&emu, &exec, "t-ack", TaskState::TaskFinished).await;
    // Still waiting for the ACK: confirm across several polls.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            exec.running(),
            "exited before the terminal update was acknowledged"
        );
    }
    emu.withhold_acks(false);
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_terminal_update_ends_after_the_bounded_wait() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[("HOOK_EXECUTOR_ACK_TIMEOUT", "1secs")]);
    emu.withhold_acks(true);
    emu.launch(shell_task("t-noack", "exit 0"));
    wait_state(&emu, &exec, "t-noack", TaskState::TaskFinished).await;
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(1), "log:\n{}", exec.log());
    assert!(exec.log().contains("HOOK_EXECUTOR_ACK_TIMEOUT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_answered_503_is_retried_with_the_same_uuid() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_subscribed(1, SOON).await.expect("subscribed");
    emu.fail_next_updates(503, 2);
    emu.launch(shell_task("t-503", "exit 0"));
    wait_state(&emu, &exec, "t-503", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    let refused: Vec<_> = emu
        .calls()
        .into_iter()
        .filter(|c| c.status == 503)
        .collect();
    assert_eq!(refused.len(), 2);
    let starting = status_in(&emu, "t-503", TaskState::TaskStarting).expect("STARTING accepted");
    let first_refused = refused[0]
        .call
        .as_ref()
        .and_then(|c| c.update.as_ref())
        .map(|u| u.status.uuid.clone());
    assert_eq!(
        first_refused,
        Some(starting.uuid),
        "the retry reused the uuid"
    );
    assert!(exec.log().contains("retrying with the same uuid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_answered_400_is_kept_for_the_next_subscribe() {
    let emu = emulator(checkpointing()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_subscribed(1, SOON).await.expect("subscribed");
    emu.fail_next_updates(400, 1);
    emu.launch(helper_task("t-400", "term-exit"));
    wait_state(&emu, &exec, "t-400", TaskState::TaskRunning).await;
    assert!(
        status_in(&emu, "t-400", TaskState::TaskStarting).is_none(),
        "STARTING was refused"
    );
    emu.close_stream();
    wait_state(&emu, &exec, "t-400", TaskState::TaskStarting).await;
    assert!(exec.log().contains("agent refused a status update"));
    emu.kill("t-400", None);
    wait_state(&emu, &exec, "t-400", TaskState::TaskKilled).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_whose_answer_is_lost_is_resent_with_the_same_uuid() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_subscribed(1, SOON).await.expect("subscribed");
    // The agent takes the update (and ACKs it) but the connection drops
    // before the 202: the executor cannot know and must resend the same uuid.
    emu.drop_next_updates(1, true);
    emu.launch(shell_task("t-lost-202", "exit 0"));
    wait_state(&emu, &exec, "t-lost-202", TaskState::TaskFinished).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
    let starting: Vec<Vec<u8>> = emu
        .updates()
        .into_iter()
        .filter(|s| s.state() == TaskState::TaskStarting)
        .filter_map(|s| s.uuid)
        .collect();
    assert_eq!(starting.len(), 2, "TASK_STARTING sent twice");
    assert_eq!(starting[0], starting[1], "the resend reuses the uuid");
    assert_eq!(
        emu.states("t-lost-202")
            .iter()
            .filter(|s| **s == TaskState::TaskStarting)
            .count(),
        1,
        "the agent deduplicated it"
    );
}
