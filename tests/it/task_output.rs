//! The task's output through the executor (docs/logging.md), with the real
//! binary, real task processes and a real log collector: syslog-ng, started
//! here in the foreground on loopback with a configuration this file writes,
//! receiving JSON lines on TCP and UDP (`flags(no-parse)`) and writing each
//! message to a file the tests read.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use mesos_hook_executor::{
    emulator::EmulatorOptions,
    proto::v1::{self, environment::Variable, Label, Labels, TaskState},
};
use serde_json::Value;

use crate::{fake_consul::FakeConsul, helpers::*};

/// A syslog-ng receiving JSON lines on 127.0.0.1:`port` (TCP and UDP) and
/// writing each message as one line of `out`. Killed when dropped.
struct Collector {
    dir: tempfile::TempDir,
    port: u16,
    _reserved: ReservedPort,
    child: Option<Child>,
}

impl Collector {
    async fn start() -> Self {
        let reserved = reserve_port();
        let mut c = Self {
            dir: tempfile::Builder::new()
                .prefix("syslog-ng-")
                .tempdir()
                .expect("tempdir"),
            port: reserved.port,
            _reserved: reserved,
            child: None,
        };
        c.run().await;
        c
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts syslog-ng in the foreground and waits until it accepts TCP.
    async fn run(&mut self) {
        let d = self.dir.path();
        let conf = d.join("syslog-ng.conf");
        std::fs::write(
            &conf,
            format!(
                "@version: current\n\
                 source s_json {{\n\
                   network(ip(\"127.0.0.1\") port({port}) transport(\"tcp\") flags(no-parse) so-reuseport(1) log-msg-size(1048576) max-connections(100));\n\
                   network(ip(\"127.0.0.1\") port({port}) transport(\"udp\") flags(no-parse) log-msg-size(70000));\n\
                 }};\n\
                 destination d_out {{ file(\"{out}\" template(\"$MSG\\n\") flush-lines(1)); }};\n\
                 log {{ source(s_json); destination(d_out); flags(flow-control); }};\n",
                port = self.port,
                out = self.out().display()
            ),
        )
        .expect("write syslog-ng.conf");
        let child = Command::new("syslog-ng")
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .arg("--no-caps")
            .arg("-R")
            .arg(d.join("persist"))
            .arg("-c")
            .arg(d.join("ctl"))
            .arg("-p")
            .arg(d.join("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("syslog-ng.log")).expect("log file"))
            .spawn()
            .expect("syslog-ng runs (scripts/test-tools.txt: syslog-ng-core)");
        self.child = Some(child);
        let addr = self.address();
        let child = &mut self.child;
        let up = poll(SOON, || {
            let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() {
                return Some(false);
            }
            std::net::TcpStream::connect(&addr).ok().map(|_| true)
        })
        .await;
        assert!(
            up == Some(true),
            "syslog-ng did not listen on {addr}: {}",
            std::fs::read_to_string(d.join("syslog-ng.log")).unwrap_or_default()
        );
    }

    /// Stops syslog-ng (SIGTERM, then SIGKILL) and reaps it.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let exited = poll(SOON, || child.try_wait().ok().flatten()).await;
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Every message written out so far, parsed (a whole line that is not
    /// JSON fails the test: the collector must get whole entries only).
    fn entries(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.out()).unwrap_or_default();
        // Whole lines only: syslog-ng may be midway through writing the last
        // one (a 10 MB entry is written in pieces); it is read next time.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON entry ({e}): {l:.200}"))
            })
            .collect()
    }

    /// Waits until the received entries satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let found = poll(SOON, || {
            let e = self.entries();
            done(&e).then_some(e)
        })
        .await;
        found
            .unwrap_or_else(|| panic!("collector never got {what}; received: {:?}", self.entries()))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn labelled(mut task: v1::TaskInfo, labels: &[(&str, &str)], env: &[(&str, &str)]) -> v1::TaskInfo {
    task.labels = Some(Labels {
        labels: labels
            .iter()
            .map(|(k, v)| Label {
                key: (*k).into(),
                value: Some((*v).into()),
            })
            .collect(),
    });
    if let Some(command) = task.command.as_mut() {
        command.environment = Some(v1::Environment {
            variables: env
                .iter()
                .map(|(k, v)| Variable {
                    name: (*k).into(),
                    value: Some((*v).into()),
                    ..Default::default()
                })
                .collect(),
        });
    }
    task
}

