//! Transports, log format and the SUBSCRIBE edge cases of the agent.

use mesos_hook_executor::{emulator::EmulatorOptions, proto::v1::TaskState};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_unix_domain_socket_is_used_when_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let emu = emulator(EmulatorOptions { unix_socket: Some(socket.clone()), ..Default::default() }).await;
    let mut exec = Executor::start(&emu, &[]);
    emu.launch(shell_task("t-unix", "exit 0"));
    wait_state(&emu, &exec, "t-unix", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0), "log:\n{}", exec.log());
    let calls = emu.calls();
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|c| c.transport == mesos_hook_executor::emulator::Transport::Unix), "every call over the agent socket");
    assert!(exec.log().contains("http+unix://"), "{}", exec.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_ids() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, &[("HOOK_EXECUTOR_LOG_FORMAT", "json")]);
    emu.launch(shell_task("t-json", "exit 0"));
    wait_state(&emu, &exec, "t-json", TaskState::TaskFinished).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
    let log = exec.log();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.len() > 3);
    let ended = lines.iter().find(|l| l["message"] == "task ended").expect("a 'task ended' line");
    assert_eq!(ended["task_id"], "t-json");
    assert_eq!(ended["span"]["executor_id"], "executor-1");
    assert_eq!(ended["span"]["framework_id"], "framework-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_retried_while_the_agent_is_starting() {
    let emu = emulator(EmulatorOptions::default()).await;
    emu.set_starting(true);
    let mut exec = Executor::start(&emu, &[]);
    emu.wait_for(SOON, |e| (e.calls().iter().filter(|c| c.status == 404).count() >= 2).then_some(())).await.expect("retried after 404");
    emu.set_starting(false);
    emu.wait_subscribed(1, SOON).await.expect("subscribed once the agent is up");
    // Never two SUBSCRIBEs in flight: each attempt got its answer before the next.
    let attempts: Vec<_> = emu.calls().into_iter().filter(|c| c.path.contains("executor")).collect();
    assert!(attempts.windows(2).all(|w| w[0].at <= w[1].at));
    emu.shutdown();
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_as_the_first_event_exits_zero_without_updates() {
    let emu = emulator(EmulatorOptions::default()).await;
    emu.shutdown();
    let mut exec = Executor::start(&emu, &[]);
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", exec.log());
    assert!(emu.updates().is_empty());
    assert!(exec.log().contains("SHUTDOWN received"));
}
