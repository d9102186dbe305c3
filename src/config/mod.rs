//! Configuration, read once from the environment at start and validated as a
//! whole: the `MESOS_*` variables the agent sets (`mesos-executor-api.md` §1) and
//! our own `HOOK_EXECUTOR_*` settings. Every problem is collected and reported
//! together, naming each variable, so an operator fixes an app definition in one
//! round trip. Secrets are wrapped in [`Secret`] so they never reach `Debug`
//! output or logs.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub mod duration;

/// Prefix of every variable of ours.
pub const PREFIX: &str = "HOOK_EXECUTOR_";

/// A value that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The secret itself, for the one place that sends it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One invalid or missing variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable's name.
    pub variable: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every configuration problem found, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order of the variables table.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.problems.len())?;
        if self.problems.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str("):")?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.variable, p.message)?;
        }
        Ok(())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How to reach the agent's executor endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTransport {
    /// Plain HTTP over TCP to `host:port`.
    Http {
        /// `host:port` from `MESOS_SLAVE_PID` or `MESOS_AGENT_ENDPOINT`.
        authority: String,
    },
    /// HTTPS over TCP (libprocess SSL enabled in our environment).
    Https {
        /// `host:port`.
        authority: String,
        /// CA bundle from `LIBPROCESS_SSL_CA_FILE`; the system roots otherwise.
        ca_file: Option<PathBuf>,
        /// `LIBPROCESS_SSL_VERIFY_CERT`; libprocess defaults to not verifying.
        verify: bool,
    },
    /// HTTP over the agent's Unix domain socket (`MESOS_DOMAIN_SOCKET`).
    Unix {
        /// Socket path.
        path: PathBuf,
    },
}

/// Where and how to talk to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// Transport and address.
    pub transport: AgentTransport,
    /// Request path, `/slave(1)/api/v1/executor` by default.
    pub path: String,
}

impl AgentEndpoint {
    /// A human-readable URL for logs.
    #[must_use]
    pub fn url(&self) -> String {
        match &self.transport {
            AgentTransport::Http { authority } => format!("http://{authority}{}", self.path),
            AgentTransport::Https { authority, .. } => format!("https://{authority}{}", self.path),
            AgentTransport::Unix { path } => format!("http+unix://{}{}", path.display(), self.path),
        }
    }
}

/// The executor's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `MESOS_FRAMEWORK_ID`.
    pub framework_id: String,
    /// `MESOS_EXECUTOR_ID`.
    pub executor_id: String,
    /// `MESOS_SLAVE_ID`, if given (only used in logs; the agent fills it in).
    pub agent_id: Option<String>,
    /// The agent's executor API.
    pub agent: AgentEndpoint,
    /// The sandbox as seen by the task (`MESOS_SANDBOX`, else `MESOS_DIRECTORY`,
    /// else the working directory).
    pub sandbox: PathBuf,
    /// The sandbox's host path (`MESOS_DIRECTORY`), when known.
    pub directory: Option<PathBuf>,
    /// `MESOS_CHECKPOINT=1`: reconnect after agent loss instead of shutting down.
    pub checkpoint: bool,
    /// `MESOS_RECOVERY_TIMEOUT`: how long to keep reconnecting (checkpoint only).
    pub recovery_timeout: Duration,
    /// `MESOS_SUBSCRIPTION_BACKOFF_MAX`: upper bound of the random reconnect delay.
    pub subscription_backoff_max: Duration,
    /// `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD`: the agent destroys the container
    /// this long after sending SHUTDOWN.
    pub shutdown_grace_period: Duration,
    /// `MESOS_EXECUTOR_AUTHENTICATION_TOKEN`, sent as a Bearer token.
    pub auth_token: Option<Secret>,
    /// Our own settings.
    pub settings: Settings,
    /// The executor's own environment, from which the task's is derived by
    /// explicit rules (see `launch`). The agent token is never in it.
    pub environment: Environment,
}

/// The executor's environment. `Debug` shows names only: values may be secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Environment(pub BTreeMap<String, String>);

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Our `HOOK_EXECUTOR_*` settings, typed and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Log format.
    pub log_format: LogFormat,
    /// `tracing` filter directive.
    pub log_level: String,
    /// Kill grace when neither the KILL nor the task has a kill policy.
    pub kill_grace_period: Duration,
    /// Process names spared from SIGTERM (still SIGKILLed at the deadline).
    pub sigterm_exclude_processes: Vec<String>,
    /// How long to wait for the terminal update's acknowledgement before exiting.
    pub ack_timeout: Duration,
    /// Timeout of each agent call and of each connection attempt.
    pub call_timeout: Duration,
    /// How long to keep trying the first SUBSCRIBE before giving up.
    pub registration_timeout: Duration,
    /// Largest RecordIO record accepted from the agent.
    pub max_record_size: usize,
    /// Extra variable names (or `PREFIX*` patterns) kept out of the task's
    /// environment, on top of the built-in deny-list.
    pub env_denylist: Vec<String>,
    /// Hook settings.
    pub hooks: HookSettings,
    /// The remote-execution API (`HOOK_EXECUTOR_REMOTE_*`).
    pub remote: RemoteSettings,
}

/// Names of the built-in hooks, as `HOOK_EXECUTOR_HOOKS` spells them.
pub const HOOK_NAMES: [&str; 4] = ["policy", "exec", "consul", "webhook"];

