//! `executorctl`: the command-line client of the executor's remote-execution
//! API (see the README, "Remote execution API").
//!
//! It talks HTTP over the executor's Unix socket with reqwest, follows output
//! with reqwest-eventsource, and shares the request/response types with the
//! server. A socket path longer than the 108-byte `sun_path` limit is reached
//! through `/proc/self/fd/<dir fd>/<name>` (see `remote::socket`).
//!
//! Exit codes: 0 done; 1 the executor answered an error; 2 usage; 3 the socket
//! is missing, stale or not accessible; 4 refused (403/401); `exec --follow`
//! exits with the remote command's code (128+N if a signal N ended it).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
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

/// Client of the mesos-hook-executor remote-execution API.
///
/// The socket is found from --socket, else --sandbox DIR (DIR/executor.sock),
/// else $HOOK_EXECUTOR_REMOTE_SOCKET, else $MESOS_SANDBOX/executor.sock, else
/// ./executor.sock. Paths longer than 108 bytes work.
#[derive(Debug, Parser)]
#[command(name = "executorctl", version = RELEASE)]
struct Cli {
    /// The executor's socket.
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// A task sandbox; its executor.sock is used.
    #[arg(long, global = true, value_name = "DIR")]
    sandbox: Option<PathBuf>,
    /// Use the executor's TCP listener (ip:port) instead of the socket; the
    /// bearer token is read from $HOOK_EXECUTOR_REMOTE_TOKEN.
    #[arg(long, global = true, value_name = "ADDR")]
    tcp: Option<String>,
    /// Print the API's JSON answers (one document per line) instead of text.
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
    /// The executor's and the task's metrics (Prometheus text format).
    Metrics,
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// How to reach the executor.
struct Target {
    client: reqwest::Client,
    base: String,
    /// The socket path as the user gave it, for messages.
    shown: String,
    token: Option<String>,
    /// Holds the directory fd a long socket path goes through.
    _short: Option<ShortPath>,
}

fn socket_path(cli: &Cli) -> PathBuf {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    cli.socket
        .clone()
        .or_else(|| cli.sandbox.as_ref().map(|d| d.join("executor.sock")))
        .or_else(|| env("HOOK_EXECUTOR_REMOTE_SOCKET"))
        .or_else(|| env("MESOS_SANDBOX").map(|d| d.join("executor.sock")))
        .unwrap_or_else(|| PathBuf::from("executor.sock"))
}

impl Target {
    fn new(cli: &Cli) -> Result<Self, Failure> {
        let builder = reqwest::Client::builder().no_proxy().http1_only();
        if let Some(addr) = &cli.tcp {
            let token = std::env::var("HOOK_EXECUTOR_REMOTE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            let client = builder
                .build()
                .map_err(|e| Failure::new(1, format!("cannot build the HTTP client: {e}")))?;
            return Ok(Self {
                client,
                base: format!("http://{addr}"),
                shown: addr.clone(),
                token,
                _short: None,
            });
        }
        let path = socket_path(cli);
        let short = ShortPath::new(&path)
            .map_err(|e| Failure::new(3, format!("cannot reach {}: {e}", path.display())))?;
        let client = builder
            .unix_socket(short.path())
            .build()
            .map_err(|e| Failure::new(1, format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: "http://localhost".to_owned(),
            shown: path.display().to_string(),
            token: None,
            _short: Some(short),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Explains a transport error in terms of the socket.
    fn transport(&self, e: &reqwest::Error) -> Failure {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                let shown = &self.shown;
                let message = match io.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "no executor socket at {shown} (is the executor running in that sandbox, with HOOK_EXECUTOR_REMOTE_ENABLED not false?)"
                    ),
                    std::io::ErrorKind::ConnectionRefused => {
                        format!("the socket {shown} exists but nothing listens on it: stale, its executor is gone")
                    }
                    std::io::ErrorKind::PermissionDenied => format!(
                        "permission denied on {shown}: the socket is mode 0600 for the executor's user; run as that user or root"
                    ),
                    _ => format!("cannot reach the executor at {shown}: {io}"),
                };
                return Failure::new(3, message);
            }
            source = s.source();
        }
        Failure::new(
            3,
            format!("cannot reach the executor at {}: {e}", self.shown),
        )
    }

    /// Sends, and turns an error answer into a [`Failure`].
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, bytes::Bytes), Failure> {
        let response = req.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::new(1, format!("reading the answer: {e}")))?;
        if status.is_success() {
            return Ok((status, body));
        }
        let detail = serde_json::from_slice::<ErrorResponse>(&body)
            .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |e| e.error);
        let code = if matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) {
            4
        } else {
            1
        };
        let prefix = if status == StatusCode::FORBIDDEN {
            "refused by the executor"
        } else {
            "the executor answered"
        };
        Err(Failure::new(
            code,
            format!("{prefix} {}: {detail}", status.as_u16()),
        ))
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            1,
            format!("unexpected answer ({e}): {}", String::from_utf8_lossy(body)),
        )
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

async fn status(t: &Target, json: bool) -> Result<u8, Failure> {
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
async fn metrics(t: &Target) -> Result<u8, Failure> {
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
) -> Result<u8, Failure> {
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
        .map_err(|e| Failure::new(1, format!("encoding the request: {e}")))?;
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

async fn follow_output(t: &Target, json: bool, pid: i32) -> Result<u8, Failure> {
    use std::io::Write;
    let request = t.request(reqwest::Method::GET, &format!("/remote/task/{pid}/output"));
    let mut events = EventSource::new(request)
        .map_err(|e| Failure::new(1, format!("cannot follow the output: {e}")))?;
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
                return Err(Failure::new(
                    1,
                    format!("the executor answered {}: {detail}", status.as_u16()),
                ));
            }
            Err(reqwest_eventsource::Error::Transport(e)) => {
                events.close();
                return Err(t.transport(&e));
            }
            Err(e) => {
                events.close();
                return Err(Failure::new(
                    1,
                    format!("the output stream ended before the command's exit: {e}"),
                ));
            }
        }
    }
    Err(Failure::new(
        1,
        "the output stream ended before the command's exit",
    ))
}

async fn result(t: &Target, json: bool, pid: i32, wait: Option<f64>) -> Result<u8, Failure> {
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

async fn list(t: &Target, json: bool) -> Result<u8, Failure> {
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

async fn kill(t: &Target, json: bool, pid: i32) -> Result<u8, Failure> {
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

async fn run(cli: Cli) -> Result<u8, Failure> {
    let t = Target::new(&cli)?;
    match cli.command {
        Command::Status => status(&t, cli.json).await,
        Command::Exec {
            timeout,
            no_shell,
            follow,
            command,
        } => exec(&t, cli.json, timeout, no_shell, follow, command).await,
        Command::Result { pid, wait } => result(&t, cli.json, pid, wait).await,
        Command::List => list(&t, cli.json).await,
        Command::Kill { pid } => kill(&t, cli.json, pid).await,
        Command::Metrics => metrics(&t).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("executorctl: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(cli));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("executorctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