/// The counters of the executor's exit log line (`task output at exit`).
fn exit_counters(log: &str) -> BTreeMap<String, u64> {
    let line = log
        .lines()
        .find(|l| l.contains("task output at exit"))
        .unwrap_or_else(|| panic!("no exit counters in the log:\n{log}"));
    line.split_whitespace()
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Runs `task` to TASK_FINISHED and a clean exit; returns its pid.
async fn run_to_end(
    emu: &mesos_hook_executor::emulator::AgentEmulator,
    exec: &mut Executor,
    id: &str,
) -> i32 {
    wait_state(emu, exec, id, TaskState::TaskFinished).await;
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", exec.log());
    let pid = exec.read_pid("task.pid").await;
    assert_gone(&[pid]).await;
    pid
}

fn field<'a>(e: &'a Value, key: &str) -> &'a str {
    e[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing or not a string in {e}"))
}

/// JSON and logfmt lines of both streams arrive over TCP with every
/// enrichment field; ignored keys are gone; plain lines stay in the sandbox
/// only; stdout and stderr stay separate and complete in the sandbox files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_logfmt_lines_arrive_enriched_over_tcp() {
    let collector = Collector::start().await;
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS", &collector.address()),
            ("HOOK_EXECUTOR_LOG_IGNORE_KEYS", "secret, password"),
        ],
    );
    let out = [
        r#"{"time":"2024-05-06T07:08:09.250Z","level":"warn","msg":"json out","secret":"s1","n":1}"#,
        r#"level=info msg="logfmt out" password=p k=v"#,
        "plain out line",
    ];
    let err = [
        r#"{"msg":"json err"}"#,
        r#"msg="logfmt err" lvl=debug"#,
        "plain err line",
    ];
    let script = format!(
        "echo $$ > task.pid; {} {}",
        out.iter()
            .map(|l| format!("echo '{l}';"))
            .collect::<String>(),
        err.iter()
            .map(|l| format!("echo '{l}' >&2;"))
            .collect::<String>()
    );
    emu.launch(labelled(
        shell_task("t-scrape", &script),
        &[
            ("log-scraping", "logstash"),
            ("scId", "123"),
            ("other", "x"),
        ],
        &[
            ("MARATHON_APP_ID", "/shop/api"),
            ("MARATHON_APP_VERSION", "2024-01-01T00:00:00.000Z"),
        ],
    ));
    run_to_end(&emu, &mut exec, "t-scrape").await;
    let entries = collector.wait_for("4 entries", |e| e.len() >= 4).await;
    assert_eq!(entries.len(), 4, "plain lines are not shipped: {entries:?}");
    for e in &entries {
        for key in [
            "@timestamp",
            "@version",
            "message",
            "level",
            "stream",
            "task_id",
            "framework_id",
            "executor_id",
            "instance_id",
            "agent_host",
            "marathon_app_id",
            "marathon_app_version",
            "scid",
        ] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
        assert_eq!(field(e, "@version"), "1");
        assert_eq!(field(e, "task_id"), "t-scrape");
        assert_eq!(field(e, "framework_id"), "framework-1");
        assert_eq!(field(e, "executor_id"), "executor-1");
        assert_eq!(field(e, "instance_id"), "executor-1");
        assert_eq!(field(e, "marathon_app_id"), "/shop/api");
        assert_eq!(field(e, "marathon_app_version"), "2024-01-01T00:00:00.000Z");
        assert_eq!(field(e, "scid"), "123");
        assert!(!field(e, "agent_host").is_empty());
        assert!(
            humantime::parse_rfc3339(field(e, "@timestamp")).is_ok(),
            "{e}"
        );
        assert!(
            e.get("secret").is_none() && e.get("password").is_none(),
            "ignored keys: {e}"
        );
        assert!(e.get("other").is_none(), "only the chosen labels: {e}");
    }
    let by_message = |m: &str| {
        entries
            .iter()
            .find(|e| e["message"] == m)
            .unwrap_or_else(|| panic!("no entry {m:?} in {entries:?}"))
    };
    let json_out = by_message("json out");
    assert_eq!(
        field(json_out, "@timestamp"),
        "2024-05-06T07:08:09.250Z",
        "the entry's own time"
    );
    assert_eq!(field(json_out, "level"), "warn");
    assert_eq!(field(json_out, "stream"), "stdout");
    assert_eq!(json_out["n"], 1);
    let logfmt_out = by_message("logfmt out");
    assert_eq!(field(logfmt_out, "level"), "info");
    assert_eq!(field(logfmt_out, "k"), "v");
    assert_eq!(field(by_message("json err"), "stream"), "stderr");
    assert_eq!(
        field(by_message("json err"), "level"),
        "ERROR",
        "stderr's default level"
    );
    assert_eq!(field(by_message("logfmt err"), "level"), "debug");
    // The sandbox files: every byte, per stream, in order.
    let stdout = exec.stdout();
    assert_eq!(
        stdout,
        out.iter().map(|l| format!("{l}\n")).collect::<String>()
    );
    let stderr = exec.log();
    let task_err: Vec<&str> = stderr.lines().filter(|l| err.contains(l)).collect();
    assert_eq!(task_err, err, "stderr complete and in order");
    assert!(
        !stderr.lines().any(|l| out.contains(&l)),
        "streams stay apart (the launch's log line quotes the script, not a line of it)"
    );
    let c = exit_counters(&exec.log());
    assert_eq!(
        (
            c["lines"],
            c["shipped"],
            c["plain_not_shipped"],
            c["dropped"]
        ),
        (6, 4, 2, 0),
        "{c:?}"
    );
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

