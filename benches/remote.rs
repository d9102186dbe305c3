//! `make bench`, remote API under load and abuse (docs/remote-limits.md): the
//! release executor binary against the in-process agent emulator, default
//! remote settings, figures over several runs on a noisy 2-core machine.
//!
//! - Latency of `GET /remote/status` for an allowed client (one keep-alive
//!   connection) while 400 idle connections are open on the same socket:
//!   median and p99 of 1,000 requests per run, medians over the runs.
//! - Executor CPU (user + system, `/proc/<pid>/stat`) while two commands
//!   (`yes`) write unbounded output past the capture cap: % of one core over
//!   a 5 s window per run.
//! - 500 concurrent executes of `true` (each on its own connection, then
//!   `GET /remote/task/{pid}?wait=60`): time until all returned a result.

mod common;

use common::{executor_bin, median, start_executor};
use std::{
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use mesos_hook_executor::{
    emulator::{task_info, AgentEmulator},
    proto::v1::{self, TaskState},
};

const RUNS: usize = 5;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A release executor with a running task and its API up.
struct Running {
    emu: AgentEmulator,
    _sandbox: tempfile::TempDir,
    child: Child,
    socket: PathBuf,
}

async fn start(bin: &Path) -> Running {
    let (emu, sandbox, child) = start_executor(bin, &[]).await;
    emu.launch(task_info(
        "bench",
        Some(v1::CommandInfo {
            value: Some("exec sleep 600".into()),
            ..Default::default()
        }),
    ));
    emu.wait_state("bench", TaskState::TaskRunning, Duration::from_secs(10))
        .await
        .expect("running");
    let socket = sandbox.path().join("executor.sock");
    for _ in 0..500 {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        emu,
        _sandbox: sandbox,
        child,
        socket,
    }
}

impl Running {
    async fn stop(mut self) {
        self.emu.kill("bench", None);
        self.emu
            .wait_state("bench", TaskState::TaskKilled, Duration::from_secs(10))
            .await
            .expect("killed");
        let _ = self.child.wait();
    }
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

async fn connect(socket: &Path) -> Sender {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn call(
    sender: &mut Sender,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    sender.ready().await.expect("ready");
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime: fields 14 and 15 (11 and 12 after the comm).
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

/// (median ms, p99 ms) of `GET /remote/status` with 400 idle connections open.
async fn status_latency(bin: &Path) -> (f64, f64) {
    let api = start(bin).await;
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(
            tokio::net::UnixStream::connect(&api.socket)
                .await
                .expect("idle"),
        );
    }
    let mut client = connect(&api.socket).await;
    for _ in 0..50 {
        call(&mut client, "GET", "/remote/status", "").await;
    }
    let mut ms = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        let (status, _) = call(&mut client, "GET", "/remote/status", "").await;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200);
    }
    drop(idle);
    api.stop().await;
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.99))
}

/// % of one core the executor uses while two commands write without end.
async fn unbounded_output_cpu(bin: &Path) -> f64 {
    let api = start(bin).await;
    let mut client = connect(&api.socket).await;
    let mut pids = Vec::new();
    for _ in 0..2 {
        let (status, v) = call(
            &mut client,
            "POST",
            "/remote/execute",
            r#"{"command": "yes", "shell": false}"#,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        pids.push(v["pid"].as_i64().expect("pid"));
    }
    // Past the cap within the first second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = cpu_ticks(api.child.id());
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let used = (cpu_ticks(api.child.id()) - before) as f64 / hz;
    let share = used / t.elapsed().as_secs_f64() * 100.0;
    for pid in pids {
        let (status, v) = call(&mut client, "DELETE", &format!("/remote/task/{pid}"), "").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["stdoutTruncated"], true, "{v}");
    }
    api.stop().await;
    share
}

/// Seconds until 500 concurrent executes of `true` all returned results.
async fn burst(bin: &Path) -> f64 {
    let api = start(bin).await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let socket = api.socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&socket).await;
            let (status, v) = call(
                &mut c,
                "POST",
                "/remote/execute",
                r#"{"command": "true", "shell": false}"#,
            )
            .await;
            assert_eq!(status, 200, "{v}");
            let pid = v["pid"].as_i64().expect("pid");
            let (status, v) = call(&mut c, "GET", &format!("/remote/task/{pid}?wait=60"), "").await;
            assert_eq!((status, v["exitCode"].as_i64()), (200, Some(0)), "{v}");
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let secs = t.elapsed().as_secs_f64();
    api.stop().await;
    secs
}

fn main() {
    let bin = executor_bin();
    assert!(bin.exists(), "build the release binary first: make bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut p50, mut p99, mut cpu, mut all) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (a, b) = runtime.block_on(status_latency(&bin));
        p50.push(a);
        p99.push(b);
        cpu.push(runtime.block_on(unbounded_output_cpu(&bin)));
        all.push(runtime.block_on(burst(&bin)));
    }
    println!("remote API under load ({RUNS} runs; medians; loaded 2-core machine)");
    println!(
        "  GET /remote/status, 400 idle connections open: median {:.2} ms, p99 {:.2} ms   (target p99 < 50 ms)",
        median(p50),
        median(p99)
    );
    println!(
        "  executor CPU, two commands writing unbounded output: {:.1} % of one core   (target < 5 %)",
        median(cpu)
    );
    println!(
        "  500 concurrent executes of `true`, all results back: {:.2} s",
        median(all)
    );
}
