//! `make bench` (metrics part): what `GET /metrics` costs, measured on the
//! release executor binary with a running task against the agent emulator,
//! as medians on a noisy 2-core machine.
//!
//! - Scrape latency: one `GET /metrics` over the Unix socket (keep-alive
//!   connection), request to the last byte of the body; median of many.
//! - Executor CPU per hour, idle vs scraped every 10 s. An hour is not run:
//!   the idle CPU is measured over short windows with the task running and
//!   no scrapes, the CPU of one scrape over a burst of back-to-back scrapes,
//!   and both are extrapolated to an hour (idle × 3600 s/window, plus 360
//!   scrapes). CPU time is the sum over the executor's threads of
//!   `/proc/<pid>/task/*/schedstat` (nanoseconds on the CPU), so short
//!   windows still resolve. Target: scraped < 2 × idle.
//! - Stripped release binary size (target < 5 MiB, as `benches/executor.rs`).

mod common;

use common::{median, start_executor};
use std::{
    path::Path,
    time::{Duration, Instant},
};

use mesos_hook_executor::{
    emulator::task_info,
    proto::v1::{self, TaskState},
};

/// Scrapes timed for the latency median.
const SCRAPES: usize = 300;
/// Back-to-back scrapes whose CPU is divided by their count.
const BURST: usize = 300;
/// Idle windows, and how long each lasts.
const IDLE_WINDOWS: usize = 3;
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Nanoseconds the process has spent on a CPU, all threads.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One keep-alive HTTP/1 connection to the executor's socket.
struct ApiClient {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl ApiClient {
    async fn connect(socket: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match tokio::net::UnixStream::connect(socket).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "remote API never came up: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    /// One scrape; returns the body's length.
    async fn scrape(&mut self) -> usize {
        use http_body_util::BodyExt;
        self.sender.ready().await.expect("connection ready");
        let request = hyper::Request::builder()
            .uri("/metrics")
            .header("host", "localhost")
            .body(http_body_util::Empty::new())
            .expect("request");
        let response = self.sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        body.len()
    }
}

struct Figures {
    scrape_us: f64,
    body_bytes: usize,
    idle_ms_per_hour: f64,
    scrape_cpu_us: f64,
}

async fn measure(bin: &Path) -> Figures {
    let (emu, sandbox, mut child) = start_executor(bin, &[]).await;
    emu.launch(task_info(
        "bench-metrics",
        Some(v1::CommandInfo {
            value: Some("exec sleep 600".into()),
            shell: Some(true),
            ..Default::default()
        }),
    ));
    emu.wait_state(
        "bench-metrics",
        TaskState::TaskRunning,
        Duration::from_secs(10),
    )
    .await
    .expect("running");
    let mut client = ApiClient::connect(&sandbox.path().join("executor.sock")).await;
    // Warm-up (first /proc walk, page cache).
    let mut body_bytes = 0;
    for _ in 0..20 {
        body_bytes = client.scrape().await;
    }
    let mut latencies = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let t = Instant::now();
        client.scrape().await;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let pid = child.id();
    let before = cpu_ns(pid);
    for _ in 0..BURST {
        client.scrape().await;
    }
    let scrape_cpu_us = (cpu_ns(pid) - before) as f64 / BURST as f64 / 1e3;
    let mut idle = Vec::new();
    for _ in 0..IDLE_WINDOWS {
        let (t, c) = (Instant::now(), cpu_ns(pid));
        tokio::time::sleep(IDLE_WINDOW).await;
        let ns = (cpu_ns(pid) - c) as f64;
        idle.push(ns / 1e6 * 3600.0 / t.elapsed().as_secs_f64());
    }
    emu.kill("bench-metrics", None);
    emu.wait_state(
        "bench-metrics",
        TaskState::TaskKilled,
        Duration::from_secs(10),
    )
    .await
    .expect("killed");
    let _ = child.wait();
    Figures {
        scrape_us: median(latencies),
        body_bytes,
        idle_ms_per_hour: median(idle),
        scrape_cpu_us,
    }
}

fn main() {
    let bin = common::executor_bin();
    assert!(bin.exists(), "build the release binary first: make bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let f = runtime.block_on(measure(&bin));
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    let scraped = f.idle_ms_per_hour + 360.0 * f.scrape_cpu_us / 1e3;
    let ratio = scraped / f.idle_ms_per_hour.max(f64::MIN_POSITIVE);
    #[allow(clippy::cast_precision_loss)]
    let size_mib = size as f64 / 1024.0 / 1024.0;
    println!("mesos-hook-executor metrics benchmarks (medians)");
    println!(
        "  GET /metrics latency        {:>8.0} us   ({SCRAPES} scrapes, Unix socket, {} byte body)",
        f.scrape_us, f.body_bytes
    );
    println!(
        "  executor CPU per scrape     {:>8.0} us   (mean of {BURST} back-to-back scrapes)",
        f.scrape_cpu_us
    );
    println!(
        "  executor CPU/hour, idle     {:>8.1} ms   (task running; {IDLE_WINDOWS} x {}s windows, extrapolated)",
        f.idle_ms_per_hour,
        IDLE_WINDOW.as_secs()
    );
    println!("  executor CPU/hour, scraped  {scraped:>8.1} ms   (idle + 360 scrapes, every 10 s)");
    println!("  scraped / idle              {ratio:>8.2}      (target < 2)");
    println!("  stripped release binary     {size_mib:>8.2} MiB  ({size} bytes; target < 5 MiB)");
}