/// allegro's setting names select UDP and the ignored keys; with
/// `log-scraping-all` plain lines are shipped as a `message` at read time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allegro_names_udp_and_log_scraping_all() {
    let collector = Collector::start().await;
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_PROTOCOL", "udp"),
            (
                "ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_ADDRESS",
                &collector.address(),
            ),
            ("ALLEGRO_EXECUTOR_SERVICELOG_IGNORE_KEYS", "token"),
        ],
    );
    let script = r#"echo $$ > task.pid; echo '{"msg":"udp json","token":"t"}'; echo 'plain stdout words'; echo 'plain stderr words' >&2"#;
    emu.launch(labelled(
        shell_task("t-udp", script),
        &[("log-scraping", "json"), ("log-scraping-all", "true")],
        &[],
    ));
    run_to_end(&emu, &mut exec, "t-udp").await;
    let entries = collector.wait_for("3 entries", |e| e.len() >= 3).await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    let get = |m: &str| {
        entries
            .iter()
            .find(|e| e["message"] == m)
            .unwrap_or_else(|| panic!("{m} in {entries:?}"))
    };
    assert!(get("udp json").get("token").is_none());
    let plain = get("plain stdout words");
    assert_eq!(
        (field(plain, "stream"), field(plain, "level")),
        ("stdout", "INFO")
    );
    assert_eq!(field(plain, "task_id"), "t-udp");
    let plain_err = get("plain stderr words");
    assert_eq!(
        (field(plain_err, "stream"), field(plain_err, "level")),
        ("stderr", "ERROR")
    );
    assert_eq!(exit_counters(&exec.log())["shipped"], 3);
}

