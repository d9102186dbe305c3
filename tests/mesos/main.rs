//! The real-Mesos suite: the executor binary under a real Apache Mesos master
//! and agent, driven by a small v1 framework (`scheduler`). Run it with
//! `make test-mesos` (or `cargo test --test mesos`); see docs/real-mesos.md.
//!
//! Its own harness (`harness = false`): the scenarios share a master and an
//! agent per launch shape (Mesos starts slowly), so they run one after another
//! on each cluster, the two clusters side by side; each scenario uses its own
//! framework. The clusters are stopped and every executor and task process
//! killed even when a scenario fails or panics; a failing scenario's master and
//! agent logs are kept and their path printed. Ends with one line per scenario
//! (result, time) and exits non-zero if any failed. Filter with
//! `cargo test --test mesos -- WORD…` (substrings of `shape/scenario`).

mod cluster;
mod scenarios;
mod scheduler;

/// The generated Mesos types: ours (`v1`) and, inside it as upstream nests
/// the packages, the scheduler subset built for this suite only.
mod proto {
    pub mod v1 {
        pub use mesos_hook_executor::proto::v1::*;
        /// Package `mesos.v1.scheduler` (proto/mesos/v1/scheduler/scheduler.proto);
        /// the generated code names the `mesos.v1` types as `super::…`.
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod scheduler {
            include!(concat!(env!("OUT_DIR"), "/scheduler/mesos.v1.scheduler.rs"));
        }
    }
    pub use v1::scheduler;
}

use std::{
    panic::AssertUnwindSafe,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use scenarios::{Scenario, Shape, SCENARIOS};

/// One scenario's outcome.
struct Outcome {
    label: String,
    result: Result<(), String>,
    took: Duration,
}

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let started = Instant::now();
    let home = match cluster::find_mesos() {
        Ok(home) => home,
        Err(why) => {
            eprintln!("real-Mesos suite: cannot run: {why}");
            return ExitCode::FAILURE;
        }
    };
    println!("real-Mesos suite: Mesos from {}", home.display());
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    sweep_interrupted_runs(&tmp);
    let base = tmp.join(format!("mesos-suite-{}", std::process::id()));
    let fixtures = match scenarios::Fixtures::create(&base) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("real-Mesos suite: fixtures: {e}");
            return ExitCode::FAILURE;
        }
    };
    let wanted = |shape: Shape, s: &Scenario| {
        let label = format!("{}/{}", shape.name(), s.name);
        filters.is_empty() || filters.iter().any(|f| label.contains(f.as_str()))
    };
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let runs: Vec<_> = [Shape::Marathon, Shape::DropIn]
            .into_iter()
            .map(|shape| {
                let list: Vec<&'static Scenario> = SCENARIOS
                    .iter()
                    .filter(|s| s.shapes.contains(&shape) && wanted(shape, s))
                    .collect();
                let (home, base, fixtures) = (&home, &base, &fixtures);
                scope.spawn(move || run_shape(shape, &list, home, base, fixtures))
            })
            .collect();
        runs.into_iter()
            .flat_map(|r| {
                r.join().unwrap_or_else(|_| {
                    vec![Outcome {
                        label: "runner".into(),
                        result: Err("the runner thread panicked".into()),
                        took: Duration::ZERO,
                    }]
                })
            })
            .collect()
    });
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    println!();
    println!("real-Mesos suite, scenario results:");
    for o in &outcomes {
        match &o.result {
            Ok(()) => println!("  ok      {:<40} {:>6.1} s", o.label, o.took.as_secs_f64()),
            Err(e) => println!(
                "  FAILED  {:<40} {:>6.1} s  {e}",
                o.label,
                o.took.as_secs_f64()
            ),
        }
    }
    let total = started.elapsed().as_secs_f64();
    // libtest's summary line, so tools that count test results count these.
    println!(
        "test result: {}. {} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {total:.2}s",
        if failed == 0 { "ok" } else { "FAILED" },
        outcomes.len() - failed
    );
    if failed == 0 && !outcomes.is_empty() {
        if keep_dirs() {
            println!(
                "real-Mesos suite: kept {} (MESOS_SUITE_KEEP)",
                base.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&base);
        }
        println!(
            "real-Mesos suite: PASSED ({} scenarios in {total:.0} s)",
            outcomes.len()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "real-Mesos suite: FAILED ({failed} of {} scenarios failed, {total:.0} s; logs under {})",
            outcomes.len(),
            base.display()
        );
        ExitCode::FAILURE
    }
}

