//! `make bench` (part 2): the task output pipeline (docs/logging.md), with the
//! release executor against the agent emulator and a task (awk) writing one
//! million JSON lines to its stdout, medians over several runs:
//!
//! - (a) the default: the task writes straight to the sandbox file;
//! - (b) through the pipeline with rotation only (10MB, 5 kept);
//! - (c) scraping and shipping over TCP to a local sink that keeps up (a
//!   thread reading and counting lines), with entries received out of lines
//!   written;
//!
//! as the task's own write time (how much the pipeline slows the task) and
//! lines per second, with (b)/(a) and (c)/(a); the executor's CPU time per
//! 100k lines shipped (user + system from `/proc/<pid>/stat`, after the sink
//! has everything); and the executor's peak RSS when the sink accepts the
//! connection but never reads (bounded by the queue, 8 MiB by default, plus a
//! constant).

mod common;

use common::{executor_bin, median};
use std::{
    collections::BTreeMap,
    io::Read,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mesos_hook_executor::{
    emulator::{task_info, AgentEmulator, EmulatorOptions},
    proto::v1::{self, Label, Labels, TaskState},
};

const LINES: u64 = 1_000_000;
const RUNS: usize = 5;

fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let mut f = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .skip(11);
    let ticks: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    #[allow(clippy::cast_precision_loss)]
    let ms = ticks as f64 * 1000.0 / hz as f64;
    ms
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A TCP sink counting the lines it receives; `read` false: it accepts and
/// never reads (a stalled Logstash).
fn sink(read: bool) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            if !read {
                held.push(stream);
                continue;
            }
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let lines = memchr::memchr_iter(b'\n', &buf[..n]).count();
                    seen.fetch_add(lines as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, count)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Direct,
    Rotate,
    Ship,
    Stalled,
}

struct Run {
    write_secs: f64,
    received: u64,
    cpu_ms: f64,
    rss_kib: u64,
}