/// Rotation by size: Mesos logrotate names (`stdout`, `stdout.1` newest, …),
/// no file over the size, the configured number kept, the newest output kept
/// in order, for both streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_mesos_names_sizes_and_counts() {
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_LOG_ROTATE_SIZE", "8KB"),
            ("HOOK_EXECUTOR_LOG_ROTATE_KEEP", "3"),
        ],
    );
    let script = "echo $$ > task.pid; i=0; while [ $i -lt 3000 ]; do echo \"stdout line $i\"; i=$((i+1)); done; \
                  i=0; while [ $i -lt 3000 ]; do echo \"stderr line $i\" >&2; i=$((i+1)); done";
    emu.launch(shell_task("t-rotate", script));
    run_to_end(&emu, &mut exec, "t-rotate").await;
    let read = |name: &str| std::fs::read_to_string(exec.path(name)).unwrap_or_default();
    for stream in ["stdout", "stderr"] {
        let names = [
            stream.to_owned(),
            format!("{stream}.1"),
            format!("{stream}.2"),
            format!("{stream}.3"),
        ];
        for name in &names {
            let text =
                std::fs::read_to_string(exec.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            // stderr also carries the executor's own log lines, which can
            // land between a size check and the rotation: the task's bytes
            // stay within the size, the whole file within one more line or two.
            let task_bytes: usize = text
                .lines()
                .filter(|l| l.starts_with(&format!("{stream} line ")))
                .map(|l| l.len() + 1)
                .sum();
            let slack = if stream == "stderr" { 2048 } else { 0 };
            assert!(
                task_bytes <= 8192,
                "{name}: {task_bytes} bytes of the task's"
            );
            assert!(text.len() <= 8192 + slack, "{name} is {} bytes", text.len());
        }
        assert!(
            !exec.path(&format!("{stream}.4")).exists(),
            "only 3 rotated {stream} files kept"
        );
        // Oldest kept first: the task's lines form an unbroken, ordered tail.
        let kept: Vec<String> = names
            .iter()
            .rev()
            .flat_map(|n| read(n).lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| l.starts_with(&format!("{stream} line ")))
            .collect();
        let numbers: Vec<u32> = kept
            .iter()
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("numbered")
            })
            .collect();
        let last = 2999;
        assert_eq!(
            numbers.last(),
            Some(&last),
            "{stream}: the newest line is kept"
        );
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "{stream}: contiguous and ordered"
        );
        assert!(
            numbers.len() > 1000,
            "{stream}: several files' worth kept ({})",
            numbers.len()
        );
    }
    let c = exit_counters(&exec.log());
    assert!(c["rotations"] >= 8, "{c:?}");
}