/// Settings of the hook chain and the built-in hooks.
#[derive(Debug, Clone, Default)]
pub struct HookSettings {
    /// Hooks in chain order (validated names).
    pub chain: Vec<String>,
    /// Time limit of each hook call.
    pub timeout: Duration,
    /// `exec`: the scripts' directory.
    pub dir: Option<PathBuf>,
    /// `policy`: allow Docker privileged.
    pub allow_privileged: bool,
    /// `policy`: allowed host path prefixes.
    pub allowed_host_paths: Vec<PathBuf>,
    /// `policy`: allowed users.
    pub allowed_users: Vec<String>,
    /// `consul`: the service label.
    pub consul_service_label: String,
    /// `consul`: registered address override.
    pub consul_address: Option<String>,
    /// `consul`: drain wait after deregistration.
    pub consul_deregister_wait: Duration,
    /// `consul`: `CONSUL_HTTP_ADDR` as a base URL.
    pub consul_url: String,
    /// `consul`: `CONSUL_HTTP_TOKEN`.
    pub consul_token: Option<Secret>,
    /// `webhook`: target URLs.
    pub webhook_urls: Vec<String>,
    /// `webhook`: veto on before-start failure.
    pub webhook_required: bool,
    /// `webhook`: per-attempt timeout.
    pub webhook_timeout: Duration,
}

/// Kind of value a variable takes, for `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarKind {
    /// Free text.
    String,
    /// Mesos or humantime duration.
    Duration,
    /// `1` or `0`.
    Flag,
    /// Comma-separated list.
    List,
    /// Byte count.
    Bytes,
    /// A filesystem path.
    Path,
    /// One of a fixed set of words.
    Choice(&'static str),
    /// A whole number.
    Count,
}

