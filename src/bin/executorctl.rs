//! `executorctl`: the command-line client of the executor's remote-execution
//! API (docs/executorctl.md), and an operator's view of the executors on an
//! agent host (`ls`, `--task`).
//!
//! It talks HTTP over the executor's Unix socket with reqwest, follows output
//! with reqwest-eventsource, and shares the request/response types with the
//! server. A socket path longer than the 108-byte `sun_path` limit is reached
//! through `/proc/self/fd/<dir fd>/<name>` (see `remote::socket`).
//!
//! Exit codes: 0 done; 1 the executor answered an error; 2 usage; 3 the
//! executor cannot be reached (no socket, not a socket, stale, permission,
//! TCP refused); 4 refused (token, uid); 5 `--task` matches no single task or
//! the work directory cannot be read. `exec --follow` exits with the remote
//! command's code (128+N if a signal N ended it). Under `--json` an error is
//! one JSON object on stdout ([`CtlError::to_json`]).

#[path = "executorctl/discover.rs"]
mod discover;
#[path = "executorctl/error.rs"]
mod error;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{CommandFactory, Parser, Subcommand};
use discover::{Entry, Probe};
use error::CtlError;
use futures_util::StreamExt;
use mesos_hook_executor::{
    remote::{
        socket::ShortPath,
        types::{
            CommandResult, ErrorResponse, ExecuteRequest, ExecuteResponse, ListResponse,
            OutputLine, RunningResponse, StatusResponse,
        },
    },
    RELEASE,
};
use reqwest::StatusCode;
use reqwest_eventsource::{Event, EventSource};

/// Connecting to a socket or address on this host: long only if the machine
/// is badly overloaded.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `ls` and `--task` ask every executor found; one that hangs is shown as
/// unreachable rather than holding up the rest.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Every call but the ones that wait on purpose (`exec --follow`,
/// `result --wait`), which get this plus their own wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Client of the mesos-hook-executor remote-execution API.
///
/// The executor is found from --socket, else --sandbox DIR (DIR/executor.sock),
/// else --task ID (searched in the agent's work directory, see `ls`), else
/// $HOOK_EXECUTOR_REMOTE_SOCKET, else $MESOS_SANDBOX/executor.sock, else
/// ./executor.sock; or over TCP with --tcp. Paths longer than 108 bytes work.
/// Exit codes: 1 the executor answered an error, 2 usage, 3 unreachable,
/// 4 refused, 5 no single task matches --task.
#[derive(Debug, Parser)]
#[command(name = "executorctl", version = RELEASE)]
struct Cli {
    /// The executor's socket.
    #[arg(long, global = true, value_name = "PATH", conflicts_with_all = ["sandbox", "task", "tcp"])]
    socket: Option<PathBuf>,
    /// A task sandbox; its executor.sock is used.
    #[arg(long, global = true, value_name = "DIR", conflicts_with_all = ["task", "tcp"])]
    sandbox: Option<PathBuf>,
    /// A task on this agent host: its task id, or a prefix of its task id or
    /// Marathon app id that matches one task only (see `ls`).
    #[arg(long, global = true, value_name = "ID", conflicts_with = "tcp")]
    task: Option<String>,
    /// The Mesos agent's work directory (its --work_dir), searched by `ls`
    /// and --task.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/var/lib/mesos"
    )]
    work_dir: PathBuf,
    /// Use the executor's TCP listener (host:port) instead of the socket; the
    /// bearer token is read from $HOOK_EXECUTOR_REMOTE_TOKEN.
    #[arg(long, global = true, value_name = "ADDR")]
    tcp: Option<String>,
    /// Print JSON (one document per line) instead of text; errors too, on
    /// stdout, as {"error": {"kind", "message", "hint", "exit_code"}}.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The executor's and the task's status.
    Status,
    /// Run a command next to the task: `exec [--timeout S] [--no-shell] [--follow] -- CMD ARGS…`.
    ///
    /// By default CMD ARGS… are joined with spaces into one /bin/sh -c line;
    /// with --no-shell, CMD is executed with ARGS verbatim.
    Exec {
        /// Seconds before SIGTERM (then SIGKILL after the executor's grace).
        #[arg(long, value_name = "S")]
        timeout: Option<f64>,
        /// Execute CMD directly with ARGS verbatim (no shell expansion).
        #[arg(long)]
        no_shell: bool,
        /// Stream the output and exit with the command's exit code.
        #[arg(long)]
        follow: bool,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// A command's result (its output on stdout/stderr, then a summary).
    Result {
        /// The command's pid.
        pid: i32,
        /// Wait up to S seconds for it to finish.
        #[arg(long, value_name = "S")]
        wait: Option<f64>,
    },
    /// Running commands and retained results.
    List,
    /// Terminate a command (SIGTERM, grace, SIGKILL to its process group).
    Kill {
        /// The command's pid.
        pid: i32,
    },
    /// The end of the task's stdout (or stderr) file in its sandbox.
    Logs {
        /// The stderr file instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// How much of the end to print.
        #[arg(long, value_name = "N", default_value_t = 16 * 1024)]
        bytes: u64,
    },
    /// The executors running on this agent host: task, Marathon app, state,
    /// health and socket, found under --work-dir.
    Ls,
    /// A completion script for SHELL, on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout; with --dir, every page (executorctl.1
    /// and executorctl-SUBCOMMAND.1) written into DIR.
    Man {
        /// Write all pages into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The executor's and the task's metrics (Prometheus text format).
    Metrics,
}

/// How the socket path was chosen, for the hint when nothing is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// --socket or $HOOK_EXECUTOR_REMOTE_SOCKET.
    Socket,
    /// --sandbox or $MESOS_SANDBOX.
    Sandbox,
    /// --task (found a moment ago).
    Task,
    /// Nothing given: ./executor.sock.
    Default,
}

