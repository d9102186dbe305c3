//! What every `make bench` program shares: medians, where the release
//! binaries are, and a release executor subscribed to a fresh agent
//! emulator. Each bench uses a part of it.
#![allow(dead_code, reason = "each bench program uses a part of this module")]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use mesos_hook_executor::emulator::{AgentEmulator, EmulatorOptions};

/// The middle value (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The directory of the release binaries the bench runs (`target/release`).
pub fn release_dir() -> PathBuf {
    let mut dir = std::env::current_exe().expect("bench exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The executor binary the figures are taken with: the release build, or
/// `BENCH_EXECUTOR` when set (another build, for interleaved before/after
/// runs on a noisy machine). Made absolute: a bench may start it in
/// another working directory (the logs bench starts it in its sandbox).
pub fn executor_bin() -> PathBuf {
    let bin = std::env::var_os("BENCH_EXECUTOR")
        .map_or_else(|| release_dir().join("mesos-hook-executor"), PathBuf::from);
    std::path::absolute(&bin).unwrap_or(bin)
}

/// The release executor `bin` subscribed to a fresh emulator, in a
/// temporary sandbox, logging only warnings, with `extra` variables; its
/// stdout and stderr are discarded.
pub async fn start_executor(
    bin: &Path,
    extra: &[(&str, &str)],
) -> (AgentEmulator, tempfile::TempDir, Child) {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let sandbox = tempfile::tempdir().expect("sandbox");
    let mut env: BTreeMap<String, String> =
        emu.executor_env_in(sandbox.path()).into_iter().collect();
    env.insert("HOOK_EXECUTOR_LOG_LEVEL".into(), "warn".into());
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let child = Command::new(bin)
        .env_clear()
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn executor");
    emu.wait_subscribed(1, Duration::from_secs(10))
        .await
        .expect("subscribed");
    (emu, sandbox, child)
}