impl fmt::Display for VarKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String => f.write_str("string"),
            Self::Duration => f.write_str("duration"),
            Self::Flag => f.write_str("1|0"),
            Self::List => f.write_str("list"),
            Self::Bytes => f.write_str("bytes"),
            Self::Path => f.write_str("path"),
            Self::Choice(c) => f.write_str(c),
            Self::Count => f.write_str("count"),
        }
    }
}

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct VarSpec {
    /// Full name.
    pub name: &'static str,
    /// Value type.
    pub kind: VarKind,
    /// Default, or "required" / "—".
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every variable the executor reads, in help order. The README's table is
/// checked against this list by a test.
pub const VARIABLES: &[VarSpec] = &[
    VarSpec { name: "MESOS_FRAMEWORK_ID", kind: VarKind::String, default: "required", help: "Framework id (set by the agent)." },
    VarSpec { name: "MESOS_EXECUTOR_ID", kind: VarKind::String, default: "required", help: "Executor id (set by the agent)." },
    VarSpec { name: "MESOS_SLAVE_PID", kind: VarKind::String, default: "—", help: "Agent UPID `slave(1)@ip:port`; gives the agent address and API path. One of it, MESOS_AGENT_ENDPOINT or MESOS_DOMAIN_SOCKET is required." },
    VarSpec { name: "MESOS_AGENT_ENDPOINT", kind: VarKind::String, default: "—", help: "Agent `ip:port`, used when MESOS_SLAVE_PID is absent." },
    VarSpec { name: "MESOS_DOMAIN_SOCKET", kind: VarKind::Path, default: "—", help: "Agent Unix socket; when set, the API is reached over it (http+unix)." },
    VarSpec { name: "MESOS_SLAVE_ID", kind: VarKind::String, default: "—", help: "Agent id, for logs." },
    VarSpec { name: "MESOS_SANDBOX", kind: VarKind::Path, default: "MESOS_DIRECTORY, else cwd", help: "Sandbox path as seen by the task; the task's working directory." },
    VarSpec { name: "MESOS_DIRECTORY", kind: VarKind::Path, default: "—", help: "Sandbox host path." },
    VarSpec { name: "MESOS_CHECKPOINT", kind: VarKind::Flag, default: "0", help: "1: survive agent restarts by reconnecting; 0: shut down when the agent connection drops." },
    VarSpec { name: "MESOS_RECOVERY_TIMEOUT", kind: VarKind::Duration, default: "required if MESOS_CHECKPOINT=1", help: "How long to keep reconnecting after the first disconnect." },
    VarSpec { name: "MESOS_SUBSCRIPTION_BACKOFF_MAX", kind: VarKind::Duration, default: "required if MESOS_CHECKPOINT=1", help: "Upper bound of the random delay between reconnect attempts." },
    VarSpec { name: "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", kind: VarKind::Duration, default: "required", help: "Time the agent allows between SHUTDOWN and destroying the container; the kill on SHUTDOWN fits 2s inside it." },
    VarSpec { name: "MESOS_EXECUTOR_AUTHENTICATION_TOKEN", kind: VarKind::String, default: "—", help: "Sent as `Authorization: Bearer` on every agent request; never logged, never passed to the task." },
    VarSpec { name: "LIBPROCESS_SSL_ENABLED", kind: VarKind::Flag, default: "0", help: "1 or true: reach the agent over HTTPS (also read as SSL_ENABLED)." },
    VarSpec { name: "LIBPROCESS_SSL_CA_FILE", kind: VarKind::Path, default: "system roots", help: "CA bundle to verify the agent's certificate with." },
    VarSpec { name: "LIBPROCESS_SSL_VERIFY_CERT", kind: VarKind::Flag, default: "0", help: "1 or true: verify the agent's certificate (libprocess does not by default)." },
    VarSpec { name: "HOOK_EXECUTOR_LOG_FORMAT", kind: VarKind::Choice("text|json"), default: "text", help: "Log line format on stderr." },
    VarSpec { name: "HOOK_EXECUTOR_LOG_LEVEL", kind: VarKind::String, default: "info", help: "Log filter (`tracing` directive, e.g. `debug` or `mesos_hook_executor=trace`)." },
    VarSpec { name: "HOOK_EXECUTOR_KILL_GRACE_PERIOD", kind: VarKind::Duration, default: "3secs", help: "SIGTERM→SIGKILL grace when neither the KILL nor the task carries a kill policy." },
    VarSpec { name: "HOOK_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES", kind: VarKind::List, default: "—", help: "Process names (comm) spared from SIGTERM; they are still SIGKILLed at the deadline." },
    VarSpec { name: "HOOK_EXECUTOR_ACK_TIMEOUT", kind: VarKind::Duration, default: "60secs", help: "How long to wait for the terminal update's acknowledgement before exiting with code 1." },
    VarSpec { name: "HOOK_EXECUTOR_CALL_TIMEOUT", kind: VarKind::Duration, default: "5secs", help: "Timeout of each agent call and connection attempt." },
    VarSpec { name: "HOOK_EXECUTOR_REGISTRATION_TIMEOUT", kind: VarKind::Duration, default: "1mins", help: "How long to retry the first SUBSCRIBE before exiting with code 3 (the agent's own limit is 1 min)." },
    VarSpec { name: "HOOK_EXECUTOR_MAX_RECORD_SIZE", kind: VarKind::Bytes, default: "67108864", help: "Largest RecordIO record accepted from the agent; a larger one is a stream error." },
    VarSpec { name: "HOOK_EXECUTOR_ENV_DENYLIST", kind: VarKind::List, default: "—", help: "Extra variable names, or `PREFIX*` patterns, kept out of the task's environment." },
    VarSpec { name: "HOOK_EXECUTOR_HOOKS", kind: VarKind::List, default: "— (no hooks)", help: "Built-in hooks to run, in order: `policy`, `exec`, `consul`, `webhook`." },
    VarSpec { name: "HOOK_EXECUTOR_HOOK_TIMEOUT", kind: VarKind::Duration, default: "30secs", help: "Time limit of each hook call (the Consul drain wait and webhook retries come on top)." },
    VarSpec { name: "HOOK_EXECUTOR_HOOKS_DIR", kind: VarKind::Path, default: "required with `exec`", help: "Directory holding `<event>.d/` script folders for the `exec` hook." },
    VarSpec { name: "HOOK_EXECUTOR_POLICY_ALLOW_PRIVILEGED", kind: VarKind::Flag, default: "false", help: "`policy`: allow Docker privileged mode." },
    VarSpec { name: "HOOK_EXECUTOR_POLICY_ALLOWED_HOST_PATHS", kind: VarKind::List, default: "— (sandbox only)", help: "`policy`: host path prefixes volumes may mount." },
    VarSpec { name: "HOOK_EXECUTOR_POLICY_ALLOWED_USERS", kind: VarKind::List, default: "— (any)", help: "`policy`: users a task may run as." },
    VarSpec { name: "HOOK_EXECUTOR_CONSUL_SERVICE_LABEL", kind: VarKind::String, default: "consul", help: "`consul`: task label naming the service (value = name; empty = task name)." },
    VarSpec { name: "HOOK_EXECUTOR_CONSUL_ADDRESS", kind: VarKind::String, default: "agent hostname", help: "`consul`: address registered for the service." },
    VarSpec { name: "HOOK_EXECUTOR_CONSUL_DEREGISTER_WAIT", kind: VarKind::Duration, default: "0secs", help: "`consul`: wait after deregistering, before SIGTERM, so traffic drains." },
    VarSpec { name: "CONSUL_HTTP_ADDR", kind: VarKind::String, default: "127.0.0.1:8500", help: "`consul`: the local Consul agent (`host:port` or URL), Consul's own convention." },
    VarSpec { name: "CONSUL_HTTP_TOKEN", kind: VarKind::String, default: "—", help: "`consul`: ACL token sent as `X-Consul-Token`; never logged or passed to the task or hooks." },
    VarSpec { name: "HOOK_EXECUTOR_WEBHOOK_URLS", kind: VarKind::List, default: "required with `webhook`", help: "`webhook`: http(s) URLs each event is POSTed to as JSON." },
    VarSpec { name: "HOOK_EXECUTOR_WEBHOOK_REQUIRED", kind: VarKind::Flag, default: "false", help: "`webhook`: a failed before-start POST vetoes the launch." },
    VarSpec { name: "HOOK_EXECUTOR_WEBHOOK_TIMEOUT", kind: VarKind::Duration, default: "5secs", help: "`webhook`: timeout of each POST attempt (3 attempts)." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_ENABLED", kind: VarKind::Choice("true|false"), default: "true", help: "Serve the remote-execution API (also 1 or 0)." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_SOCKET", kind: VarKind::Path, default: "$MESOS_SANDBOX/executor.sock", help: "Unix socket of the remote-execution API; may be longer than the 108-byte socket-path limit." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS", kind: VarKind::List, default: "0 and the executor's uid", help: "Numeric uids allowed to use the socket (SO_PEERCRED); naming any other uid makes the socket mode 0666 instead of 0600." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_TCP", kind: VarKind::String, default: "—", help: "Also listen on this `ip:port` (e.g. 127.0.0.1:7070); requires HOOK_EXECUTOR_REMOTE_TOKEN." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_TOKEN", kind: VarKind::String, default: "—", help: "Bearer token required on the TCP listener; never logged, never passed on." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_KILL_GRACE", kind: VarKind::Duration, default: "2secs", help: "SIGTERM→SIGKILL grace for a remote command's process group (timeout or terminate)." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_MAX_BODY", kind: VarKind::Bytes, default: "65536", help: "Largest request body accepted (413 above)." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_MAX_OUTPUT", kind: VarKind::Bytes, default: "262144", help: "Bytes captured per stream (stdout, stderr) of each remote command; the rest is discarded and flagged." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_MAX_RUNNING", kind: VarKind::Count, default: "64", help: "Remote commands running at once (429 above)." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_MAX_RETAINED", kind: VarKind::Count, default: "128", help: "Finished results kept for retrieval (oldest dropped first)." },
    VarSpec { name: "HOOK_EXECUTOR_REMOTE_RETENTION", kind: VarKind::Duration, default: "10mins", help: "How long a finished result is kept." },
];

/// Raw `HOOK_EXECUTOR_*` values as envy reads them; typed in [`Settings`].
/// Field names are the variable names without the prefix, lower-cased.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct RawSettings {
    log_format: Option<String>,
    log_level: Option<String>,
    kill_grace_period: Option<String>,
    sigterm_exclude_processes: Option<String>,
    ack_timeout: Option<String>,
    call_timeout: Option<String>,
    registration_timeout: Option<String>,
    max_record_size: Option<String>,
    env_denylist: Option<String>,
    hooks: Option<String>,
    hook_timeout: Option<String>,
    hooks_dir: Option<String>,
    policy_allow_privileged: Option<String>,
    policy_allowed_host_paths: Option<String>,
    policy_allowed_users: Option<String>,
    consul_service_label: Option<String>,
    consul_address: Option<String>,
    consul_deregister_wait: Option<String>,
    webhook_urls: Option<String>,
    webhook_required: Option<String>,
    webhook_timeout: Option<String>,
    remote_enabled: Option<String>,
    remote_socket: Option<String>,
    remote_allowed_uids: Option<String>,
    remote_tcp: Option<String>,
    remote_token: Option<String>,
    remote_kill_grace: Option<String>,
    remote_max_body: Option<String>,
    remote_max_output: Option<String>,
    remote_max_running: Option<String>,
    remote_max_retained: Option<String>,
    remote_retention: Option<String>,
}

/// Collects problems while parsing, so all of them are reported together.
#[derive(Default)]
struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn problem(&mut self, variable: &str, message: impl Into<String>) {
        self.problems.push(Problem { variable: variable.to_owned(), message: message.into() });
    }

    fn duration(&mut self, variable: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => duration::parse(v).unwrap_or_else(|e| {
                self.problem(variable, e.to_string());
                default
            }),
        }
    }

    fn required<'a>(&mut self, vars: &'a BTreeMap<String, String>, variable: &str) -> Option<&'a str> {
        match vars.get(variable).map(String::as_str) {
            Some(v) if !v.is_empty() => Some(v),
            Some(_) => {
                self.problem(variable, "is empty");
                None
            }
            None => {
                self.problem(variable, "is missing");
                None
            }
        }
    }

    /// A lenient flag whose absence (or empty value) means `default`.
    fn flag_or(&mut self, variable: &str, value: Option<&str>, default: bool) -> bool {
        match value.map(str::trim) {
            None | Some("") => default,
            set => self.flag(variable, set, true),
        }
    }

    fn flag(&mut self, variable: &str, value: Option<&str>, lenient: bool) -> bool {
        match value {
            None | Some("0" | "") => false,
            Some("1") => true,
            Some("true") if lenient => true,
            Some("false") if lenient => false,
            Some(other) => {
                let expected = if lenient { "1, 0, true or false" } else { "1 or 0" };
                self.problem(variable, format!("{other:?} is not {expected}"));
                false
            }
        }
    }
}

