//! A real Mesos master and agent on 127.0.0.1, started from a Mesos install
//! directory (`bin/`, `libexec/mesos/`, `lib/`) with the flags of
//! `../shared/mesos/mesos-local`, and everything needed to find, restart and
//! clean up after them.
//!
//! Each daemon runs in its own session (so its helpers die with it) and gets
//! SIGKILL if the thread that started it dies (`PR_SET_PDEATHSIG`), so a
//! crashed suite leaves no master or agent behind. Executors and tasks are not
//! the agent's children (the launcher starts them in their own sessions, which
//! is what lets them survive an agent restart): [`Cluster::drop`] finds them by
//! their working directory and environment under the cluster's directory and
//! kills them.

use std::{
    fs,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};

/// How long the master and the agent may take to come up (an unoptimised
/// build: some seconds on a loaded machine).
const START_LIMIT: Duration = Duration::from_secs(120);
/// Time limit of one HTTP request to a daemon.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Finds the Mesos install directory: `$MESOS_HOME`, else `<repo>/../shared/mesos`.
/// Either may be an install directory (with `bin/mesos-master`) or the bundle
/// directory holding the `mesos-local` script, whose `--home` unpacks it (and, as
/// root, installs its runtime libraries) and prints the install directory.
pub fn find_mesos() -> Result<PathBuf, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (origin, dir) = match std::env::var_os("MESOS_HOME") {
        Some(home) if !home.is_empty() => ("MESOS_HOME", PathBuf::from(home)),
        _ => (
            "<repo>/../shared/mesos",
            repo.join("..").join("shared").join("mesos"),
        ),
    };
    if dir.join("bin").join("mesos-master").is_file() {
        return Ok(dir);
    }
    let script = dir.join("mesos-local");
    if script.is_file() {
        let out = Command::new(&script)
            .arg("--home")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} --home failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let home = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        return Ok(PathBuf::from(home));
    }
    Err(format!(
        "no Mesos at {} ({origin}): neither bin/mesos-master nor mesos-local there",
        dir.display()
    ))
}

/// A free loopback port (bound, read, released).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("reserve a port: {e}"))
}