/// The collector stops mid-run and comes back: the task never waits (its
/// output keeps growing in the sandbox while nothing is shipped), the losses
/// are counted as send errors, and shipping resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restart_costs_counted_entries_and_shipping_resumes() {
    let mut collector = Collector::start().await;
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS", &collector.address()),
            ("HOOK_EXECUTOR_LOG_TCP_TIMEOUT", "500ms"),
        ],
    );
    let socket = exec.path("executor.sock");
    let script =
        "echo $$ > task.pid; i=0; while [ ! -e stop ]; do echo \"{\\\"seq\\\":$i}\"; i=$((i+1)); \
                  if [ $((i % 20)) -eq 0 ]; then sleep 0.02; fi; done";
    emu.launch(labelled(
        shell_task("t-restart", script),
        &[("log-scraping", "logstash")],
        &[],
    ));
    wait_state(&emu, &exec, "t-restart", TaskState::TaskRunning).await;
    wait_api(&exec, &socket).await;
    collector.wait_for("50 entries", |e| e.len() >= 50).await;
    collector.stop().await;
    let lines_at_stop = exec.stdout().lines().count();
    let counters = || async {
        api_json(&socket, "GET", "/remote/status", None).await.1["task_output"].clone()
    };
    let mut dropped = 0;
    for _ in 0..500 {
        dropped = counters().await["dropped_send_error"].as_u64().unwrap_or(0);
        if dropped > 0 && exec.stdout().lines().count() > lines_at_stop + 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped > 0,
        "losses counted while the collector is down: {}",
        counters().await
    );
    assert!(
        exec.stdout().lines().count() > lines_at_stop + 500,
        "the task kept writing while nothing was shipped"
    );
    let received_before = collector.entries().len();
    collector.run().await;
    let sandbox_seq = exec.stdout().lines().count();
    collector
        .wait_for("entries written after the restart", |e| {
            e.len() > received_before
                && e.iter()
                    .any(|x| x["seq"].as_u64().is_some_and(|s| s as usize > sandbox_seq))
        })
        .await;
    // GET /metrics mirrors the pipeline's counters: shipped entries and the
    // send errors of the outage, under their cause.
    let metrics = api(&socket, "GET", "/metrics", None).await.body;
    let value = |prefix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("mesos_hook_executor_task_output_entries_shipped_total ") > 0.0
            && value(
                "mesos_hook_executor_task_output_entries_dropped_total{cause=\"send_error\"} "
            ) > 0.0
            && value("mesos_hook_executor_task_output_bytes_total{stream=\"stdout\"} ") > 0.0,
        "{metrics}"
    );
    std::fs::write(exec.path("stop"), "").expect("stop file");
    run_to_end(&emu, &mut exec, "t-restart").await;
    let seqs: Vec<usize> = exec
        .stdout()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["seq"].as_u64())
                .expect("a seq line") as usize
        })
        .collect();
    assert!(
        seqs.iter().enumerate().all(|(i, s)| i == *s),
        "the sandbox has every line in order"
    );
    let c = exit_counters(&exec.log());
    assert_eq!(c["lines"] as usize, seqs.len());
    assert!(c["dropped_send_error"] > 0 && c["shipped"] > 0, "{c:?}");
    assert_eq!(
        c["lines"],
        c["shipped"] + c["dropped"] + c["plain_not_shipped"],
        "every line accounted for: {c:?}"
    );
}

/// Logstash found through Consul (the fake agent, Consul's documented
/// health API, with the hook's token): entries reach the instance it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logstash_is_discovered_through_consul() {
    let collector = Collector::start().await;
    let consul = FakeConsul::start(Some("consul-secret")).await;
    let body = format!(
        r#"{{"ID":"logstash-1","Name":"logstash","Address":"127.0.0.1","Port":{}}}"#,
        collector.port
    );
    let mut http = std::net::TcpStream::connect(consul.addr).expect("consul");
    write!(
        http,
        "PUT /v1/agent/service/register HTTP/1.1\r\nHost: consul\r\nX-Consul-Token: consul-secret\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("register");
    let mut answer = String::new();
    let _ = http.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("CONSUL_HTTP_ADDR", &consul.addr.to_string()),
            ("CONSUL_HTTP_TOKEN", "consul-secret"),
            ("HOOK_EXECUTOR_LOG_LOGSTASH_SERVICE", "logstash"),
            ("HOOK_EXECUTOR_LOG_LOGSTASH_REFRESH", "1secs"),
        ],
    );
    let script =
        r#"echo $$ > task.pid; for i in 1 2 3; do echo "{\"msg\":\"via consul $i\"}"; done"#;
    emu.launch(labelled(
        shell_task("t-consul", script),
        &[("log-scraping", "logstash")],
        &[],
    ));
    run_to_end(&emu, &mut exec, "t-consul").await;
    let entries = collector.wait_for("3 entries", |e| e.len() >= 3).await;
    assert_eq!(
        entries
            .iter()
            .map(|e| field(e, "message"))
            .collect::<Vec<_>>(),
        ["via consul 1", "via consul 2", "via consul 3"]
    );
    let lookups: Vec<_> = consul
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/health/service/logstash")
        .collect();
    assert!(!lookups.is_empty(), "asked Consul's health API");
    assert!(lookups
        .iter()
        .all(|r| r.status == 200 && r.token.as_deref() == Some("consul-secret")));
}

fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Binary garbage, invalid UTF-8 and a 10 MB line: the sandbox file gets
/// every byte, the long line is shipped cut and flagged, the lines after it
/// still arrive, and the executor's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_invalid_utf8_and_a_10_mb_line() {
    let collector = Collector::start().await;
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS", &collector.address())],
    );
    let script = r#"echo $$ > task.pid
        { head -c 1000000 /dev/urandom; printf '\n\377\376 invalid utf8 \300\n'; head -c 10485760 /dev/zero | tr '\0' x; printf '\n{"msg":"after"}\n'; } | tee copy
        while [ ! -e done ]; do sleep 0.05; done"#;
    emu.launch(labelled(
        shell_task("t-garbage", script),
        &[("log-scraping", "logstash"), ("log-scraping-all", "true")],
        &[],
    ));
    let entries = collector
        .wait_for("the line after the 10 MB one", |e| {
            e.iter().any(|x| x["message"] == "after")
        })
        .await;
    let rss = peak_rss_kib(exec.pid);
    assert!(rss < 48 * 1024, "executor peak RSS {rss} KiB");
    let cut = entries
        .iter()
        .find(|e| e["truncated"] == true && field(e, "message").starts_with("xxxx"))
        .expect("the 10 MB line, cut and flagged");
    assert_eq!(
        field(cut, "message").len(),
        65536,
        "cut at HOOK_EXECUTOR_LOG_MAX_LINE"
    );
    assert!(entries
        .iter()
        .any(|e| field(e, "message") == "\u{fffd}\u{fffd} invalid utf8 \u{fffd}"));
    std::fs::write(exec.path("done"), "").expect("done file");
    run_to_end(&emu, &mut exec, "t-garbage").await;
    let sandbox = std::fs::read(exec.path("stdout")).expect("stdout");
    let copy = std::fs::read(exec.path("copy")).expect("copy");
    assert_eq!(sandbox.len(), copy.len());
    assert!(sandbox == copy, "the sandbox file has every byte");
}

/// 100 000 lines as fast as awk writes them: the sandbox gets them all, in
/// order; every line is shipped or counted as dropped; the collector has
/// exactly what was shipped; memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100k_lines() {
    let collector = Collector::start().await;
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS", &collector.address())],
    );
    let script = r#"echo $$ > task.pid
        awk 'BEGIN { for (i = 0; i < 100000; i++) printf "{\"seq\":%d,\"msg\":\"burst\"}\n", i }'
        while [ ! -e done ]; do sleep 0.05; done"#;
    emu.launch(labelled(
        shell_task("t-burst", script),
        &[("log-scraping", "logstash")],
        &[],
    ));
    let socket = exec.path("executor.sock");
    wait_api(&exec, &socket).await;
    let settled = poll(SOON, || {
        exec.stdout().lines().count().eq(&100_000).then_some(())
    })
    .await;
    assert!(settled.is_some(), "all lines in the sandbox");
    let rss = peak_rss_kib(exec.pid);
    assert!(rss < 48 * 1024, "executor peak RSS {rss} KiB");
    std::fs::write(exec.path("done"), "").expect("done file");
    run_to_end(&emu, &mut exec, "t-burst").await;
    let seqs: Vec<u64> = exec
        .stdout()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["seq"].as_u64())
                .expect("seq")
        })
        .collect();
    assert!(
        seqs.iter().enumerate().all(|(i, s)| i as u64 == *s),
        "complete and in order"
    );
    let c = exit_counters(&exec.log());
    eprintln!("100k burst counters: {c:?}");
    assert_eq!(c["lines"], 100_000);
    assert_eq!(c["lines"], c["shipped"] + c["dropped"], "{c:?}");
    let shipped = c["shipped"] as usize;
    let entries = collector
        .wait_for("every shipped entry", |e| e.len() >= shipped)
        .await;
    assert_eq!(entries.len(), shipped, "{c:?}");
}