impl Origin {
    fn missing_hint(self) -> String {
        match self {
            Self::Default => "nothing said where the executor is, so ./executor.sock was tried: give the task's sandbox with --sandbox DIR, or the task with --task ID (`executorctl ls` lists them)",
            Self::Sandbox => "is the executor running in that sandbox (--sandbox takes the task's sandbox directory), with HOOK_EXECUTOR_REMOTE_ENABLED not false? `executorctl ls` lists the running ones; --task ID picks one",
            Self::Socket => "is the executor running, with that HOOK_EXECUTOR_REMOTE_SOCKET? Try --sandbox DIR (the task's sandbox) or --task ID (`executorctl ls` lists them)",
            Self::Task => "the socket disappeared: its executor exited just now",
        }
        .to_owned()
    }
}

/// Where the executor is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// A Unix socket, by absolute path.
    Unix { path: PathBuf, origin: Origin },
    /// A TCP listener, `host:port`.
    Tcp { addr: String },
}

/// The endpoint the options and environment name, without `--task` (which
/// needs a scan): --tcp, --socket, --sandbox, then the environment, then
/// ./executor.sock. Relative paths are made absolute, for messages.
fn endpoint(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Endpoint {
    if let Some(addr) = &cli.tcp {
        return Endpoint::Tcp { addr: addr.clone() };
    }
    let env = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let sock = |dir: PathBuf| dir.join(discover::SOCKET_NAME);
    let (path, origin) = if let Some(p) = &cli.socket {
        (p.clone(), Origin::Socket)
    } else if let Some(d) = &cli.sandbox {
        (sock(d.clone()), Origin::Sandbox)
    } else if let Some(p) = env("HOOK_EXECUTOR_REMOTE_SOCKET") {
        (p, Origin::Socket)
    } else if let Some(d) = env("MESOS_SANDBOX") {
        (sock(d), Origin::Sandbox)
    } else {
        (PathBuf::from(discover::SOCKET_NAME), Origin::Default)
    };
    Endpoint::Unix {
        path: std::path::absolute(&path).unwrap_or(path),
        origin,
    }
}

/// How to reach the executor.
struct Target {
    client: reqwest::Client,
    base: String,
    endpoint: Endpoint,
    token: Option<String>,
    /// Holds the directory fd a long socket path goes through.
    _short: Option<ShortPath>,
}

impl Target {
    /// A client for `endpoint`, after checking that a socket is there.
    fn new(endpoint: Endpoint, timeout: Option<Duration>) -> Result<Self, CtlError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(t) = timeout {
            builder = builder.timeout(t);
        }
        let local =
            |e: reqwest::Error| CtlError::Local(format!("cannot build the HTTP client: {e}"));
        match &endpoint {
            Endpoint::Tcp { addr } => {
                let token = std::env::var("HOOK_EXECUTOR_REMOTE_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty());
                Ok(Self {
                    client: builder.build().map_err(local)?,
                    base: format!("http://{addr}"),
                    token,
                    endpoint,
                    _short: None,
                })
            }
            Endpoint::Unix { path, origin } => {
                error::check_socket(path.clone(), || origin.missing_hint())?;
                let short =
                    ShortPath::new(path).map_err(|e| error::unix_connect_error(path.clone(), e))?;
                let client = builder.unix_socket(short.path()).build().map_err(local)?;
                Ok(Self {
                    client,
                    base: "http://localhost".to_owned(),
                    token: None,
                    endpoint,
                    _short: Some(short),
                })
            }
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Explains a transport error in terms of the socket or TCP address.
    fn transport(&self, e: &reqwest::Error) -> CtlError {
        let mut io = None;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(found) = s.downcast_ref::<std::io::Error>() {
                io = Some(found);
                break;
            }
            source = s.source();
        }
        let kind = if e.is_timeout() {
            std::io::ErrorKind::TimedOut
        } else {
            io.map_or(std::io::ErrorKind::Other, std::io::Error::kind)
        };
        match &self.endpoint {
            Endpoint::Tcp { addr } => error::tcp_connect_error(addr, kind, chain(e)),
            Endpoint::Unix { path, .. } => {
                let source = match io {
                    Some(io) => std::io::Error::new(io.kind(), io.to_string()),
                    None => std::io::Error::new(kind, chain(e)),
                };
                error::unix_connect_error(path.clone(), source)
            }
        }
    }

    /// An HTTP error status as the error it means here.
    fn status_error(&self, status: u16, detail: String) -> CtlError {
        let tcp = match &self.endpoint {
            Endpoint::Tcp { addr } => Some((addr.as_str(), self.token.is_some())),
            Endpoint::Unix { .. } => None,
        };
        error::status_error(status, detail, tcp)
    }

    /// Sends, and turns an error answer into a [`CtlError`].
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, bytes::Bytes), CtlError> {
        let response = req.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| CtlError::BadAnswer(format!("reading the answer: {e}")))?;
        if status.is_success() {
            return Ok((status, body));
        }
        let detail = serde_json::from_slice::<ErrorResponse>(&body)
            .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |e| e.error);
        Err(self.status_error(status.as_u16(), detail))
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CtlError> {
    serde_json::from_slice(body).map_err(|e| {
        CtlError::BadAnswer(format!(
            "unexpected answer ({e}): {}",
            String::from_utf8_lossy(body)
        ))
    })
}

fn print_json(body: &[u8]) {
    println!("{}", String::from_utf8_lossy(body).trim_end());
}

fn describe(r: &CommandResult) -> String {
    let mut s = if r.signaled {
        format!("killed by signal {}", r.exit_code)
    } else {
        format!("exited with code {}", r.exit_code)
    };
    for (flag, what) in [
        (r.timed_out, "timed out"),
        (r.terminated, "terminated"),
        (r.stdout_truncated, "stdout truncated"),
        (r.stderr_truncated, "stderr truncated"),
    ] {
        if flag {
            s.push_str(&format!(", {what}"));
        }
    }
    s
}

/// The exit code a shell would give for this result.
fn shell_code(r: &CommandResult) -> u8 {
    let code = if r.signaled {
        128 + r.exit_code
    } else {
        r.exit_code
    };
    u8::try_from(code & 0xff).unwrap_or(1)
}

fn print_result(pid: i32, r: &CommandResult) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(r.stdout.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(r.stderr.as_bytes());
    eprintln!("[pid {pid}: {}]", describe(r));
}

fn print_running(r: &RunningResponse) {
    #[allow(clippy::cast_precision_loss)]
    let secs = r.elapsed_ms as f64 / 1000.0;
    println!("pid {} is running ({:.1}s): {}", r.pid, secs, r.command);
}

async fn status(t: &Target, json: bool) -> Result<u8, CtlError> {
    let (_, body) = t
        .send(t.request(reqwest::Method::GET, "/remote/status"))
        .await?;
    if json {
        print_json(&body);
        return Ok(0);
    }
    let s: StatusResponse = decode(&body)?;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!("release       {}", s.release);
    println!("status        {}", s.status);
    println!("sandbox_dir   {}", s.sandbox_dir);
    println!("work_dir      {}", s.work_dir);
    println!("framework_id  {}", s.framework_id);
    println!("executor_id   {}", s.executor_id);
    println!("task_id       {}", opt(s.task_id));
    println!("app_id        {}", opt(s.marathon_app_id));
    println!("task_state    {}", opt(s.task_state));
    println!("task_pid      {}", opt(s.task_pid.map(|p| p.to_string())));
    println!("healthy       {}", opt(s.healthy.map(|h| h.to_string())));
    if let (Some(at), Some(why)) = (&s.scheduled_end, &s.scheduled_end_reason) {
        println!("scheduled_end {at} ({why})");
    }
    println!(
        "commands      {} running, {} retained",
        s.running_commands, s.retained_results
    );
    Ok(0)
}

/// Prints `GET /metrics` as it came (it is text, so `--json` does not apply).
async fn metrics(t: &Target) -> Result<u8, CtlError> {
    let (_, body) = t.send(t.request(reqwest::Method::GET, "/metrics")).await?;
    print!("{}", String::from_utf8_lossy(&body));
    Ok(0)
}

async fn exec(
    t: &Target,
    json: bool,
    timeout: Option<f64>,
    no_shell: bool,
    follow: bool,
    words: Vec<String>,
) -> Result<u8, CtlError> {
    let (command, arguments) = if no_shell {
        let mut words = words.into_iter();
        let command = words.next().unwrap_or_default();
        (command, Some(words.collect::<Vec<_>>()))
    } else {
        (words.join(" "), None)
    };
    let request = ExecuteRequest {
        command: Some(command),
        shell: Some(!no_shell),
        arguments,
        timeout,
        ..ExecuteRequest::default()
    };
    let payload = serde_json::to_vec(&request)
        .map_err(|e| CtlError::Local(format!("encoding the request: {e}")))?;
    let post = t
        .request(reqwest::Method::POST, "/remote/execute")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload);
    let (_, body) = t.send(post).await?;
    let started: ExecuteResponse = decode(&body)?;
    for w in &started.warnings {
        eprintln!("warning: {w}");
    }
    if !follow {
        if json {
            print_json(&body);
        } else {
            println!("started pid {}", started.pid);
        }
        return Ok(0);
    }
    if json {
        print_json(&body);
    }
    follow_output(t, json, started.pid).await
}

