//! Shared test fixtures: the real executor binary started against the in-repo
//! agent emulator, in a temporary sandbox, plus polling helpers and orphan
//! checks. Every wait is bounded; nothing sleeps for a fixed time to "let
//! things happen".

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use mesos_hook_executor::{
    emulator::{AgentEmulator, EmulatorOptions},
    proto::v1::{self, TaskState},
};

/// Generous upper bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(20);

/// Path of a binary built by cargo for this test run.
pub fn task_helper() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test exe path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join("task-helper")
}

/// A running executor process with its sandbox.
pub struct Executor {
    pub child: Option<Child>,
    pub sandbox: tempfile::TempDir,
    pub pid: i32,
}

impl Executor {
    /// Starts the executor binary with the emulator's environment plus `extra`.
    pub fn start(emu: &AgentEmulator, extra: &[(&str, &str)]) -> Self {
        let sandbox = tempfile::Builder::new()
            .prefix("sandbox-")
            .tempdir()
            .expect("tempdir");
        Self::start_in(emu, extra, sandbox)
    }

    pub fn start_in(
        emu: &AgentEmulator,
        extra: &[(&str, &str)],
        sandbox: tempfile::TempDir,
    ) -> Self {
        let mut env: BTreeMap<String, String> =
            emu.executor_env_in(sandbox.path()).into_iter().collect();
        env.insert("HOOK_EXECUTOR_LOG_LEVEL".into(), "debug".into());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        let stdout =
            mesos_hook_executor::emulator::open_sandbox_output(&sandbox.path().join("stdout"))
                .expect("stdout file");
        let stderr =
            mesos_hook_executor::emulator::open_sandbox_output(&sandbox.path().join("stderr"))
                .expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_mesos-hook-executor"))
            .env_clear()
            .envs(&env)
            .current_dir(sandbox.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn executor");
        let pid = i32::try_from(child.id()).expect("pid");
        Self {
            child: Some(child),
            sandbox,
            pid,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.sandbox.path().join(name)
    }

    /// The executor's log so far (for assertions and failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.path("stdout")).unwrap_or_default()
    }

    /// Waits for the executor to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = poll(timeout, || {
            self.child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
        })
        .await;
        status.unwrap_or_else(|| {
            panic!(
                "executor did not exit within {timeout:?}; log:\n{}",
                self.log()
            )
        })
    }

    /// Whether the executor process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Reads a pid a task wrote into the sandbox, waiting for it to appear.
    pub async fn read_pid(&self, name: &str) -> i32 {
        let path = self.path(name);
        let pid = poll(SOON, || {
            std::fs::read_to_string(&path).ok()?.trim().parse().ok()
        })
        .await;
        pid.unwrap_or_else(|| panic!("pid file {name} never appeared; log:\n{}", self.log()))
    }

    /// Waits until `name` exists in the sandbox and returns its contents.
    pub async fn read_file(&self, name: &str) -> String {
        let path = self.path(name);
        let text = poll(SOON, || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| !t.is_empty())
        })
        .await;
        text.unwrap_or_else(|| panic!("file {name} never appeared; log:\n{}", self.log()))
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // On a failed test, leave nothing running behind.
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
            }
        }
    }
}