/// A sink that accepts the connection and never reads (a stalled
/// Logstash): the task is not held up (the sandbox gets every line and the
/// task ends), the queue overflows and the drops are counted by cause, and
/// memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_never_holds_the_task_and_drops_are_counted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let held = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("the executor connects");
        conn
    });
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS", &address),
            ("HOOK_EXECUTOR_LOG_DRAIN_TIMEOUT", "1sec"),
            // Only the drain deadline ends the stalled write, however long
            // the run takes on a loaded machine (the 2 s default would turn
            // the held batch into send errors and empty the queue first).
            ("HOOK_EXECUTOR_LOG_TCP_TIMEOUT", "10mins"),
        ],
    );
    let script = r#"echo $$ > task.pid
        awk 'BEGIN { for (i = 0; i < 300000; i++) printf "{\"seq\":%d,\"msg\":\"stalled\"}\n", i }'
        while [ ! -e done ]; do sleep 0.05; done"#;
    emu.launch(labelled(
        shell_task("t-stalled", script),
        &[("log-scraping", "logstash")],
        &[],
    ));
    let settled = poll(SOON, || {
        exec.stdout().lines().count().eq(&300_000).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "every line in the sandbox, the task not held"
    );
    let rss = peak_rss_kib(exec.pid);
    assert!(rss < 48 * 1024, "executor peak RSS {rss} KiB");
    std::fs::write(exec.path("done"), "").expect("done file");
    run_to_end(&emu, &mut exec, "t-stalled").await;
    let c = exit_counters(&exec.log());
    eprintln!("stalled sink counters: {c:?}");
    assert_eq!(c["lines"], 300_000);
    assert_eq!(c["lines"], c["shipped"] + c["dropped"], "{c:?}");
    assert!(
        c["dropped_at_exit"] > 0,
        "the queue left at the drain time: {c:?}"
    );
    assert!(c["dropped_queue_full"] > 0, "{c:?}");
    drop(held.join().expect("accepted"));
}

/// A task with a user runs through the fork path (posix_spawn cannot switch
/// users): its output goes through the pipes all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_run_as_its_user_is_captured_too() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "switching users needs root, as make test runs"
    );
    let collector = Collector::start().await;
    let emu = emulator(EmulatorOptions::default()).await;
    let mut exec = Executor::start(
        &emu,
        &[
            ("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS", &collector.address()),
            ("HOOK_EXECUTOR_LOG_ROTATE_SIZE", "1MB"),
        ],
    );
    let mut task = labelled(
        shell_task(
            "t-user-logs",
            r#"echo "{\"msg\":\"as $(id -un)\",\"pid\":$$}"; echo 'err line' >&2"#,
        ),
        &[("log-scraping", "logstash")],
        &[],
    );
    if let Some(command) = task.command.as_mut() {
        command.user = Some("nobody".into());
    }
    emu.launch(task);
    wait_state(&emu, &exec, "t-user-logs", TaskState::TaskFinished).await;
    assert_eq!(
        exec.wait_exit(SOON).await.code(),
        Some(0),
        "log:\n{}",
        exec.log()
    );
    let out: Value = serde_json::from_str(exec.stdout().trim()).expect("one JSON line");
    assert_eq!(out["msg"], "as nobody");
    let pid = i32::try_from(out["pid"].as_i64().expect("pid")).expect("pid");
    assert_gone(&[pid]).await;
    assert!(exec.log().lines().any(|l| l == "err line"));
    let entries = collector.wait_for("the entry", |e| !e.is_empty()).await;
    assert_eq!(field(&entries[0], "message"), "as nobody");
    assert_eq!(entries[0]["pid"], pid);
}