async fn follow_output(t: &Target, json: bool, pid: i32) -> Result<u8, CtlError> {
    use std::io::Write;
    let request = t.request(reqwest::Method::GET, &format!("/remote/task/{pid}/output"));
    let mut events = EventSource::new(request)
        .map_err(|e| CtlError::Local(format!("cannot follow the output: {e}")))?;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Open) => {}
            Ok(Event::Message(m)) if m.event == "stdout" || m.event == "stderr" => {
                if json {
                    println!("{{\"event\":{:?},\"data\":{}}}", m.event, m.data);
                    continue;
                }
                let line: OutputLine = decode(m.data.as_bytes())?;
                if m.event == "stdout" {
                    println!("{}", line.line);
                } else {
                    eprintln!("{}", line.line);
                }
            }
            Ok(Event::Message(m)) if m.event == "exit" => {
                events.close();
                let result: CommandResult = decode(m.data.as_bytes())?;
                if json {
                    println!("{{\"event\":\"exit\",\"data\":{}}}", m.data);
                } else if result.signaled
                    || result.timed_out
                    || result.terminated
                    || result.stdout_truncated
                    || result.stderr_truncated
                {
                    let _ = std::io::stdout().flush();
                    eprintln!("[pid {pid}: {}]", describe(&result));
                }
                return Ok(shell_code(&result));
            }
            Ok(Event::Message(_)) => {}
            Err(reqwest_eventsource::Error::InvalidStatusCode(status, response)) => {
                events.close();
                let body = response.bytes().await.unwrap_or_default();
                let detail = serde_json::from_slice::<ErrorResponse>(&body)
                    .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |e| e.error);
                return Err(t.status_error(status.as_u16(), detail));
            }
            Err(reqwest_eventsource::Error::Transport(e)) => {
                events.close();
                return Err(t.transport(&e));
            }
            Err(e) => {
                events.close();
                return Err(CtlError::BadAnswer(format!(
                    "the output stream ended before the command's exit: {e}"
                )));
            }
        }
    }
    Err(CtlError::BadAnswer(
        "the output stream ended before the command's exit".to_owned(),
    ))
}