/// Runs `list` on one cluster for `shape`, one scenario after another.
fn run_shape(
    shape: Shape,
    list: &[&'static Scenario],
    home: &std::path::Path,
    base: &std::path::Path,
    fixtures: &scenarios::Fixtures,
) -> Vec<Outcome> {
    if list.is_empty() {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![failure(shape, "cluster", e.to_string())],
    };
    let started = Instant::now();
    let executor_env = match fixtures.executor_env(shape) {
        Ok(env) => env,
        Err(e) => return vec![failure(shape, "cluster", e)],
    };
    let mut cluster = match runtime.block_on(cluster::Cluster::start(
        home,
        base.join(shape.name()),
        fixtures.dropin_bin(shape),
        &executor_env,
        scenarios::Fixtures::ports(shape),
    )) {
        Ok(c) => c,
        Err(e) => return vec![failure(shape, "cluster start", e)],
    };
    println!(
        "real-Mesos suite: {} cluster up in {:.1} s (master {}, agent {})",
        shape.name(),
        started.elapsed().as_secs_f64(),
        cluster.master,
        cluster.agent
    );
    let mut outcomes = Vec::new();
    for scenario in list {
        let label = format!("{}/{}", shape.name(), scenario.name);
        let began = Instant::now();
        let mut ctx = scenarios::Ctx::new(&mut cluster, shape, scenario.name, fixtures);
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on((scenario.run)(&mut ctx))
        }));
        let mut result = run.unwrap_or_else(|panic| {
            Err(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            ))
        });
        // Clean up the scenario's frameworks whatever happened, then check
        // that no executor or task process of theirs is left.
        if let Err(e) = runtime.block_on(ctx.finish()) {
            if result.is_ok() {
                result = Err(e);
            }
        }
        drop(ctx);
        let took = began.elapsed();
        if let Err(e) = &result {
            let kept = cluster.keep_logs(scenario.name);
            eprintln!(
                "{label}: FAILED: {e}\n  master and agent logs: {}",
                kept.display()
            );
        } else {
            println!("{label}: ok ({:.1} s)", took.as_secs_f64());
        }
        outcomes.push(Outcome {
            label,
            result,
            took,
        });
    }
    outcomes
}

/// Kills what an interrupted earlier run left behind. A run killed outright
/// (SIGKILL, a CI timeout) cannot clean up: its master and agent die with it
/// (`PR_SET_PDEATHSIG`), but executors and tasks are not their children and
/// would keep running; they are found under that run's directory, whose
/// suite process is gone.
fn sweep_interrupted_runs(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("mesos-suite-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue; // a run in progress (or a recycled pid): leave it
        }
        let left = cluster::processes_under(&entry.path());
        for (pid, cmd) in &left {
            eprintln!("real-Mesos suite: killing {pid} ({cmd}), left by an interrupted run");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `MESOS_SUITE_KEEP=1` keeps every cluster directory (logs, sandboxes) even
/// when all scenarios pass.
pub fn keep_dirs() -> bool {
    std::env::var_os("MESOS_SUITE_KEEP").is_some_and(|v| v == "1")
}

fn failure(shape: Shape, what: &str, why: String) -> Outcome {
    Outcome {
        label: format!("{}/{what}", shape.name()),
        result: Err(why),
        took: Duration::ZERO,
    }
}