fn list(value: Option<&str>) -> Vec<String> {
    value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Splits a libprocess UPID `id@host:port` into its id and address.
fn parse_upid(upid: &str) -> Option<(&str, &str)> {
    let (id, address) = upid.split_once('@')?;
    let (host, port) = address.rsplit_once(':')?;
    if id.is_empty() || host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    Some((id, address))
}

fn valid_authority(address: &str) -> bool {
    address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

impl Config {
    /// Reads the configuration from this process's environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    /// Reads the configuration from the given variables (the testable core).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut vars: BTreeMap<String, String> = vars.into_iter().collect();
        let get = |name: &str| vars.get(name).map(String::as_str);
        let mut c = Collector::default();

        let framework_id = c.required(&vars, "MESOS_FRAMEWORK_ID").unwrap_or_default().to_owned();
        let executor_id = c.required(&vars, "MESOS_EXECUTOR_ID").unwrap_or_default().to_owned();

        let ssl = c.flag("LIBPROCESS_SSL_ENABLED", get("LIBPROCESS_SSL_ENABLED").or(get("SSL_ENABLED")), true);
        let verify = c.flag("LIBPROCESS_SSL_VERIFY_CERT", get("LIBPROCESS_SSL_VERIFY_CERT"), true);
        let mut path = "/slave(1)/api/v1/executor".to_owned();
        let mut authority = None;
        if let Some(upid) = get("MESOS_SLAVE_PID").filter(|v| !v.is_empty()) {
            match parse_upid(upid) {
                Some((id, address)) => {
                    path = format!("/{id}/api/v1/executor");
                    authority = Some(address.to_owned());
                }
                None => c.problem("MESOS_SLAVE_PID", format!("{upid:?} is not a UPID like `slave(1)@10.0.0.1:5051`")),
            }
        } else if let Some(endpoint) = get("MESOS_AGENT_ENDPOINT").filter(|v| !v.is_empty()) {
            if valid_authority(endpoint) {
                authority = Some(endpoint.to_owned());
            } else {
                c.problem("MESOS_AGENT_ENDPOINT", format!("{endpoint:?} is not `host:port`"));
            }
        }
        let transport = match (get("MESOS_DOMAIN_SOCKET").filter(|v| !v.is_empty()), authority) {
            (Some(socket), _) => Some(AgentTransport::Unix { path: PathBuf::from(socket) }),
            (None, Some(authority)) if ssl => Some(AgentTransport::Https {
                authority,
                ca_file: get("LIBPROCESS_SSL_CA_FILE").filter(|v| !v.is_empty()).map(PathBuf::from),
                verify,
            }),
            (None, Some(authority)) => Some(AgentTransport::Http { authority }),
            (None, None) => {
                if !vars.contains_key("MESOS_SLAVE_PID") && !vars.contains_key("MESOS_AGENT_ENDPOINT") {
                    c.problem(
                        "MESOS_SLAVE_PID",
                        "is missing (as are MESOS_AGENT_ENDPOINT and MESOS_DOMAIN_SOCKET): no way to reach the agent",
                    );
                }
                None
            }
        };

        let checkpoint = c.flag("MESOS_CHECKPOINT", get("MESOS_CHECKPOINT"), false);
        let mut recovery_timeout = Duration::from_secs(15 * 60);
        let mut subscription_backoff_max = Duration::from_secs(2);
        for (name, slot) in
            [("MESOS_RECOVERY_TIMEOUT", &mut recovery_timeout), ("MESOS_SUBSCRIPTION_BACKOFF_MAX", &mut subscription_backoff_max)]
        {
            match get(name) {
                Some(v) => *slot = c.duration(name, Some(v), *slot),
                None if checkpoint => c.problem(name, "is missing (required when MESOS_CHECKPOINT=1)"),
                None => {}
            }
        }
        let shutdown_grace_period = match c.required(&vars, "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD") {
            Some(v) => c.duration("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", Some(v), Duration::from_secs(5)),
            None => Duration::from_secs(5),
        };

        let directory = get("MESOS_DIRECTORY").filter(|v| !v.is_empty()).map(PathBuf::from);
        let sandbox = get("MESOS_SANDBOX")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| directory.clone())
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));

        let settings = Self::settings(&vars, &mut c);
        let agent_id = get("MESOS_SLAVE_ID").filter(|v| !v.is_empty()).map(str::to_owned);
        // Read the token once and keep it out of the environment we hand down,
        // as the Mesos executor library erases it from its own.
        let auth_token = vars.remove("MESOS_EXECUTOR_AUTHENTICATION_TOKEN").filter(|v| !v.is_empty()).map(Secret::new);

        if !c.problems.is_empty() {
            return Err(ConfigError { problems: c.problems });
        }
        Ok(Self {
            framework_id,
            executor_id,
            agent_id,
            // Present whenever there were no problems.
            agent: AgentEndpoint { transport: transport.unwrap_or(AgentTransport::Http { authority: String::new() }), path },
            sandbox,
            directory,
            checkpoint,
            recovery_timeout,
            subscription_backoff_max,
            shutdown_grace_period,
            auth_token,
            settings,
            environment: Environment(vars),
        })
    }

    fn settings(vars: &BTreeMap<String, String>, c: &mut Collector) -> Settings {
        let ours = vars.iter().filter(|(k, _)| k.starts_with(PREFIX)).map(|(k, v)| (k.clone(), v.clone()));
        let raw: RawSettings = envy::prefixed(PREFIX).from_iter(ours).unwrap_or_else(|e| {
            // All fields are optional strings, so envy cannot fail on a value;
            // report it anyway rather than lose it.
            c.problem(PREFIX, e.to_string());
            RawSettings::default()
        });
        let remote = remote_settings(&raw, c);
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                c.problem("HOOK_EXECUTOR_LOG_FORMAT", format!("{other:?} is not `text` or `json`"));
                LogFormat::Text
            }
        };
        let log_level = raw.log_level.clone().unwrap_or_else(|| "info".to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            c.problem("HOOK_EXECUTOR_LOG_LEVEL", format!("{log_level:?} is not a log filter: {e}"));
        }
        let max_record_size = match raw.max_record_size.as_deref() {
            None => crate::agent::recordio::DEFAULT_MAX_RECORD_LEN,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1024 => n,
                _ => {
                    c.problem("HOOK_EXECUTOR_MAX_RECORD_SIZE", format!("{v:?} is not a byte count of at least 1024"));
                    crate::agent::recordio::DEFAULT_MAX_RECORD_LEN
                }
            },
        };
        let call_timeout = c.duration("HOOK_EXECUTOR_CALL_TIMEOUT", raw.call_timeout.as_deref(), Duration::from_secs(5));
        if call_timeout.is_zero() {
            c.problem("HOOK_EXECUTOR_CALL_TIMEOUT", "must be greater than zero");
        }
        Settings {
            log_format,
            log_level,
            kill_grace_period: c.duration("HOOK_EXECUTOR_KILL_GRACE_PERIOD", raw.kill_grace_period.as_deref(), Duration::from_secs(3)),
            sigterm_exclude_processes: list(raw.sigterm_exclude_processes.as_deref()),
            ack_timeout: c.duration("HOOK_EXECUTOR_ACK_TIMEOUT", raw.ack_timeout.as_deref(), Duration::from_secs(60)),
            call_timeout,
            registration_timeout: c.duration(
                "HOOK_EXECUTOR_REGISTRATION_TIMEOUT",
                raw.registration_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            max_record_size,
            env_denylist: list(raw.env_denylist.as_deref()),
            hooks: Self::hook_settings(&raw, vars, c),
            remote,
        }
    }

    fn hook_settings(raw: &RawSettings, vars: &BTreeMap<String, String>, c: &mut Collector) -> HookSettings {
        let chain = list(raw.hooks.as_deref());
        for (i, name) in chain.iter().enumerate() {
            if !HOOK_NAMES.contains(&name.as_str()) {
                c.problem("HOOK_EXECUTOR_HOOKS", format!("unknown hook {name:?} (known: {})", HOOK_NAMES.join(", ")));
            } else if chain[..i].contains(name) {
                c.problem("HOOK_EXECUTOR_HOOKS", format!("hook {name:?} is listed twice"));
            }
        }
        let enabled = |name: &str| chain.iter().any(|h| h == name);
        let dir = raw.hooks_dir.as_deref().filter(|d| !d.is_empty()).map(PathBuf::from);
        if enabled("exec") {
            match &dir {
                None => c.problem("HOOK_EXECUTOR_HOOKS_DIR", "is missing (required by the `exec` hook)"),
                Some(d) if !d.is_dir() => c.problem("HOOK_EXECUTOR_HOOKS_DIR", format!("{} is not a directory", d.display())),
                Some(_) => {}
            }
        }
        let webhook_urls = list(raw.webhook_urls.as_deref());
        if enabled("webhook") && webhook_urls.is_empty() {
            c.problem("HOOK_EXECUTOR_WEBHOOK_URLS", "is missing (required by the `webhook` hook)");
        }
        for url in &webhook_urls {
            let ok = url.parse::<hyper::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if !ok {
                c.problem("HOOK_EXECUTOR_WEBHOOK_URLS", format!("{url:?} is not an http(s) URL"));
            }
        }
        let consul_addr = vars.get("CONSUL_HTTP_ADDR").map(String::as_str);
        let consul_url = crate::hooks::consul::base_url(consul_addr);
        if enabled("consul") && consul_url.parse::<hyper::Uri>().map_or(true, |u| u.host().is_none()) {
            c.problem("CONSUL_HTTP_ADDR", format!("{consul_url:?} is not an address"));
        }
        HookSettings {
            timeout: c.duration("HOOK_EXECUTOR_HOOK_TIMEOUT", raw.hook_timeout.as_deref(), Duration::from_secs(30)),
            dir,
            allow_privileged: c.flag("HOOK_EXECUTOR_POLICY_ALLOW_PRIVILEGED", raw.policy_allow_privileged.as_deref(), true),
            allowed_host_paths: list(raw.policy_allowed_host_paths.as_deref()).into_iter().map(PathBuf::from).collect(),
            allowed_users: list(raw.policy_allowed_users.as_deref()),
            consul_service_label: raw.consul_service_label.clone().filter(|l| !l.is_empty()).unwrap_or_else(|| "consul".to_owned()),
            consul_address: raw.consul_address.clone().filter(|a| !a.is_empty()),
            consul_deregister_wait: c.duration(
                "HOOK_EXECUTOR_CONSUL_DEREGISTER_WAIT",
                raw.consul_deregister_wait.as_deref(),
                Duration::ZERO,
            ),
            consul_url,
            consul_token: vars.get("CONSUL_HTTP_TOKEN").filter(|t| !t.is_empty()).map(|t| Secret::new(t.clone())),
            webhook_urls,
            webhook_required: c.flag("HOOK_EXECUTOR_WEBHOOK_REQUIRED", raw.webhook_required.as_deref(), true),
            webhook_timeout: c.duration("HOOK_EXECUTOR_WEBHOOK_TIMEOUT", raw.webhook_timeout.as_deref(), Duration::from_secs(5)),
            chain,
        }
    }

    /// `HOOK_EXECUTOR_*` variables in the environment that we do not know, most
    /// likely typos; the caller logs them (not an error, so that rolling back to
    /// an older binary with a newer app definition still starts).
    #[must_use]
    pub fn unknown_variables(&self) -> Vec<String> {
        let known: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        self.environment.0.keys().filter(|k| k.starts_with(PREFIX) && !known.contains(&k.as_str())).cloned().collect()
    }
}