async fn result(t: &Target, json: bool, pid: i32, wait: Option<f64>) -> Result<u8, CtlError> {
    let path = match wait {
        Some(w) => format!("/remote/task/{pid}?wait={w}"),
        None => format!("/remote/task/{pid}"),
    };
    let (status, body) = t.send(t.request(reqwest::Method::GET, &path)).await?;
    if json {
        print_json(&body);
    } else if status == StatusCode::ACCEPTED {
        print_running(&decode(&body)?);
    } else {
        print_result(pid, &decode(&body)?);
    }
    Ok(0)
}

async fn list(t: &Target, json: bool) -> Result<u8, CtlError> {
    let (_, body) = t
        .send(t.request(reqwest::Method::GET, "/remote/task"))
        .await?;
    if json {
        print_json(&body);
        return Ok(0);
    }
    let pids: ListResponse = decode(&body)?;
    if pids.pids.is_empty() {
        println!("no commands");
        return Ok(0);
    }
    println!("{:>8}  STATE", "PID");
    for pid in pids.pids {
        // Listed a moment ago; it may have been dropped since.
        let Ok((status, body)) = t
            .send(t.request(reqwest::Method::GET, &format!("/remote/task/{pid}")))
            .await
        else {
            continue;
        };
        if status == StatusCode::ACCEPTED {
            let r: RunningResponse = decode(&body)?;
            println!("{pid:>8}  running  {}", r.command);
        } else {
            let r: CommandResult = decode(&body)?;
            println!("{pid:>8}  {}", describe(&r));
        }
    }
    Ok(0)
}