/// Polls `f` every 20 ms until it yields a value or `timeout` passes (`None`).
pub async fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until none of `pids` is alive; panics naming the survivors.
pub async fn assert_gone(pids: &[i32]) {
    let start = Instant::now();
    loop {
        let survivors: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if survivors.is_empty() {
            return;
        }
        if start.elapsed() > Duration::from_secs(5) {
            for p in &survivors {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("processes survived: {survivors:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn emulator(opts: EmulatorOptions) -> AgentEmulator {
    AgentEmulator::start(opts).await.expect("emulator starts")
}

pub fn shell_task(id: &str, command: &str) -> v1::TaskInfo {
    mesos_hook_executor::emulator::task_info(
        id,
        Some(v1::CommandInfo {
            value: Some(command.into()),
            shell: Some(true),
            ..Default::default()
        }),
    )
}

/// Writes `content` to `dir/name`, executable (0755); returns its path.
pub fn write_executable(dir: &Path, name: &str, content: &[u8]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write the program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

pub fn argv_task(id: &str, value: &str, args: &[&str]) -> v1::TaskInfo {
    mesos_hook_executor::emulator::task_info(
        id,
        Some(v1::CommandInfo {
            value: Some(value.into()),
            shell: Some(false),
            arguments: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        }),
    )
}

pub fn kill_policy(d: Duration) -> v1::KillPolicy {
    v1::KillPolicy {
        grace_period: Some(v1::DurationInfo {
            nanoseconds: i64::try_from(d.as_nanos()).expect("fits"),
        }),
    }
}

/// The message of the last update for `task_id` in `state`.
pub fn status_in(emu: &AgentEmulator, task_id: &str, state: TaskState) -> Option<v1::TaskStatus> {
    emu.updates()
        .into_iter()
        .rev()
        .find(|s| s.task_id.value == task_id && s.state() == state)
}

pub fn label(status: &v1::TaskStatus, key: &str) -> Option<String> {
    status
        .labels
        .as_ref()?
        .labels
        .iter()
        .find(|l| l.key == key)
        .and_then(|l| l.value.clone())
}

pub async fn wait_state(
    emu: &AgentEmulator,
    exec: &Executor,
    task_id: &str,
    state: TaskState,
) -> v1::TaskStatus {
    match emu.wait_state(task_id, state, SOON).await {
        Ok(s) => s,
        Err(e) => panic!(
            "{e}\nstates so far: {:?}\nexecutor log:\n{}",
            emu.states(task_id),
            exec.log()
        ),
    }
}

pub fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display())
}

// ---- Remote execution API: a small hyper client over the Unix socket. ----

/// One answer from the remote API.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Opens an HTTP/1 connection on `socket` (long paths through /proc/self/fd).
pub async fn api_connect(
    socket: &Path,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
    let short = mesos_hook_executor::remote::socket::ShortPath::new(socket)?;
    let stream = tokio::net::UnixStream::connect(short.path()).await?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

fn api_request(
    method: &str,
    path: &str,
    body: Option<&str>,
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(http_body_util::Full::new(bytes::Bytes::from(
        body.unwrap_or_default().to_owned(),
    )))
    .expect("request")
}

/// Sends one request on a fresh connection and reads the whole answer.
pub async fn api(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Answer {
    use http_body_util::BodyExt;
    let mut sender = api_connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let response = sender
        .send_request(api_request(method, path, body))
        .await
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = tokio::time::timeout(SOON, response.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `api` with a JSON answer.
pub async fn api_json(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let a = api(socket, method, path, body).await;
    (a.status, a.json())
}

/// Starts a command and returns its pid.
pub async fn remote_execute(socket: &Path, body: &str) -> i32 {
    let (status, v) = api_json(socket, "POST", "/remote/execute", Some(body)).await;
    assert_eq!(status, 200, "{v}");
    i32::try_from(v["pid"].as_i64().expect("pid")).expect("pid fits")
}

/// Waits for a command's result (compatible call: blocks until it ends).
pub async fn remote_result(socket: &Path, pid: i32) -> serde_json::Value {
    let (status, v) = api_json(
        socket,
        "POST",
        "/remote/task",
        Some(&format!(r#"{{"pid": {pid}}}"#)),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the API answers on `socket`.
pub async fn wait_api(exec: &Executor, socket: &Path) {
    let start = Instant::now();
    while api_connect(socket).await.is_err() {
        assert!(
            start.elapsed() < SOON,
            "the remote API never came up at {}; log:\n{}",
            socket.display(),
            exec.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Parses a complete SSE body into (event, data) pairs.
pub fn sse_events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).expect("SSE data is JSON"));
                }
            }
            Some((event?, data?))
        })
        .collect()
}

/// A real task that runs until killed, so the executor stays up.
pub fn sleeping_task(id: &str) -> v1::TaskInfo {
    shell_task(id, "exec sleep 600")
}

/// The executor with a running task and its API up.
pub async fn executor_with_api(emu: &AgentEmulator, extra: &[(&str, &str)]) -> (Executor, PathBuf) {
    let exec = Executor::start(emu, extra);
    let socket = exec.path("executor.sock");
    emu.launch(sleeping_task("t-remote"));
    wait_state(emu, &exec, "t-remote", TaskState::TaskRunning).await;
    wait_api(&exec, &socket).await;
    (exec, socket)
}

/// Kills the task and waits for a clean exit.
pub async fn stop_executor(emu: &AgentEmulator, exec: &mut Executor) {
    emu.kill("t-remote", None);
    let status = exec.wait_exit(SOON).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", exec.log());
}

/// Runs `executorctl` with `args` (optionally as another uid), returning
/// (exit code, stdout, stderr).
pub fn executorctl(args: &[&str], uid: Option<u32>) -> (i32, String, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_executorctl"));
    cmd.args(args)
        .env_remove("HOOK_EXECUTOR_REMOTE_SOCKET")
        .env_remove("MESOS_SANDBOX")
        .stdin(Stdio::null());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run executorctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback TCP port held for a server that the test's task starts later:
/// a socket bound with `SO_REUSEPORT` but not listening keeps every other
/// binder out (no bind-then-drop race), accepts no connection itself, and
/// lets the task's helper (which sets `SO_REUSEPORT` too, as the same user)
/// bind and listen on the same port. Without a listener, connections to it
/// are refused: also a "closed port" that nobody can take meanwhile.
pub struct ReservedPort {
    _socket: std::os::fd::OwnedFd,
    pub port: u16,
}

pub fn reserve_port() -> ReservedPort {
    use nix::sys::socket::{
        bind, getsockname, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
        SockaddrIn,
    };
    let socket = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    setsockopt(&socket, sockopt::ReusePort, &true).expect("SO_REUSEPORT");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .expect("bind a loopback port");
    let addr: SockaddrIn =
        getsockname(std::os::fd::AsRawFd::as_raw_fd(&socket)).expect("getsockname");
    ReservedPort {
        _socket: socket,
        port: addr.port(),
    }
}

/// Reports a test that could not run here and returns, so it is never
/// skipped silently: the reason goes to stderr and, under `make test`, to
/// the closing summary (a line appended to `$TEST_SUMMARY_DIR/skipped`; see
/// scripts/run-tests.sh).
pub fn report_skip(test: &str, why: &str) {
    eprintln!("skipped: {test}: {why}");
    if let Some(dir) = std::env::var_os("TEST_SUMMARY_DIR") {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&dir).join("skipped"))
            .and_then(|mut f| writeln!(f, "{test}: {why}"));
        if let Err(e) = appended {
            eprintln!("cannot record the skip in {}: {e}", dir.to_string_lossy());
        }
    }
}

/// The address the executor's TCP listener logged ("TCP listener open",
/// `address=`): with `HOOK_EXECUTOR_REMOTE_TCP=127.0.0.1:0` the port is the
/// kernel's choice.
pub async fn tcp_address(exec: &Executor) -> String {
    poll(SOON, || {
        let log = exec.log();
        let line = log.lines().find(|l| l.contains("TCP listener open"))?;
        let at = line.find("address=")? + "address=".len();
        Some(
            line[at..]
                .split_whitespace()
                .next()?
                .trim_matches('"')
                .to_owned(),
        )
    })
    .await
    .unwrap_or_else(|| panic!("the TCP listener's address in the log: {}", exec.log()))
}