/// A daemon started in its own session, killed (whole session) on drop.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn spawn(program: &Path, args: &[String], log: &Path) -> Result<Self, String> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("LIBPROCESS_IP", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", program.display()))?;
        Ok(Self { child })
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM to the daemon (as `systemctl stop` would), SIGKILL to its session
    /// if it has not exited within `grace`; always reaped.
    fn stop(&mut self, grace: Duration) {
        let _ = kill(self.pid(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = killpg(self.pid(), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// One master and one agent.
pub struct Cluster {
    pub dir: PathBuf,
    pub master: String,
    pub agent: String,
    agent_bin: PathBuf,
    agent_args: Vec<String>,
    master_daemon: Option<Daemon>,
    agent_daemon: Option<Daemon>,
    client: reqwest::Client,
    /// Keep `dir` (logs, sandboxes) after the cluster stops.
    pub keep: bool,
}

impl Cluster {
    /// Starts a master and an agent under `dir`. With `dropin`, `dropin_bin` is
    /// the agent's `mesos-executor` (the operator's drop-in replacement of the
    /// command executor); `executor_env` becomes the agent's
    /// `--executor_environment_variables`; `ports` is its port range
    /// (`[begin-end]`).
    pub async fn start(
        home: &Path,
        dir: PathBuf,
        dropin_bin: Option<&Path>,
        executor_env: &serde_json::Value,
        ports: &str,
    ) -> Result<Self, String> {
        for sub in [
            "master",
            "agent",
            "runtime",
            "fetch-cache",
            "logs",
            "launcher",
        ] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let libexec = home.join("libexec").join("mesos");
        for entry in fs::read_dir(&libexec).map_err(|e| format!("{}: {e}", libexec.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink(entry.path(), dir.join("launcher").join(entry.file_name()))
                .map_err(|e| format!("launcher dir: {e}"))?;
        }
        if let Some(bin) = dropin_bin {
            let target = dir.join("launcher").join("mesos-executor");
            fs::remove_file(&target).map_err(|e| format!("{}: {e}", target.display()))?;
            std::os::unix::fs::symlink(bin, &target).map_err(|e| format!("drop-in: {e}"))?;
        }
        let master_port = free_port()?;
        let agent_port = free_port()?;
        let master = format!("127.0.0.1:{master_port}");
        let agent = format!("127.0.0.1:{agent_port}");
        let path = |p: &str| dir.join(p).display().to_string();
        let master_args = vec![
            "--ip=127.0.0.1".to_owned(),
            "--hostname=127.0.0.1".to_owned(),
            format!("--port={master_port}"),
            format!("--work_dir={}", path("master")),
            "--registry=in_memory".to_owned(),
            "--allocation_interval=200ms".to_owned(),
        ];
        let agent_args = vec![
            format!("--master={master}"),
            "--ip=127.0.0.1".to_owned(),
            "--hostname=127.0.0.1".to_owned(),
            format!("--port={agent_port}"),
            format!("--work_dir={}", path("agent")),
            format!("--runtime_dir={}", path("runtime")),
            format!("--fetcher_cache_dir={}", path("fetch-cache")),
            format!("--launcher_dir={}", path("launcher")),
            "--launcher=posix".to_owned(),
            "--isolation=posix/cpu,posix/mem".to_owned(),
            "--containerizers=mesos".to_owned(),
            "--no-systemd_enable_support".to_owned(),
            "--http_command_executor".to_owned(),
            format!("--resources=cpus:4;mem:4096;disk:4096;ports:{ports}"),
            format!("--executor_environment_variables={executor_env}"),
        ];
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let master_daemon = Daemon::spawn(
            &home.join("bin").join("mesos-master"),
            &master_args,
            &dir.join("logs").join("master.log"),
        )?;
        let mut cluster = Self {
            dir,
            master,
            agent,
            agent_bin: home.join("bin").join("mesos-agent"),
            agent_args,
            master_daemon: Some(master_daemon),
            agent_daemon: None,
            client,
            keep: crate::keep_dirs(),
        };
        cluster.start_agent().await?;
        Ok(cluster)
    }

    /// Starts the agent (again: same flags, work dir and port, so it recovers
    /// its checkpointed executors) and waits until the master counts it active.
    pub async fn start_agent(&mut self) -> Result<(), String> {
        let daemon = Daemon::spawn(
            &self.agent_bin,
            &self.agent_args,
            &self.dir.join("logs").join("agent.log"),
        )?;
        self.agent_daemon = Some(daemon);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if self.active_agents().await == Some(1) {
                return Ok(());
            }
            for (what, daemon) in [
                ("master", &mut self.master_daemon),
                ("agent", &mut self.agent_daemon),
            ] {
                if !daemon.as_mut().is_some_and(Daemon::alive) {
                    return Err(format!(
                        "the {what} exited; see {}",
                        self.dir.join("logs").display()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent was not active at the master within {START_LIMIT:?}; see {}",
                    self.dir.join("logs").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the agent (SIGTERM, as an operator restarting it would) and waits
    /// until the master no longer counts it active.
    pub async fn stop_agent(&mut self) -> Result<(), String> {
        if let Some(mut daemon) = self.agent_daemon.take() {
            daemon.stop(Duration::from_secs(20));
        }
        let deadline = Instant::now() + START_LIMIT;
        while self.active_agents().await != Some(0) {
            if Instant::now() > deadline {
                return Err("the master still counts the stopped agent active".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn active_agents(&self) -> Option<usize> {
        let state = self
            .get_json(&format!("http://{}/slaves", self.master))
            .await
            .ok()?;
        Some(
            state["slaves"]
                .as_array()?
                .iter()
                .filter(|a| a["active"].as_bool() == Some(true))
                .count(),
        )
    }

    /// GET a JSON document (a daemon's state endpoints).
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
    }

    /// The master's `/tasks`.
    pub async fn master_tasks(&self) -> Result<serde_json::Value, String> {
        self.get_json(&format!("http://{}/tasks", self.master))
            .await
    }

    /// The agent's work directory.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// The agent log so far.
    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.join("logs").join("agent.log")).unwrap_or_default()
    }

    /// `<work_dir>/slaves/<agent>/frameworks/<framework>`: every sandbox of a
    /// framework lies below it.
    pub fn framework_dir(&self, agent_id: &str, framework_id: &str) -> PathBuf {
        self.work_dir()
            .join("slaves")
            .join(agent_id)
            .join("frameworks")
            .join(framework_id)
    }

    /// Keeps the logs of a failing scenario: copies the master and agent logs
    /// so far (the cluster is shared, later scenarios append to them) into
    /// `failed/<scenario>/`, and keeps the whole directory.
    pub fn keep_logs(&mut self, scenario: &str) -> PathBuf {
        self.keep = true;
        let dest = self.dir.join("failed").join(scenario);
        let _ = fs::create_dir_all(&dest);
        for log in ["master.log", "agent.log"] {
            let _ = fs::copy(self.dir.join("logs").join(log), dest.join(log));
        }
        dest
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent_daemon.take() {
            agent.stop(Duration::from_secs(10));
        }
        if let Some(mut master) = self.master_daemon.take() {
            master.stop(Duration::from_secs(10));
        }
        // Executors and tasks outlive the agent by design: end them.
        for _ in 0..50 {
            let left = processes_under(&self.dir);
            if left.is_empty() {
                break;
            }
            for (pid, _) in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.keep {
            eprintln!("mesos suite: kept {} (master and agent logs under logs/, per failing scenario under failed/)", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Processes whose working directory, or whose `MESOS_DIRECTORY`/`MESOS_SANDBOX`,
/// lies under `dir` (executors and tasks of sandboxes below it), with their
/// command lines.
pub fn processes_under(dir: &Path) -> Vec<(i32, String)> {
    let Ok(dir) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(me) {
            continue;
        }
        let proc_dir = entry.path();
        let cwd_inside = fs::read_link(proc_dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir));
        let env_inside = fs::read(proc_dir.join("environ")).is_ok_and(|env| {
            env.split(|b| *b == 0).any(|var| {
                let var = String::from_utf8_lossy(var);
                ["MESOS_DIRECTORY=", "MESOS_SANDBOX="].iter().any(|prefix| {
                    var.strip_prefix(prefix)
                        .is_some_and(|v| Path::new(v).starts_with(&dir))
                })
            })
        });
        if cwd_inside || env_inside {
            let cmdline = fs::read(proc_dir.join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            // A zombie (empty cmdline) is gone already, only not yet reaped.
            if !cmdline.is_empty() {
                found.push((pid, cmdline));
            }
        }
    }
    found
}