/// The `--help` text: usage, then every variable with type, default and meaning.
#[must_use]
pub fn help_text() -> String {
    let mut out = String::from(
        "mesos-hook-executor: a Mesos executor with hook chains, health checks and a remote-execution API.\n\n\
         Usage: started by the Mesos agent (e.g. as a Marathon app's `executor`); configured only by\n\
         environment variables. Arguments other than --help and --version are ignored (so it can stand\n\
         in for mesos-executor, whose flags the agent passes).\n\n\
         Environment variables:\n",
    );
    for v in VARIABLES {
        out.push_str(&format!("  {:<40} {:<10} default: {}\n      {}\n", v.name, v.kind.to_string(), v.default, v.help));
    }
    out.push_str(
        "\nExit codes: 0 clean run (terminal update acknowledged, or SHUTDOWN before any task);\n\
         1 terminal update not acknowledged in time; 2 configuration error; 3 agent lost or never reached;\n\
         4 internal error (see log).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(String, String)> {
        [
            ("MESOS_FRAMEWORK_ID", "fw-1"),
            ("MESOS_EXECUTOR_ID", "ex-1"),
            ("MESOS_SLAVE_PID", "slave(1)@10.1.2.3:5051"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs"),
            ("MESOS_SANDBOX", "/tmp/sb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v = base();
        v.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        v.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        v
    }

    #[test]
    fn minimal_agent_environment() {
        let c = Config::from_vars(base()).expect("valid");
        assert_eq!(c.framework_id, "fw-1");
        assert_eq!(c.agent.url(), "http://10.1.2.3:5051/slave(1)/api/v1/executor");
        assert!(!c.checkpoint);
        assert_eq!(c.shutdown_grace_period, Duration::from_secs(5));
        assert_eq!(c.settings.kill_grace_period, Duration::from_secs(3));
        assert_eq!(c.settings.ack_timeout, Duration::from_secs(60));
        assert_eq!(c.sandbox, PathBuf::from("/tmp/sb"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::from_vars(vec![
            ("MESOS_CHECKPOINT".to_owned(), "1".to_owned()),
            ("HOOK_EXECUTOR_KILL_GRACE_PERIOD".to_owned(), "soon".to_owned()),
            ("HOOK_EXECUTOR_LOG_FORMAT".to_owned(), "xml".to_owned()),
        ])
        .expect_err("invalid");
        let names: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        for want in [
            "MESOS_FRAMEWORK_ID",
            "MESOS_EXECUTOR_ID",
            "MESOS_SLAVE_PID",
            "MESOS_RECOVERY_TIMEOUT",
            "MESOS_SUBSCRIPTION_BACKOFF_MAX",
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
            "HOOK_EXECUTOR_LOG_FORMAT",
            "HOOK_EXECUTOR_KILL_GRACE_PERIOD",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let text = err.to_string();
        assert!(text.contains("MESOS_FRAMEWORK_ID: is missing"), "{text}");
    }

    #[test]
    fn checkpoint_is_only_one_or_zero() {
        let c = Config::from_vars(with(&[("MESOS_CHECKPOINT", "0")])).expect("valid");
        assert!(!c.checkpoint);
        let c = Config::from_vars(with(&[
            ("MESOS_CHECKPOINT", "1"),
            ("MESOS_RECOVERY_TIMEOUT", "15mins"),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs"),
        ]))
        .expect("valid");
        assert!(c.checkpoint);
        assert_eq!(c.recovery_timeout, Duration::from_secs(900));
        let err = Config::from_vars(with(&[("MESOS_CHECKPOINT", "true")])).expect_err("invalid");
        assert_eq!(err.problems[0].variable, "MESOS_CHECKPOINT");
    }

    #[test]
    fn endpoint_variants() {
        let c = Config::from_vars(with(&[("MESOS_SLAVE_PID", ""), ("MESOS_AGENT_ENDPOINT", "127.0.0.1:5051")])).expect("valid");
        assert_eq!(c.agent.url(), "http://127.0.0.1:5051/slave(1)/api/v1/executor");
        let c = Config::from_vars(with(&[("MESOS_DOMAIN_SOCKET", "/run/agent.sock")])).expect("valid");
        assert_eq!(c.agent.url(), "http+unix:///run/agent.sock/slave(1)/api/v1/executor");
        let c = Config::from_vars(with(&[("LIBPROCESS_SSL_ENABLED", "true")])).expect("valid");
        assert!(matches!(c.agent.transport, AgentTransport::Https { verify: false, .. }));
        let err = Config::from_vars(with(&[("MESOS_SLAVE_PID", "nonsense")])).expect_err("invalid");
        assert_eq!(err.problems[0].variable, "MESOS_SLAVE_PID");
    }

    #[test]
    fn token_is_redacted_in_debug() {
        let c = Config::from_vars(with(&[("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", "s3cr3t-jwt")])).expect("valid");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t-jwt"), "{debug}");
        assert!(!c.environment.0.contains_key("MESOS_EXECUTOR_AUTHENTICATION_TOKEN"));
        assert!(format!("{:?}", c.auth_token).contains("redacted"));
        assert_eq!(c.auth_token.as_ref().map(Secret::expose), Some("s3cr3t-jwt"));
    }

    #[test]
    fn unknown_hook_executor_variables_are_reported() {
        let c = Config::from_vars(with(&[("HOOK_EXECUTOR_KILL_GRACE_PERIDO", "5s")])).expect("valid");
        assert_eq!(c.unknown_variables(), vec!["HOOK_EXECUTOR_KILL_GRACE_PERIDO".to_owned()]);
    }

    #[test]
    fn hook_configuration_is_validated() {
        let err = Config::from_vars(with(&[
            ("HOOK_EXECUTOR_HOOKS", "policy,exce,policy,exec,webhook"),
            ("HOOK_EXECUTOR_WEBHOOK_URLS", "ftp://x"),
        ]))
        .expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("unknown hook \"exce\""), "{text}");
        assert!(text.contains("\"policy\" is listed twice"), "{text}");
        assert!(text.contains("HOOK_EXECUTOR_HOOKS_DIR: is missing"), "{text}");
        assert!(text.contains("\"ftp://x\" is not an http(s) URL"), "{text}");
        let c = Config::from_vars(with(&[("HOOK_EXECUTOR_HOOKS", "policy, consul"), ("CONSUL_HTTP_TOKEN", "t0k3n")])).expect("valid");
        assert_eq!(c.settings.hooks.chain, vec!["policy", "consul"]);
        assert_eq!(c.settings.hooks.consul_url, "http://127.0.0.1:8500");
        assert!(!format!("{c:?}").contains("t0k3n"));
    }

    #[test]
    fn readme_documents_every_variable() {
        let readme = include_str!("../../README.md");
        for v in VARIABLES {
            assert!(readme.contains(&format!("| `{}` |", v.name)), "README's configuration table lacks {}", v.name);
        }
    }

    #[test]
    fn variables_table_matches_the_envy_struct() {
        let fields = serde_json::to_value(RawSettings::default()).expect("serialises");
        let fields: Vec<String> = fields.as_object().expect("object").keys().map(|k| format!("{PREFIX}{}", k.to_uppercase())).collect();
        let table: Vec<&str> = VARIABLES.iter().map(|v| v.name).filter(|n| n.starts_with(PREFIX)).collect();
        for f in &fields {
            assert!(table.contains(&f.as_str()), "{f} is read but not documented");
        }
        for t in &table {
            assert!(fields.iter().any(|f| f == t), "{t} is documented but not read");
        }
    }
}

/// Settings of the remote-execution API (`HOOK_EXECUTOR_REMOTE_*`).
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// Whether the API is served at all.
    pub enabled: bool,
    /// The socket path; `None` means `executor.sock` in the sandbox
    /// ([`Config::remote_socket`]).
    pub socket: Option<PathBuf>,
    /// Peer uids allowed; `None` means root and the executor's own uid, which
    /// is exactly who a mode-0600 socket lets connect anyway.
    pub allowed_uids: Option<Vec<u32>>,
    /// Optional TCP listener; only ever set together with `token`.
    pub tcp: Option<std::net::SocketAddr>,
    /// Bearer token for the TCP listener.
    pub token: Option<Secret>,
    /// SIGTERM→SIGKILL grace for a command's process group.
    pub kill_grace: Duration,
    /// Largest request body.
    pub max_body: usize,
    /// Bytes captured per output stream of one command.
    pub max_output: usize,
    /// Commands running at once.
    pub max_running: usize,
    /// Finished results kept.
    pub max_retained: usize,
    /// How long a finished result is kept.
    pub retention: Duration,
}

impl Config {
    /// Where the remote-execution socket lives: `HOOK_EXECUTOR_REMOTE_SOCKET`,
    /// else `executor.sock` in the sandbox (design §2).
    #[must_use]
    pub fn remote_socket(&self) -> PathBuf {
        self.settings.remote.socket.clone().unwrap_or_else(|| self.sandbox.join("executor.sock"))
    }
}

/// Parses a count in `[min, max]`, recording a problem otherwise.
fn bounded_count(c: &mut Collector, variable: &str, value: Option<&str>, default: usize, min: usize, max: usize) -> usize {
    match value {
        None => default,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                c.problem(variable, format!("{v:?} is not a whole number from {min} to {max}"));
                default
            }
        },
    }
}

fn remote_settings(raw: &RawSettings, c: &mut Collector) -> RemoteSettings {
    let enabled = c.flag_or("HOOK_EXECUTOR_REMOTE_ENABLED", raw.remote_enabled.as_deref(), true);
    let allowed_uids = raw.remote_allowed_uids.as_deref().filter(|v| !v.trim().is_empty()).map(|v| {
        let mut uids = Vec::new();
        for item in list(Some(v)) {
            match item.parse::<u32>() {
                Ok(uid) => uids.push(uid),
                Err(_) => c.problem("HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS", format!("{item:?} is not a numeric uid")),
            }
        }
        uids
    });
    let token = raw.remote_token.clone().filter(|t| !t.is_empty()).map(Secret::new);
    let tcp = match raw.remote_tcp.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<std::net::SocketAddr>() {
            Ok(addr) if token.is_some() => Some(addr),
            Ok(_) => {
                c.problem(
                    "HOOK_EXECUTOR_REMOTE_TCP",
                    "requires HOOK_EXECUTOR_REMOTE_TOKEN (the TCP listener is never open without a bearer token)",
                );
                None
            }
            Err(_) => {
                c.problem("HOOK_EXECUTOR_REMOTE_TCP", format!("{v:?} is not `ip:port`"));
                None
            }
        },
    };
    let kill_grace = c.duration("HOOK_EXECUTOR_REMOTE_KILL_GRACE", raw.remote_kill_grace.as_deref(), Duration::from_secs(2));
    let retention = c.duration("HOOK_EXECUTOR_REMOTE_RETENTION", raw.remote_retention.as_deref(), Duration::from_secs(600));
    RemoteSettings {
        enabled,
        socket: raw.remote_socket.as_deref().filter(|v| !v.is_empty()).map(PathBuf::from),
        allowed_uids,
        tcp,
        token,
        kill_grace,
        max_body: bounded_count(c, "HOOK_EXECUTOR_REMOTE_MAX_BODY", raw.remote_max_body.as_deref(), 64 * 1024, 1024, 64 * 1024 * 1024),
        max_output: bounded_count(
            c,
            "HOOK_EXECUTOR_REMOTE_MAX_OUTPUT",
            raw.remote_max_output.as_deref(),
            256 * 1024,
            0,
            1024 * 1024 * 1024,
        ),
        max_running: bounded_count(c, "HOOK_EXECUTOR_REMOTE_MAX_RUNNING", raw.remote_max_running.as_deref(), 64, 1, 4096),
        max_retained: bounded_count(c, "HOOK_EXECUTOR_REMOTE_MAX_RETAINED", raw.remote_max_retained.as_deref(), 128, 0, 100_000),
        retention,
    }
}

#[cfg(test)]
mod remote_tests {
    use super::*;

    fn vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("MESOS_FRAMEWORK_ID", "fw-1"),
            ("MESOS_EXECUTOR_ID", "ex-1"),
            ("MESOS_SLAVE_PID", "slave(1)@10.1.2.3:5051"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs"),
            ("MESOS_SANDBOX", "/tmp/sb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        v.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        v
    }

    #[test]
    fn remote_defaults() {
        let c = Config::from_vars(vars(&[])).expect("valid");
        let r = &c.settings.remote;
        assert!(r.enabled);
        assert_eq!(c.remote_socket(), PathBuf::from("/tmp/sb/executor.sock"));
        assert_eq!((r.max_running, r.max_retained, r.max_output, r.max_body), (64, 128, 262_144, 65_536));
        assert!(r.tcp.is_none() && r.allowed_uids.is_none());
    }

    #[test]
    fn remote_problems_are_collected_and_the_token_is_redacted() {
        let err = Config::from_vars(vars(&[
            ("HOOK_EXECUTOR_REMOTE_ENABLED", "yes"),
            ("HOOK_EXECUTOR_REMOTE_TCP", "127.0.0.1:7070"),
            ("HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS", "0,bob"),
            ("HOOK_EXECUTOR_REMOTE_MAX_RUNNING", "0"),
        ]))
        .expect_err("invalid");
        let names: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        for want in [
            "HOOK_EXECUTOR_REMOTE_ENABLED",
            "HOOK_EXECUTOR_REMOTE_TCP",
            "HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS",
            "HOOK_EXECUTOR_REMOTE_MAX_RUNNING",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let c = Config::from_vars(vars(&[
            ("HOOK_EXECUTOR_REMOTE_TCP", "127.0.0.1:7070"),
            ("HOOK_EXECUTOR_REMOTE_TOKEN", "t0ken-s3cret"),
            ("HOOK_EXECUTOR_REMOTE_ENABLED", "false"),
        ]))
        .expect("valid");
        assert!(!c.settings.remote.enabled);
        assert!(!format!("{c:?}").contains("t0ken-s3cret"));
        assert_eq!(c.settings.remote.tcp, "127.0.0.1:7070".parse().ok());
    }
}
