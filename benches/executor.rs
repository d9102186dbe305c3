//! `make bench`: the figures issue targets are stated against, as medians over
//! many runs on a noisy 2-core machine. Runs the release executor binary
//! against the in-process agent emulator.
//!
//! - LAUNCH → TASK_RUNNING: from handing LAUNCH to the emulator's stream to the
//!   emulator receiving the RUNNING update. LAUNCH is handed over as soon as
//!   the emulator has taken SUBSCRIBE (the target's figure); a second figure
//!   hands it over 20 ms later, to an executor that is idle again, as a
//!   real agent sends a queued task's LAUNCH only after the containerizer
//!   has updated the container's resources.
//! - KILL → TASK_KILLED: for a task that exits on SIGTERM.
//! - Peak RSS (VmHWM) of the executor while its task runs.
//! - Stripped release binary size.
//! - RecordIO decode throughput (framing only, and framing + Event decode).
//! - Executor CPU time (user + system, from `/proc/<pid>/stat`) per 1,000
//!   HTTP health-check probes, against the task's own local HTTP server with a
//!   1 ms interval: the median of three 1,000-probe windows in one run.
//! - Remote API: execute-and-collect round trips per second for `true` over
//!   the Unix socket (one keep-alive connection: `POST /remote/execute`, then
//!   `POST /remote/task`), against the same count of `true` spawned and
//!   collected directly by a Rust loop, as a ratio; and the executor's RSS
//!   after 1,000 and after 10,000 commands.

mod common;

use common::{executor_bin, median, release_dir, start_executor};
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use mesos_hook_executor::{
    agent::recordio::RecordIoCodec,
    emulator::{task_info, AgentEmulator},
    proto::{
        executor::{event, Event},
        v1::{self, TaskState},
    },
};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

const RUNS: usize = 25;

/// How long after SUBSCRIBE the idle-executor figure sends LAUNCH: long
/// enough for the executor to have gone back to waiting.
const IDLE_FOR: Duration = Duration::from_millis(20);

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// When the emulator received the UPDATE call carrying `state`.
fn update_received(emu: &AgentEmulator, state: TaskState) -> Instant {
    emu.calls()
        .into_iter()
        .find(|c| {
            c.call
                .as_ref()
                .and_then(|c| c.update.as_ref())
                .is_some_and(|u| u.status.state() == state)
        })
        .map(|c| c.at)
        .expect("the update was received")
}

struct Run {
    launch_to_starting_ms: f64,
    launch_to_running_ms: f64,
    kill_to_killed_ms: f64,
    peak_rss_kib: u64,
}