async fn wait_file(path: &Path, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text;
            }
        }
        assert!(Instant::now() < until, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn one_run(bin: &Path, mode: Mode) -> Run {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let sandbox = tempfile::tempdir().expect("sandbox");
    let mut env: BTreeMap<String, String> =
        emu.executor_env_in(sandbox.path()).into_iter().collect();
    env.insert("HOOK_EXECUTOR_LOG_LEVEL".into(), "warn".into());
    let (addr, received) = match mode {
        Mode::Ship => sink(true),
        Mode::Stalled => sink(false),
        _ => (String::new(), Arc::new(AtomicU64::new(0))),
    };
    match mode {
        Mode::Direct => {}
        Mode::Rotate => {
            env.insert("HOOK_EXECUTOR_LOG_ROTATE_SIZE".into(), "10MB".into());
        }
        Mode::Ship | Mode::Stalled => {
            env.insert("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS".into(), addr);
        }
    }
    // As the agent's default container logger: the sandbox files.
    let out = std::fs::File::create(sandbox.path().join("stdout")).expect("stdout");
    let err = std::fs::File::create(sandbox.path().join("stderr")).expect("stderr");
    let mut child: Child = Command::new(bin)
        .env_clear()
        .envs(&env)
        .current_dir(sandbox.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn executor");
    let pid = child.id();
    let script = format!(
        "t0=$(date +%s%N); awk 'BEGIN {{ for (i = 0; i < {LINES}; i++) printf \"{{\\\"level\\\":\\\"info\\\",\\\"msg\\\":\\\"request served\\\",\\\"seq\\\":%d,\\\"path\\\":\\\"/api/v1/items\\\"}}\\n\", i }}'; \
         t1=$(date +%s%N); echo $((t1 - t0)) > write_ns; while [ ! -e done ]; do sleep 0.01; done"
    );
    let mut task = task_info(
        "bench-logs",
        Some(v1::CommandInfo {
            value: Some(script),
            shell: Some(true),
            ..Default::default()
        }),
    );
    if matches!(mode, Mode::Ship | Mode::Stalled) {
        task.labels = Some(Labels {
            labels: vec![Label {
                key: "log-scraping".into(),
                value: Some("logstash".into()),
            }],
        });
    }
    emu.launch(task);
    let ns: f64 = wait_file(&sandbox.path().join("write_ns"), Duration::from_secs(120))
        .await
        .trim()
        .parse()
        .expect("nanoseconds");
    if mode == Mode::Ship {
        // Until the sink has everything, or nothing more comes for 3 s.
        let (mut last, mut since) = (0, Instant::now());
        loop {
            let now = received.load(Ordering::Relaxed);
            if now >= LINES || since.elapsed() > Duration::from_secs(3) {
                break;
            }
            if now != last {
                (last, since) = (now, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else if mode == Mode::Stalled {
        // Let the shipper fill the socket and the queue.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let cpu = cpu_ms(pid);
    let rss = vm_hwm_kib(pid);
    std::fs::write(sandbox.path().join("done"), "").expect("done");
    emu.wait_state(
        "bench-logs",
        TaskState::TaskFinished,
        Duration::from_secs(60),
    )
    .await
    .expect("finished");
    let _ = child.wait();
    if mode == Mode::Rotate {
        assert!(
            sandbox.path().join("stdout.1").exists(),
            "rotation happened"
        );
    }
    Run {
        write_secs: ns / 1e9,
        received: received.load(Ordering::Relaxed),
        cpu_ms: cpu,
        rss_kib: rss,
    }
}

fn main() {
    let bin = executor_bin();
    assert!(bin.exists(), "build the release binary first: make bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut results: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    runtime.block_on(async {
        let _ = one_run(&bin, Mode::Direct).await; // warm-up
        for _ in 0..RUNS {
            // Alternating, so load on the machine hits every mode alike.
            for (name, mode) in [("a", Mode::Direct), ("b", Mode::Rotate), ("c", Mode::Ship)] {
                results
                    .entry(name)
                    .or_default()
                    .push(one_run(&bin, mode).await);
            }
        }
        results
            .entry("stalled")
            .or_default()
            .push(one_run(&bin, Mode::Stalled).await);
    });
    #[allow(clippy::cast_precision_loss)]
    let lines = LINES as f64;
    let secs = |k: &str| median(results[k].iter().map(|r| r.write_secs).collect());
    let (a, b, c) = (secs("a"), secs("b"), secs("c"));
    #[allow(clippy::cast_precision_loss)]
    let received = median(results["c"].iter().map(|r| r.received as f64).collect());
    let cpu_c = median(results["c"].iter().map(|r| r.cpu_ms).collect());
    let cpu_a = median(results["a"].iter().map(|r| r.cpu_ms).collect());
    let stalled = &results["stalled"][0];
    println!("task output pipeline ({RUNS} runs each, medians; a task writing {LINES} JSON lines with awk)");
    println!(
        "  (a) straight to the sandbox file:   {a:.3} s  {:>10.0} lines/s",
        lines / a
    );
    println!("  (b) pipeline, rotation only:        {b:.3} s  {:>10.0} lines/s  (b)/(a) = {:.2}  target >= 0.8", lines / b, a / b);
    println!("  (c) scraping + TCP shipping:        {c:.3} s  {:>10.0} lines/s  (c)/(a) = {:.2}  target >= 0.5", lines / c, a / c);
    println!(
        "      entries received by the sink:   {received:.0} of {LINES} ({:.1}%)",
        received * 100.0 / lines
    );
    if received > 0.0 {
        println!(
            "      executor CPU per 100k shipped:  {:.0} ms (whole run {cpu_c:.0} ms; (a) for comparison: {cpu_a:.0} ms)",
            cpu_c * 100_000.0 / received
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let rss_mib = stalled.rss_kib as f64 / 1024.0;
    println!(
        "  executor peak RSS, sink not reading: {rss_mib:.1} MiB (queue bound 8 MiB + constant); task write time {:.3} s",
        stalled.write_secs
    );
}