async fn kill(t: &Target, json: bool, pid: i32) -> Result<u8, CtlError> {
    let (_, body) = t
        .send(t.request(reqwest::Method::DELETE, &format!("/remote/task/{pid}")))
        .await?;
    if json {
        print_json(&body);
    } else {
        let r: CommandResult = decode(&body)?;
        println!("pid {pid}: {}", describe(&r));
    }
    Ok(0)
}

/// The end of the task's stdout or stderr: the sandbox's host path comes
/// from `/remote/status` (`work_dir`), the file is read here, at most `bytes`
/// from its end.
async fn logs(t: &Target, json: bool, stderr: bool, bytes: u64) -> Result<u8, CtlError> {
    use std::io::{Read, Seek, SeekFrom};
    let (_, body) = t
        .send(t.request(reqwest::Method::GET, "/remote/status"))
        .await?;
    let s: StatusResponse = decode(&body)?;
    let path = Path::new(&s.work_dir).join(if stderr { "stderr" } else { "stdout" });
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
        let mut tail = Vec::new();
        file.take(bytes).read_to_end(&mut tail)?;
        Ok(tail)
    };
    let tail =
        read().map_err(|e| CtlError::Local(format!("cannot read {}: {e}", path.display())))?;
    if json {
        let doc = serde_json::json!({
            "path": path,
            "data": String::from_utf8_lossy(&tail),
        });
        println!("{doc}");
    } else {
        let mut out = std::io::stdout();
        let _ = out.write_all(&tail);
        let _ = out.flush();
    }
    Ok(0)
}

