//! An allegro/mesos-executor app definition runs unchanged: the real
//! executor reads allegro's settings as aliases and says so once in its log,
//! warns about allegro settings it has no counterpart for, and keeps every
//! `ALLEGRO_EXECUTOR_*` variable (tokens among them) out of the task.

use mesos_hook_executor::{emulator::EmulatorOptions, proto::v1::TaskState};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allegro_settings_are_read_logged_and_kept_from_the_task() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD", "2s"),
            ("ALLEGRO_EXECUTOR_CONSUL_TOKEN", "allegro-s3cret"),
            ("ALLEGRO_EXECUTOR_HTTPT_IMEOUT", "4s"),
            ("HOOK_EXECUTOR_CALL_TIMEOUT", "6s"),
            (
                "ALLEGRO_EXECUTOR_SENTRY_DSN",
                "https://key@sentry.example/1",
            ),
        ],
    );
    emu.launch(shell_task(
        "t-allegro",
        "env > task-env.txt; echo $$ > task.pid; exec sleep 600",
    ));
    wait_state(&emu, &exec, "t-allegro", TaskState::TaskRunning).await;
    let env = exec.read_file("task-env.txt").await;
    let pid = exec.read_pid("task.pid").await;
    assert!(
        !env.contains("ALLEGRO_EXECUTOR_") && !env.contains("allegro-s3cret"),
        "allegro settings reached the task:\n{env}"
    );
    let log = exec.log();
    for line in [
        "read HOOK_EXECUTOR_KILL_GRACE_PERIOD from allegro's ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD",
        "read CONSUL_HTTP_TOKEN from allegro's ALLEGRO_EXECUTOR_CONSUL_TOKEN",
        "allegro's ALLEGRO_EXECUTOR_HTTPT_IMEOUT ignored: HOOK_EXECUTOR_CALL_TIMEOUT is set too and wins",
    ] {
        assert_eq!(log.matches(line).count(), 1, "{line:?} once in:\n{log}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("ALLEGRO_EXECUTOR_SENTRY_DSN")
                && l.contains("no counterpart")
                && !l.contains("sentry.example")),
        "{log}"
    );
    assert!(
        !log.contains("allegro-s3cret"),
        "a token was logged:\n{log}"
    );
    emu.kill("t-allegro", None);
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0), "{}", exec.log());
    assert_gone(&[pid]).await;
}
