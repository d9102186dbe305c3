//! Scheduled task ends with the real binary: certificate expiry (label
//! `validate-certificate: true`, PEM in `CERTIFICATE` or a file) and
//! `HOOK_EXECUTOR_MAX_LIFETIME`. Certificates are generated here. Times are
//! checked as lower bounds only (the end never comes early) and against the
//! schedule the executor reports in `/remote/status`.

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mesos_hook_executor::{
    emulator::EmulatorOptions,
    proto::v1::{self, framework_info::capability, TaskState},
};

use crate::helpers::*;

/// Unix seconds now.
fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits")
}

/// A self-signed PEM certificate valid until `not_after` (Unix seconds).
fn certificate(not_after: i64) -> String {
    let mut params =
        rcgen::CertificateParams::new(vec!["task.example".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).expect("timestamp");
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("certificate").pem()
}

/// RFC 3339 (seconds, UTC) of Unix seconds, as the executor writes it.
fn rfc3339(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).expect("timestamp");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A task that records its pid, and on SIGTERM whether the before-terminate
/// hook had finished (`order`), then exits.
const TERM_RECORDER: &str =
    "trap 'if [ -e bt.done ]; then echo hooks-first > order; else echo term-first > order; fi; exit 0' TERM; \
     echo $$ > task.pid; while :; do sleep 0.05; done";

/// `TERM_RECORDER` with `validate-certificate: true` and, if given, the PEM
/// in the task's own environment.
fn certified_task(id: &str, pem: Option<&str>) -> v1::TaskInfo {
    let mut task = shell_task(id, TERM_RECORDER);
    task.kill_policy = Some(kill_policy(Duration::from_secs(10)));
    task.labels = Some(v1::Labels {
        labels: vec![v1::Label {
            key: "validate-certificate".into(),
            value: Some("true".into()),
        }],
    });
    if let (Some(pem), Some(command)) = (pem, task.command.as_mut()) {
        command.environment = Some(v1::Environment {
            variables: vec![v1::environment::Variable {
                name: "CERTIFICATE".into(),
                value: Some(pem.into()),
                ..Default::default()
            }],
        });
    }
    task
}

/// A hooks directory whose before-terminate script takes a moment and then
/// leaves `bt.done` in the sandbox.
fn before_terminate_hooks() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hooks-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path().join("before-terminate.d");
    std::fs::create_dir_all(&d).expect("mkdir");
    let script = d.join("10-drain");
    std::fs::write(
        &script,
        "#!/bin/sh\necho ran >> bt.log; sleep 0.3; touch bt.done\n",
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Launches a task that must be refused; checks TASK_FAILED's message, that
/// the task never ran, and that the executor exits cleanly.
async fn assert_refused(extra: &[(&str, &str)], task: v1::TaskInfo, says: &str) {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(&emu, extra);
    emu.launch(task);
    let failed = wait_state(&emu, &exec, "t-cert", TaskState::TaskFailed).await;
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("Cannot launch task: problem with certificate: ")
            && message.contains(says),
        "{message}"
    );
    assert_eq!(
        emu.states("t-cert"),
        vec![TaskState::TaskStarting, TaskState::TaskFailed]
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0), "{}", exec.log());
    assert!(
        !exec.path("task.pid").exists(),
        "the refused task never ran, so no process of it can survive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_is_refused_at_launch() {
    assert_refused(&[], certified_task("t-cert", None), "missing certificate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_at_launch_naming_not_after() {
    let not_after = unix_now() - 60;
    let pem = certificate(not_after);
    assert_refused(
        &[],
        certified_task("t-cert", Some(&pem)),
        &format!("the certificate expired at {}", rfc3339(not_after)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_certificate_is_refused_at_launch() {
    let broken = "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n";
    assert_refused(
        &[],
        certified_task("t-cert", Some(broken)),
        "cannot parse the certificate",
    )
    .await;
    assert_refused(
        &[],
        certified_task("t-cert", Some("just text")),
        "no PEM certificate block",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_certificate_file_is_refused_at_launch() {
    assert_refused(
        &[("HOOK_EXECUTOR_CERTIFICATE_FILE", "no-such-cert.pem")],
        certified_task("t-cert", None),
        "cannot read the certificate file",
    )
    .await;
}

/// Runs a task whose certificate (or lifetime) ends it soon, with a
/// before-terminate hook; returns the terminal update, the schedule the
/// status API showed, and the wall-clock time of TASK_KILLED.
async fn scheduled_end(
    extra: &[(&str, &str)],
    task: v1::TaskInfo,
) -> (v1::TaskStatus, serde_json::Value, i64) {
    let hooks = before_terminate_hooks();
    let emu = emulator(EmulatorOptions {
        capabilities: vec![capability::Type::TaskKillingState],
        ..Default::default()
    })
    .await;
    let hooks_dir = hooks.path().display().to_string();
    let mut env = vec![
        ("HOOK_EXECUTOR_HOOKS", "exec"),
        ("HOOK_EXECUTOR_HOOKS_DIR", hooks_dir.as_str()),
    ];
    env.extend_from_slice(extra);
    let mut exec = Executor::start(&emu, &env);
    let id = task.task_id.value.clone();
    emu.launch(task);
    wait_state(&emu, &exec, &id, TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let socket = exec.path("executor.sock");
    wait_api(&exec, &socket).await;
    let status = api(&socket, "GET", "/remote/status", None).await.json();
    let killed = wait_state(&emu, &exec, &id, TaskState::TaskKilled).await;
    let killed_at = unix_now();
    assert_eq!(
        exec.read_file("order").await.trim(),
        "hooks-first",
        "SIGTERM reached the task before the before-terminate hook finished"
    );
    assert_eq!(exec.read_file("bt.log").await.lines().count(), 1);
    assert_eq!(
        emu.states(&id),
        vec![
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskKilling,
            TaskState::TaskKilled
        ]
    );
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0), "{}", exec.log());
    assert_gone(&[pid]).await;
    (killed, status, killed_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expiring_in_seconds_ends_the_task_at_not_after_without_a_range() {
    let not_after = unix_now() + 4;
    let pem = certificate(not_after);
    let (killed, status, killed_at) = scheduled_end(
        &[("HOOK_EXECUTOR_CERTIFICATE_EXPIRATION_RANGE", "0secs")],
        certified_task("t-cert", Some(&pem)),
    )
    .await;
    assert_eq!(status["scheduled_end"], rfc3339(not_after).as_str());
    assert_eq!(status["scheduled_end_reason"], "certificate-expiry");
    assert!(killed_at >= not_after, "the kill came before NotAfter");
    let message = killed.message.clone().unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "Certificate expired: valid until {}",
            rfc3339(not_after)
        )),
        "{message}"
    );
    assert_eq!(
        label(&killed, "scheduled_end").as_deref(),
        Some("certificate-expiry")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allegros_random_range_the_end_falls_between_launch_and_not_after() {
    let launched = unix_now();
    let not_after = launched + 5;
    let pem = certificate(not_after);
    // Allegro's variable; the range (1 h) exceeds the time left, so the end
    // is spread over what is left. The PEM comes from the executor's own
    // environment, as Marathon passes the app's.
    let (killed, status, killed_at) = scheduled_end(
        &[
            ("ALLEGRO_EXECUTOR_RANDOM_EXPIRATION_RANGE", "1hrs"),
            ("CERTIFICATE", &pem),
        ],
        certified_task("t-cert", None),
    )
    .await;
    let scheduled = status["scheduled_end"]
        .as_str()
        .expect("scheduled_end")
        .to_owned();
    assert!(
        rfc3339(launched) <= scheduled && scheduled <= rfc3339(not_after),
        "{scheduled} not within [{}, {}]",
        rfc3339(launched),
        rfc3339(not_after)
    );
    assert!(
        rfc3339(killed_at) >= scheduled,
        "the kill came before its schedule"
    );
    assert!(killed
        .message
        .unwrap_or_default()
        .starts_with("Certificate expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_ends_the_task_gracefully_after_the_hooks() {
    let launched = unix_now();
    let mut task = shell_task("t-life", TERM_RECORDER);
    task.kill_policy = Some(kill_policy(Duration::from_secs(10)));
    let (killed, status, killed_at) =
        scheduled_end(&[("HOOK_EXECUTOR_MAX_LIFETIME", "3secs")], task).await;
    assert_eq!(status["scheduled_end_reason"], "max-lifetime");
    assert!(
        killed_at >= launched + 3,
        "the kill came before the lifetime"
    );
    assert!(
        killed
            .message
            .clone()
            .unwrap_or_default()
            .starts_with("Maximum lifetime reached (HOOK_EXECUTOR_MAX_LIFETIME)"),
        "{:?}",
        killed.message
    );
    assert_eq!(
        label(&killed, "scheduled_end").as_deref(),
        Some("max-lifetime")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_with_a_spread_ends_within_it() {
    let launched = unix_now();
    let mut task = shell_task("t-life", TERM_RECORDER);
    task.kill_policy = Some(kill_policy(Duration::from_secs(10)));
    let (_killed, status, killed_at) = scheduled_end(
        &[
            ("HOOK_EXECUTOR_MAX_LIFETIME", "5secs"),
            ("HOOK_EXECUTOR_MAX_LIFETIME_SPREAD", "3secs"),
        ],
        task,
    )
    .await;
    let scheduled = status["scheduled_end"].as_str().expect("scheduled_end");
    assert!(
        rfc3339(launched + 1).as_str() <= scheduled && scheduled <= rfc3339(launched + 6).as_str(),
        "{scheduled}"
    );
    assert!(killed_at >= launched + 2, "the kill came before the spread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_file_is_used_when_the_task_has_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("task.pem");
    let not_after = unix_now() + 3600;
    std::fs::write(&file, certificate(not_after)).expect("write certificate");
    let file = file.display().to_string();
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_CERTIFICATE_FILE", &file),
            ("HOOK_EXECUTOR_CERTIFICATE_EXPIRATION_RANGE", "0secs"),
        ],
    );
    emu.launch(certified_task("t-file", None));
    wait_state(&emu, &exec, "t-file", TaskState::TaskRunning).await;
    let pid = exec.read_pid("task.pid").await;
    let socket = exec.path("executor.sock");
    wait_api(&exec, &socket).await;
    let status = api(&socket, "GET", "/remote/status", None).await.json();
    assert_eq!(status["scheduled_end"], rfc3339(not_after).as_str());
    assert_eq!(status["scheduled_end_reason"], "certificate-expiry");
    assert!(
        exec.log().contains("task end scheduled"),
        "the schedule is logged at launch"
    );
    emu.kill("t-file", None);
    wait_state(&emu, &exec, "t-file", TaskState::TaskKilled).await;
    assert_eq!(exec.wait_exit(SOON).await.code(), Some(0), "{}", exec.log());
    assert_gone(&[pid]).await;
}