/// One launch and kill; LAUNCH is sent `launch_after` the subscription.
async fn one_run(bin: &Path, helper: &Path, launch_after: Duration) -> Run {
    let (emu, sandbox, mut child) = start_executor(bin, &[]).await;
    let task = task_info(
        "bench-task",
        Some(v1::CommandInfo {
            value: Some(helper.display().to_string()),
            shell: Some(false),
            arguments: vec![
                "task-helper".into(),
                "term-exit".into(),
                sandbox.path().join("pid").display().to_string(),
            ],
            ..Default::default()
        }),
    );
    if !launch_after.is_zero() {
        // Not even a zero sleep: it would put a timer turn in front of LAUNCH.
        tokio::time::sleep(launch_after).await;
    }
    let launched = Instant::now();
    emu.launch(task);
    emu.wait_state(
        "bench-task",
        TaskState::TaskRunning,
        Duration::from_secs(10),
    )
    .await
    .expect("running");
    let launch_to_running =
        update_received(&emu, TaskState::TaskRunning).saturating_duration_since(launched);
    let launch_to_starting =
        update_received(&emu, TaskState::TaskStarting).saturating_duration_since(launched);
    // Let the task settle, then read the executor's peak RSS while it runs.
    for _ in 0..200 {
        if sandbox.path().join("pid").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let peak_rss_kib = vm_hwm_kib(child.id()).unwrap_or(0);
    let killed = Instant::now();
    emu.kill("bench-task", None);
    emu.wait_state("bench-task", TaskState::TaskKilled, Duration::from_secs(10))
        .await
        .expect("killed");
    let kill_to_killed =
        update_received(&emu, TaskState::TaskKilled).saturating_duration_since(killed);
    let _ = child.wait();
    Run {
        launch_to_starting_ms: launch_to_starting.as_secs_f64() * 1e3,
        launch_to_running_ms: launch_to_running.as_secs_f64() * 1e3,
        kill_to_killed_ms: kill_to_killed.as_secs_f64() * 1e3,
        peak_rss_kib,
    }
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

fn line_count(path: &std::path::Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
}

/// Waits until `path` has at least `n` lines.
async fn wait_lines(path: &std::path::Path, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = line_count(path);
        if count >= n {
            return count;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {n} probes arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Executor CPU milliseconds per 1,000 HTTP health-check probes.
async fn http_probe_cpu(bin: &Path, helper: &Path) -> f64 {
    let (emu, sandbox, mut child) = start_executor(bin, &[]).await;
    std::fs::write(sandbox.path().join("status"), "200").expect("status file");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut task = task_info(
        "bench-health",
        Some(v1::CommandInfo {
            value: Some(helper.display().to_string()),
            shell: Some(false),
            arguments: vec![
                "task-helper".into(),
                "http-server".into(),
                port.to_string(),
                "status".into(),
            ],
            ..Default::default()
        }),
    );
    task.health_check = Some(v1::HealthCheck {
        r#type: Some(v1::health_check::Type::Http as i32),
        http: Some(v1::health_check::HttpCheckInfo {
            port: u32::from(port),
            path: Some("/health".into()),
            ..Default::default()
        }),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.001),
        timeout_seconds: Some(5.0),
        grace_period_seconds: Some(5.0),
        ..Default::default()
    });
    emu.launch(task);
    let log = sandbox.path().join("requests.log");
    // Warm up (connections, page cache), then three windows of 1,000 probes.
    let mut seen = wait_lines(&log, 200).await;
    let mut per_thousand = Vec::new();
    // SAFETY: sysconf has no preconditions.
    #[allow(clippy::cast_precision_loss)]
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    for _ in 0..3 {
        let before = cpu_ticks(child.id()).expect("executor stat");
        let now = wait_lines(&log, seen + 1000).await;
        let after = cpu_ticks(child.id()).expect("executor stat");
        #[allow(clippy::cast_precision_loss)]
        per_thousand
            .push((after - before) as f64 / ticks_per_sec * 1e3 / ((now - seen) as f64 / 1000.0));
        seen = now;
    }
    emu.kill("bench-health", None);
    emu.wait_state(
        "bench-health",
        TaskState::TaskKilled,
        Duration::from_secs(10),
    )
    .await
    .expect("killed");
    let _ = child.wait();
    median(per_thousand)
}

fn decode_throughput() -> (f64, f64) {
    // A realistic mix: ACKNOWLEDGED events and LAUNCHes with a 4 KiB TaskInfo.
    let mut codec = RecordIoCodec::default();
    let ack = Event {
        r#type: Some(event::Type::Acknowledged as i32),
        acknowledged: Some(event::Acknowledged {
            task_id: v1::TaskId {
                value: "task-1".into(),
            },
            uuid: vec![7; 16],
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let mut task = task_info(
        "task-1",
        Some(v1::CommandInfo {
            value: Some("x".repeat(4096)),
            ..Default::default()
        }),
    );
    task.name = "bench".into();
    let launch = Event {
        r#type: Some(event::Type::Launch as i32),
        launch: Some(event::Launch { task }),
        ..Default::default()
    }
    .encode_to_vec();
    let mut stream = BytesMut::new();
    while stream.len() < 64 * 1024 * 1024 {
        for _ in 0..9 {
            codec.encode(&ack, &mut stream).expect("encode");
        }
        codec.encode(&launch, &mut stream).expect("encode");
    }
    let total = stream.len() as f64;
    let mut framing = Vec::new();
    let mut full = Vec::new();
    for _ in 0..7 {
        let mut buf = stream.clone();
        let start = Instant::now();
        let mut n = 0usize;
        while let Some(record) = codec.decode(&mut buf).expect("decode") {
            n += record.len();
        }
        framing.push(total / start.elapsed().as_secs_f64() / 1e6);
        std::hint::black_box(n);
        let mut buf = stream.clone();
        let start = Instant::now();
        let mut events = 0usize;
        while let Some(record) = codec.decode(&mut buf).expect("decode") {
            if Event::decode(record).is_ok() {
                events += 1;
            }
        }
        full.push(total / start.elapsed().as_secs_f64() / 1e6);
        std::hint::black_box(events);
    }
    (median(framing), median(full))
}

/// One keep-alive HTTP/1 connection to the executor's socket.
struct ApiClient {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl ApiClient {
    async fn connect(socket: &std::path::Path) -> Self {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .expect("connect to the remote API");
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    async fn post(&mut self, path: &str, body: String) -> serde_json::Value {
        use http_body_util::BodyExt;
        self.sender.ready().await.expect("connection ready");
        let request = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let response = self.sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    /// Executes `true` and collects its result.
    async fn round_trip(&mut self) {
        let started = self
            .post(
                "/remote/execute",
                r#"{"command": "true", "shell": false}"#.to_owned(),
            )
            .await;
        let pid = started["pid"].as_i64().expect("pid");
        let result = self
            .post("/remote/task", format!(r#"{{"pid": {pid}}}"#))
            .await;
        assert_eq!(result["exitCode"], 0);
    }
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct RemoteFigures {
    api_per_sec: f64,
    direct_per_sec: f64,
    rss_1k_kib: u64,
    rss_10k_kib: u64,
}

const REMOTE_TIMED: usize = 2000;
const REMOTE_TOTAL: usize = 10_000;

async fn remote_run(bin: &std::path::Path) -> RemoteFigures {
    let (emu, sandbox, mut child) = start_executor(bin, &[]).await;
    emu.launch(task_info(
        "bench-remote",
        Some(v1::CommandInfo {
            value: Some("exec sleep 600".into()),
            ..Default::default()
        }),
    ));
    emu.wait_state(
        "bench-remote",
        TaskState::TaskRunning,
        Duration::from_secs(10),
    )
    .await
    .expect("running");
    let socket = sandbox.path().join("executor.sock");
    for _ in 0..500 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = ApiClient::connect(&socket).await;
    // Warm-up, then the timed round trips.
    for _ in 0..100 {
        client.round_trip().await;
    }
    let start = Instant::now();
    for _ in 0..REMOTE_TIMED {
        client.round_trip().await;
    }
    let api_per_sec = REMOTE_TIMED as f64 / start.elapsed().as_secs_f64();
    let mut done = 100 + REMOTE_TIMED;
    while done < 1000 {
        client.round_trip().await;
        done += 1;
    }
    let rss_1k_kib = vm_rss_kib(child.id()).unwrap_or(0);
    while done < REMOTE_TOTAL {
        client.round_trip().await;
        done += 1;
    }
    let rss_10k_kib = vm_rss_kib(child.id()).unwrap_or(0);
    emu.kill("bench-remote", None);
    emu.wait_state(
        "bench-remote",
        TaskState::TaskKilled,
        Duration::from_secs(10),
    )
    .await
    .expect("killed");
    let _ = child.wait();
    // The same count of `true`, spawned and collected (pipes, wait) directly.
    let start = Instant::now();
    for _ in 0..REMOTE_TIMED {
        let out = Command::new("true")
            .stdin(Stdio::null())
            .output()
            .expect("spawn true");
        assert!(out.status.success());
    }
    let direct_per_sec = REMOTE_TIMED as f64 / start.elapsed().as_secs_f64();
    RemoteFigures {
        api_per_sec,
        direct_per_sec,
        rss_1k_kib,
        rss_10k_kib,
    }
}

fn main() {
    let dir = release_dir();
    let bin = executor_bin();
    let helper = dir.join("examples").join("task-helper");
    assert!(bin.exists(), "build the release binary first: make bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runs = Vec::new();
    let mut idle_runs = Vec::new();
    let mut probe_cpu = 0.0;
    runtime.block_on(async {
        // One warm-up run (page cache, lazy binding), not counted.
        let _ = one_run(&bin, &helper, Duration::ZERO).await;
        for _ in 0..RUNS {
            runs.push(one_run(&bin, &helper, Duration::ZERO).await);
            idle_runs.push(one_run(&bin, &helper, IDLE_FOR).await);
        }
        probe_cpu = http_probe_cpu(&bin, &helper).await;
    });
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    let (framing, full) = decode_throughput();
    let remote = runtime.block_on(remote_run(&bin));
    let l2s = median(runs.iter().map(|r| r.launch_to_starting_ms).collect());
    let l2r = median(runs.iter().map(|r| r.launch_to_running_ms).collect());
    let idle_l2r = median(idle_runs.iter().map(|r| r.launch_to_running_ms).collect());
    let k2k = median(runs.iter().map(|r| r.kill_to_killed_ms).collect());
    #[allow(clippy::cast_precision_loss)]
    let rss = median(runs.iter().map(|r| r.peak_rss_kib as f64).collect()) / 1024.0;
    #[allow(clippy::cast_precision_loss)]
    let size_mib = size as f64 / 1024.0 / 1024.0;
    println!("mesos-hook-executor benchmarks ({RUNS} runs each, medians)");
    println!(
        "  LAUNCH -> TASK_STARTING     {l2s:>8.3} ms   (the agent sees the launch acknowledged)"
    );
    println!("  LAUNCH -> TASK_RUNNING      {l2r:>8.3} ms   (target < 0.5 ms)");
    println!(
        "    to an idle executor       {idle_l2r:>8.3} ms   (LAUNCH {} ms after SUBSCRIBE)",
        IDLE_FOR.as_millis()
    );
    println!(
        "  KILL -> TASK_KILLED         {k2k:>8.3} ms   (target < 5 ms, task exits on SIGTERM)"
    );
    println!("  executor peak RSS (VmHWM)   {rss:>8.2} MiB  (target < 6 MiB)");
    println!("  stripped release binary     {size_mib:>8.2} MiB  (target < 5 MiB)");
    println!("  RecordIO framing decode     {framing:>8.0} MB/s (target > 500 MB/s)");
    println!("  RecordIO + Event decode     {full:>8.0} MB/s");
    let ratio = remote.api_per_sec / remote.direct_per_sec;
    println!("  remote execute+collect      {:>8.0} /s   (`true`, {REMOTE_TIMED} round trips on one connection)", remote.api_per_sec);
    println!("  direct spawn+collect        {:>8.0} /s   (`true`, same count, std::process::Command::output)", remote.direct_per_sec);
    println!("  remote / direct ratio       {ratio:>8.2}      (target >= 0.5)");
    #[allow(clippy::cast_precision_loss)]
    let (rss1, rss10) = (
        remote.rss_1k_kib as f64 / 1024.0,
        remote.rss_10k_kib as f64 / 1024.0,
    );
    println!("  executor RSS after 1,000    {rss1:>8.2} MiB");
    println!(
        "  executor RSS after 10,000   {rss10:>8.2} MiB  (bounded: retained results are capped)"
    );
    println!("  executor CPU / 1k HTTP probes {probe_cpu:>6.1} ms   (user+system, 1 ms interval, local server)");
}