/// Asks one found socket for its status, briefly.
async fn probe(found: &discover::Found) -> Probe {
    let endpoint = Endpoint::Unix {
        path: found.socket.clone(),
        origin: Origin::Task,
    };
    let answer = async {
        let t = Target::new(endpoint, Some(PROBE_TIMEOUT))?;
        let (_, body) = t
            .send(t.request(reqwest::Method::GET, "/remote/status"))
            .await?;
        decode::<StatusResponse>(&body)
    };
    match answer.await {
        Ok(status) => Probe::Running(Box::new(status)),
        Err(CtlError::StaleSocket { .. }) => Probe::Stale,
        Err(e) => Probe::Unreachable(e.to_string()),
    }
}

/// Every executor found under `work_dir`, probed concurrently.
async fn survey(work_dir: &Path) -> Result<Vec<Entry>, CtlError> {
    let work_dir = std::path::absolute(work_dir).unwrap_or_else(|_| work_dir.to_owned());
    let found = discover::scan(&work_dir)?;
    let probes = futures_util::future::join_all(found.iter().map(probe)).await;
    Ok(found
        .into_iter()
        .zip(probes)
        .map(|(found, probe)| Entry { found, probe })
        .collect())
}

/// `ls`: a table, or `{"executors": [...]}` under `--json`.
async fn ls(work_dir: &Path, json: bool) -> Result<u8, CtlError> {
    let entries = survey(work_dir).await?;
    if json {
        let rows: Vec<_> = entries.iter().map(ls_json).collect();
        println!("{}", serde_json::json!({ "executors": rows }));
        return Ok(0);
    }
    if entries.is_empty() {
        println!(
            "no executor sockets under {}",
            work_dir.join("slaves").display()
        );
        return Ok(0);
    }
    let rows: Vec<[String; 5]> = entries.iter().map(ls_row).collect();
    let header = ["TASK", "APP", "STATE", "HEALTH", "SOCKET"].map(str::to_owned);
    let mut widths = [0; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let [a, b, c, d, e] = row;
        println!(
            "{a:<wa$}  {b:<wb$}  {c:<wc$}  {d:<wd$}  {e}",
            wa = widths[0],
            wb = widths[1],
            wc = widths[2],
            wd = widths[3]
        );
    }
    Ok(0)
}

fn health(h: Option<bool>) -> &'static str {
    match h {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "-",
    }
}

/// One `ls` line: stale and unreachable sockets are shown, not fatal.
fn ls_row(e: &Entry) -> [String; 5] {
    let dash = || "-".to_owned();
    let socket = e.found.socket.display().to_string();
    match &e.probe {
        Probe::Running(s) => [
            s.task_id.clone().unwrap_or_else(dash),
            s.marathon_app_id.clone().unwrap_or_else(dash),
            s.task_state
                .clone()
                .unwrap_or_else(|| "(no task yet)".to_owned()),
            health(s.healthy).to_owned(),
            socket,
        ],
        Probe::Stale => [dash(), dash(), "stale socket".to_owned(), dash(), socket],
        Probe::Unreachable(why) => [
            dash(),
            dash(),
            format!("unreachable: {why}"),
            dash(),
            socket,
        ],
    }
}

fn ls_json(e: &Entry) -> serde_json::Value {
    let (running, error) = match &e.probe {
        Probe::Running(_) => ("running", None),
        Probe::Stale => ("stale", None),
        Probe::Unreachable(why) => ("unreachable", Some(why.as_str())),
    };
    let status = match &e.probe {
        Probe::Running(s) => Some(s),
        _ => None,
    };
    serde_json::json!({
        "socket": e.found.socket,
        "framework_id": e.found.framework_id,
        "executor_id": e.found.executor_id,
        "executor": running,
        "error": error,
        "task_id": e.task_id(),
        "marathon_app_id": e.app_id(),
        "task_state": status.and_then(|s| s.task_state.as_deref()),
        "healthy": status.and_then(|s| s.healthy),
    })
}

/// The endpoint to talk to: the `--task` match, or what the options say.
async fn resolve(cli: &Cli) -> Result<Endpoint, CtlError> {
    let Some(query) = &cli.task else {
        return Ok(endpoint(cli, |name| std::env::var(name).ok()));
    };
    let entries = survey(&cli.work_dir).await?;
    let chosen = discover::select(&entries, query, &cli.work_dir)?;
    Ok(Endpoint::Unix {
        path: chosen.found.socket.clone(),
        origin: Origin::Task,
    })
}

async fn run(cli: Cli) -> Result<u8, CtlError> {
    let json = cli.json;
    match &cli.command {
        Command::Ls => return ls(&cli.work_dir, json).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "executorctl", &mut out);
            return write_stdout(&out);
        }
        Command::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(Cli::command(), dir).map_err(|e| {
                CtlError::Local(format!("writing man pages to {}: {e}", dir.display()))
            })?;
            return Ok(0);
        }
        Command::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| CtlError::Local(format!("rendering the man page: {e}")))?;
            return write_stdout(&out);
        }
        _ => {}
    }
    // Calls that wait on purpose get no overall timeout: the executor bounds
    // `wait` and `kill` (its kill grace), the command's own timeout bounds
    // `--follow`.
    let waits = matches!(
        cli.command,
        Command::Exec { follow: true, .. }
            | Command::Result { wait: Some(_), .. }
            | Command::Kill { .. }
    );
    let t = Target::new(resolve(&cli).await?, (!waits).then_some(CALL_TIMEOUT))?;
    match cli.command {
        Command::Status => status(&t, json).await,
        Command::Exec {
            timeout,
            no_shell,
            follow,
            command,
        } => exec(&t, json, timeout, no_shell, follow, command).await,
        Command::Result { pid, wait } => result(&t, json, pid, wait).await,
        Command::List => list(&t, json).await,
        Command::Kill { pid } => kill(&t, json, pid).await,
        Command::Logs { stderr, bytes } => logs(&t, json, stderr, bytes).await,
        Command::Ls | Command::Completions { .. } | Command::Man { .. } => Ok(0),
        Command::Metrics => metrics(&t).await,
    }
}

fn write_stdout(bytes: &[u8]) -> Result<u8, CtlError> {
    let mut out = std::io::stdout();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CtlError::Local(format!("writing to stdout: {e}")))?;
    Ok(0)
}

/// Reports `e`: one JSON line on stdout under `--json`, else
/// `executorctl: message` and `hint: …` on stderr.
fn report(e: &CtlError, json: bool) -> ExitCode {
    if json {
        println!("{}", e.to_json());
    } else {
        eprintln!("executorctl: {e}");
        if let Some(hint) = e.hint() {
            eprintln!("hint: {hint}");
        }
    }
    ExitCode::from(e.exit_code())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let wants_json = std::env::args().skip(1).any(|a| a == "--json");
            if !wants_json
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                e.exit();
            }
            let text = e.to_string();
            let message = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            return report(&CtlError::Usage(message.to_owned()), true);
        }
    };
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return report(
                &CtlError::Local(format!("cannot start the async runtime: {e}")),
                json,
            )
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => report(&e, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("executorctl").chain(args.iter().copied()))
            .expect("valid")
    }

    #[test]
    fn endpoint_precedence_and_absolute_paths() {
        let none = |_: &str| None;
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(
            endpoint(&parse(&["status"]), none),
            Endpoint::Unix {
                path: cwd.join("executor.sock"),
                origin: Origin::Default
            }
        );
        assert_eq!(
            endpoint(&parse(&["--sandbox", "sb", "status"]), none),
            Endpoint::Unix {
                path: cwd.join("sb/executor.sock"),
                origin: Origin::Sandbox
            }
        );
        let env = |name: &str| match name {
            "HOOK_EXECUTOR_REMOTE_SOCKET" => Some("/run/x.sock".to_owned()),
            "MESOS_SANDBOX" => Some("/sandbox".to_owned()),
            _ => None,
        };
        assert_eq!(
            endpoint(&parse(&["status"]), env),
            Endpoint::Unix {
                path: "/run/x.sock".into(),
                origin: Origin::Socket
            }
        );
        assert_eq!(
            endpoint(&parse(&["--socket", "/a.sock", "status"]), env),
            Endpoint::Unix {
                path: "/a.sock".into(),
                origin: Origin::Socket
            }
        );
        assert_eq!(
            endpoint(&parse(&["--tcp", "127.0.0.1:7070", "status"]), env),
            Endpoint::Tcp {
                addr: "127.0.0.1:7070".into()
            }
        );
    }

    #[test]
    fn missing_socket_hints_at_sandbox_and_task() {
        for origin in [Origin::Default, Origin::Sandbox, Origin::Socket] {
            let hint = origin.missing_hint();
            assert!(
                hint.contains("--sandbox") && hint.contains("--task"),
                "{hint}"
            );
        }
    }

    #[test]
    fn ways_of_naming_the_executor_exclude_each_other() {
        let conflicting = [
            &["--socket", "a", "--sandbox", "b", "status"][..],
            &["--task", "a", "--tcp", "h:1", "status"],
            &["--sandbox", "a", "--task", "b", "status"],
        ];
        for args in conflicting {
            let e = Cli::try_parse_from(std::iter::once("executorctl").chain(args.iter().copied()))
                .expect_err("conflict");
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
        }
    }

    #[test]
    fn ls_shows_sockets_it_cannot_ask_without_failing() {
        let entry = |probe| Entry {
            found: discover::Found {
                socket: "/w/run/executor.sock".into(),
                framework_id: "F".into(),
                executor_id: "E".into(),
            },
            probe,
        };
        let unreachable = entry(Probe::Unreachable("permission denied on /w".into()));
        assert_eq!(
            ls_row(&unreachable),
            [
                "-",
                "-",
                "unreachable: permission denied on /w",
                "-",
                "/w/run/executor.sock"
            ]
            .map(str::to_owned)
        );
        let v = ls_json(&unreachable);
        assert_eq!(
            (
                v["executor"].as_str(),
                v["error"].as_str(),
                v["task_id"].is_null()
            ),
            (Some("unreachable"), Some("permission denied on /w"), true)
        );
        let stale = entry(Probe::Stale);
        assert_eq!(ls_row(&stale)[2], "stale socket");
        assert_eq!(ls_json(&stale)["executor"], "stale");
        assert_eq!(ls_json(&stale)["error"], serde_json::Value::Null);
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
