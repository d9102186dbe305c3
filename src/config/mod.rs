//! Configuration, read once from the environment at start and validated as a
//! whole: the `MESOS_*` variables the agent sets (Apache Mesos documents them with its executor HTTP API) and
//! our own `HOOK_EXECUTOR_*` settings. Every problem is collected and reported
//! together, naming each variable, so an operator fixes an app definition in one
//! round trip. Secrets are wrapped in [`Secret`] so they never reach `Debug`
//! output or logs.
//!
//! Each variable is declared once, in `variables.rs`; this module turns the
//! declared values into [`Config`] and applies the rules that span several
//! variables.

use std::{collections::BTreeMap, ffi::OsString, fmt, path::PathBuf, time::Duration};

pub(crate) mod bytes;
pub(crate) mod duration;
mod output;
pub mod protect;
mod variables;

pub use output::{LogstashTarget, OutputSettings, Protocol, ScrapeFormat};

#[allow(clippy::wildcard_imports)]
use variables::*;
pub use variables::{help_text, AliasUse, Spec, ALLEGRO_PREFIX, VARIABLES};
use variables::{Problem, Reader, ValueError};

/// Prefix of every variable of ours.
pub const PREFIX: &str = "HOOK_EXECUTOR_";

/// A value that must never be printed: `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }
    /// The secret itself, for the one place that sends it.
    #[must_use]
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every configuration problem found, reported at once: one line per
/// problem, the variable's name, what is wrong, then each underlying cause.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order of the variables table.
    pub(crate) problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.problems.len())?;
        if self.problems.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str("):")?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.variable, p.error)?;
            let mut shown = p.error.to_string();
            let mut cause = std::error::Error::source(&p.error);
            while let Some(c) = cause {
                // Some errors (tracing's filter parser) already print their
                // own cause; show each text once.
                let text = c.to_string();
                if !shown.contains(&text) {
                    write!(f, ": {text}")?;
                    shown = text;
                }
                cause = c.source();
            }
        }
        Ok(())
    }
}

/// Log output format (`HOOK_EXECUTOR_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines with the framework and executor ids (`full`,
    /// formerly `text`).
    #[default]
    Full,
    /// Short human-readable lines without the ids, for a terminal (`compact`).
    Compact,
    /// One JSON object per line (`json`).
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
    pub(crate) transport: AgentTransport,
    /// Request path, `/slave(1)/api/v1/executor` by default.
    pub(crate) path: String,
}

impl AgentEndpoint {
    /// A human-readable URL for logs.
    #[must_use]
    pub(crate) fn url(&self) -> String {
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
    pub(crate) agent_id: Option<String>,
    /// The agent's executor API.
    pub(crate) agent: AgentEndpoint,
    /// The sandbox as seen by the task (`MESOS_SANDBOX`, else `MESOS_DIRECTORY`,
    /// else the working directory).
    pub(crate) sandbox: PathBuf,
    /// The sandbox's host path (`MESOS_DIRECTORY`), when known.
    pub(crate) directory: Option<PathBuf>,
    /// `MESOS_CHECKPOINT=1`: reconnect after agent loss instead of shutting down.
    pub(crate) checkpoint: bool,
    /// `MESOS_RECOVERY_TIMEOUT`: how long to keep reconnecting (checkpoint
    /// only; zero and unused without it).
    pub(crate) recovery_timeout: Duration,
    /// `MESOS_SUBSCRIPTION_BACKOFF_MAX`: upper bound of the random reconnect
    /// delay (checkpoint only; zero and unused without it).
    pub(crate) subscription_backoff_max: Duration,
    /// `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD`: the agent destroys the container
    /// this long after sending SHUTDOWN.
    pub(crate) shutdown_grace_period: Duration,
    /// `MESOS_EXECUTOR_AUTHENTICATION_TOKEN`, sent as a Bearer token.
    pub(crate) auth_token: Option<Secret>,
    /// Our own settings.
    pub settings: Settings,
    /// The executor's own environment, from which the task's is derived by
    /// explicit rules (see `launch`). The agent token is never in it.
    pub(crate) environment: Environment,
}

/// The executor's environment: the variables that are text, and those
/// whose name or value is not UTF-8 (none of ours; passed to the task byte
/// for byte). `Debug` shows names only: values may be secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Environment(
    pub(crate) BTreeMap<String, String>,
    pub(crate) BTreeMap<OsString, OsString>,
);

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.0.keys())
            .entries(self.1.keys())
            .finish()
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
    pub(crate) kill_grace_period: Duration,
    /// Process names spared from SIGTERM (still SIGKILLed at the deadline).
    pub(crate) sigterm_exclude_processes: Vec<String>,
    /// How long to wait for the terminal update's acknowledgement before exiting.
    pub(crate) ack_timeout: Duration,
    /// Timeout of each agent call and of each connection attempt.
    pub(crate) call_timeout: Duration,
    /// How long to keep trying the first SUBSCRIBE before giving up.
    pub(crate) registration_timeout: Duration,
    /// Largest RecordIO record accepted from the agent.
    pub(crate) max_record_size: usize,
    /// Extra variable names (or `PREFIX*` patterns) kept out of the task's
    /// environment, on top of the built-in deny-list.
    pub(crate) env_denylist: Vec<String>,
    /// Hook settings.
    pub hooks: HookSettings,
    /// The remote-execution API (`HOOK_EXECUTOR_REMOTE_*`).
    pub(crate) remote: RemoteSettings,
    /// The task's output: rotation, scraping, shipping (`HOOK_EXECUTOR_LOG_*`).
    pub output: OutputSettings,
    /// Scheduled task ends: certificate expiry and maximum lifetime.
    pub(crate) lifetime: LifetimeSettings,
    /// The Graphite push, when configured.
    pub(crate) graphite: Option<GraphiteSettings>,
}

/// Where and how often the metrics are pushed to Graphite.
#[derive(Debug, Clone)]
pub(crate) struct GraphiteSettings {
    /// `host:port`.
    pub(crate) address: String,
    /// The path prefix, with `{task_id}`, `{app_id}`, `{executor_id}`.
    pub(crate) prefix: String,
    /// Between pushes.
    pub(crate) interval: Duration,
}

/// When a task ends on a schedule of its own (`task::lifetime`).
#[derive(Debug, Clone, Default)]
pub(crate) struct LifetimeSettings {
    /// `HOOK_EXECUTOR_CERTIFICATE_FILE`, resolved against the sandbox.
    pub(crate) certificate_file: Option<PathBuf>,
    /// Random range taken off the certificate's `NotAfter`.
    pub(crate) certificate_range: Duration,
    /// `HOOK_EXECUTOR_MAX_LIFETIME`.
    pub(crate) max_lifetime: Option<Duration>,
    /// Random part taken off the maximum lifetime.
    pub(crate) max_lifetime_spread: Duration,
}

/// Who runs `exec` hook scripts (`HOOK_EXECUTOR_HOOKS_EXEC_USER`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecHookUser {
    /// The executor's own user (root on most nodes): only files owned by
    /// root or that user run.
    #[default]
    Executor,
    /// The task's user: task-owned hooks, which then cannot run as root.
    Task,
}

/// Names of the built-in hooks, as `HOOK_EXECUTOR_HOOKS` spells them.
pub const HOOK_NAMES: [&str; 4] = ["policy", "exec", "consul", "webhook"];

/// Settings of the hook chain and the built-in hooks.
#[derive(Debug, Clone, Default)]
pub struct HookSettings {
    /// Hooks in chain order (validated names).
    pub chain: Vec<String>,
    /// Time limit of each hook call.
    pub(crate) timeout: Duration,
    /// `exec`: the scripts' directory.
    pub(crate) dir: Option<PathBuf>,
    /// `exec`: who runs the scripts.
    pub(crate) exec_user: ExecHookUser,
    /// `exec`: most bytes a before-start script may print on stdout.
    pub(crate) max_output: usize,
    /// `policy`: allow Docker privileged.
    pub(crate) allow_privileged: bool,
    /// `policy`: allowed host path prefixes.
    pub(crate) allowed_host_paths: Vec<PathBuf>,
    /// `policy`: allowed users.
    pub(crate) allowed_users: Vec<String>,
    /// `consul`: the service label.
    pub(crate) consul_service_label: String,
    /// `consul`: registered address override.
    pub(crate) consul_address: Option<String>,
    /// `consul`: drain wait after deregistration.
    pub(crate) consul_deregister_wait: Duration,
    /// `consul`: `CONSUL_HTTP_ADDR` as a base URL.
    pub(crate) consul_url: String,
    /// `consul`: `CONSUL_HTTP_TOKEN`.
    pub(crate) consul_token: Option<Secret>,
    /// `webhook`: target URLs.
    pub(crate) webhook_urls: Vec<String>,
    /// `webhook`: veto on before-start failure.
    pub(crate) webhook_required: bool,
    /// `webhook`: per-attempt timeout.
    pub(crate) webhook_timeout: Duration,
}

/// Settings of the remote-execution API (`HOOK_EXECUTOR_REMOTE_*`).
#[derive(Debug, Clone)]
pub(crate) struct RemoteSettings {
    /// Whether the API is served at all.
    pub(crate) enabled: bool,
    /// The socket path; `None` means `executor.sock` in the sandbox
    /// ([`Config::remote_socket`]).
    pub(crate) socket: Option<PathBuf>,
    /// Peer uids allowed; `None` means root and the executor's own uid, which
    /// is exactly who a mode-0600 socket lets connect anyway.
    pub(crate) allowed_uids: Option<Vec<u32>>,
    /// Optional TCP listener; only ever set together with `token`.
    pub(crate) tcp: Option<std::net::SocketAddr>,
    /// Bearer token for the TCP listener.
    pub(crate) token: Option<Secret>,
    /// SIGTERM→SIGKILL grace for a command's process group.
    pub(crate) kill_grace: Duration,
    /// Largest request body.
    pub(crate) max_body: usize,
    /// Bytes captured per output stream of one command.
    pub(crate) max_output: usize,
    /// Commands running at once.
    pub(crate) max_running: usize,
    /// Finished results kept.
    pub(crate) max_retained: usize,
    /// How long a finished result is kept.
    pub(crate) retention: Duration,
    /// Captured bytes kept in finished results, all together.
    pub(crate) max_retained_bytes: usize,
    /// Executes waiting for a running slot.
    pub(crate) max_queued: usize,
    /// How long an execute waits for a running slot.
    pub(crate) queue_timeout: Duration,
}

impl Config {
    /// Reads the configuration from this process's environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_os_vars(std::env::vars_os())
    }

    /// Reads the configuration from variables that need not be UTF-8: a
    /// variable of ours (one [`VARIABLES`] declares) that is not is an
    /// error naming it; any other is kept, byte for byte, for the task.
    pub fn from_os_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let (text, other) = split_utf8(vars);
        let not_utf8: Vec<&'static str> = other
            .keys()
            .filter_map(|k| declared_name(&k.to_string_lossy()))
            .collect();
        let mut config = Self::read_checked(text, &not_utf8)?;
        config.environment.1 = other
            .into_iter()
            .filter(|(k, _)| declared_name(&k.to_string_lossy()).is_none())
            .collect();
        Ok(config)
    }

    /// Reads the configuration from the given variables (the testable core).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::read_checked(vars.into_iter().collect(), &[])
    }

    /// Reads `vars`; the variables named in `not_utf8` were present with a
    /// value that is not UTF-8, each a problem of its own.
    fn read_checked(
        mut vars: BTreeMap<String, String>,
        not_utf8: &[&'static str],
    ) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(&vars).not_utf8(not_utf8);
        let config = Self::read(&mut reader);
        let problems = reader.finish();
        match config {
            Some(mut config) if problems.is_empty() => {
                // Keep the token out of the environment we hand down, as the
                // Mesos executor library erases it from its own.
                vars.remove(AUTHENTICATION_TOKEN.spec.name);
                config.environment = Environment(vars, BTreeMap::new());
                Ok(config)
            }
            // `read` returns `None` only after recording why.
            _ => Err(ConfigError { problems }),
        }
    }

    /// Reads every variable through `r` and applies the rules that span
    /// several; `None` when there is no way to reach the agent. The
    /// environment is filled in by the caller.
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let framework_id = r.get(&FRAMEWORK_ID);
        let executor_id = r.get(&EXECUTOR_ID);
        let agent_id = r.get(&SLAVE_ID);
        let agent = agent_endpoint(r);

        let checkpoint = r.get(&CHECKPOINT);
        for var in [&RECOVERY_TIMEOUT, &SUBSCRIPTION_BACKOFF_MAX] {
            if checkpoint && !r.is_set(var) {
                r.problem(var, ValueError::MissingFor("when MESOS_CHECKPOINT=1"));
            }
        }
        let recovery_timeout = r.get(&RECOVERY_TIMEOUT);
        let subscription_backoff_max = r.get(&SUBSCRIPTION_BACKOFF_MAX);
        let shutdown_grace_period = r.get(&SHUTDOWN_GRACE_PERIOD);

        let directory = r.get(&DIRECTORY);
        let sandbox = r
            .get(&SANDBOX)
            .or_else(|| directory.clone())
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        let auth_token = r.get(&AUTHENTICATION_TOKEN);
        let mut settings = settings(r);
        settings.lifetime.certificate_file = settings
            .lifetime
            .certificate_file
            .take()
            .map(|f| sandbox.join(f));
        Some(Self {
            framework_id,
            executor_id,
            agent_id,
            agent: agent?,
            sandbox,
            directory,
            checkpoint,
            recovery_timeout,
            subscription_backoff_max,
            shutdown_grace_period,
            auth_token,
            settings,
            environment: Environment::default(),
        })
    }

    /// Where the remote-execution socket lives: `HOOK_EXECUTOR_REMOTE_SOCKET`,
    /// else `executor.sock` in the sandbox (design §2).
    #[must_use]
    pub(crate) fn remote_socket(&self) -> PathBuf {
        self.settings
            .remote
            .socket
            .clone()
            .unwrap_or_else(|| self.sandbox.join("executor.sock"))
    }

    /// `HOOK_EXECUTOR_*` variables in the environment that we do not know, most
    /// likely typos, and `ALLEGRO_EXECUTOR_*` ones with no counterpart here;
    /// the caller logs them (not an error, so that rolling back to an older
    /// binary with a newer app definition still starts, and an allegro app
    /// definition starts as it is).
    #[must_use]
    pub fn unknown_variables(&self) -> Vec<String> {
        let known: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        self.environment
            .0
            .keys()
            .filter(|k| {
                (k.starts_with(PREFIX) && !known.contains(&k.as_str()))
                    || (k.starts_with(ALLEGRO_PREFIX) && !variables::is_alias(k))
            })
            .cloned()
            .collect()
    }

    /// Settings read from another name (allegro's `ALLEGRO_EXECUTOR_*`, or
    /// libprocess' older one), and other names ignored because ours is set
    /// too; the caller logs each once at start.
    #[must_use]
    pub fn alias_uses(&self) -> Vec<AliasUse> {
        variables::alias_uses(&self.environment.0)
    }
}

/// Splits variables into those that are text and those whose name or value
/// is not UTF-8.
fn split_utf8(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> (BTreeMap<String, String>, BTreeMap<OsString, OsString>) {
    let mut text = BTreeMap::new();
    let mut other = BTreeMap::new();
    for (k, v) in vars {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => {
                text.insert(k, v);
            }
            (k, v) => {
                let os = |r: Result<String, OsString>| r.map_or_else(|e| e, OsString::from);
                other.insert(os(k), os(v));
            }
        }
    }
    (text, other)
}

/// The declared name (or second name) `name` is, if it is one of ours.
fn declared_name(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .flat_map(|v| std::iter::once(v.name).chain(v.also_read_as.iter().map(|a| a.name)))
        .find(|n| *n == name)
}

/// The agent's address: the Unix socket if given, else the UPID's address
/// (which also names the API path), else `MESOS_AGENT_ENDPOINT`; over HTTPS
/// when libprocess SSL is on. `None` after recording a problem.
fn agent_endpoint(r: &mut Reader<'_>) -> Option<AgentEndpoint> {
    let ssl = r.get(&SSL_ENABLED);
    let ca_file = r.get(&SSL_CA_FILE);
    let verify = r.get(&SSL_VERIFY_CERT);
    let upid = r.get(&SLAVE_PID);
    let endpoint = r.get(&AGENT_ENDPOINT);
    let socket = r.get(&DOMAIN_SOCKET);
    let path = format!(
        "/{}/api/v1/executor",
        upid.as_ref().map_or("slave(1)", |u| u.id.as_str())
    );
    let authority = if r.is_set(&SLAVE_PID) {
        upid.map(|u| u.authority)
    } else {
        endpoint
    };
    let transport = match (socket, authority) {
        (Some(path), _) => AgentTransport::Unix { path },
        (None, Some(authority)) if ssl => AgentTransport::Https {
            authority,
            ca_file,
            verify,
        },
        (None, Some(authority)) => AgentTransport::Http { authority },
        (None, None) => {
            // A set but invalid address has been reported already.
            if !r.is_set(&SLAVE_PID) && !r.is_set(&AGENT_ENDPOINT) {
                r.problem(&SLAVE_PID, ValueError::NoAgent);
            }
            return None;
        }
    };
    Some(AgentEndpoint { transport, path })
}

fn settings(r: &mut Reader<'_>) -> Settings {
    Settings {
        log_format: r.get(&LOG_FORMAT),
        log_level: r.get(&LOG_LEVEL),
        kill_grace_period: r.get(&KILL_GRACE_PERIOD),
        sigterm_exclude_processes: r.get(&SIGTERM_EXCLUDE_PROCESSES),
        ack_timeout: r.get(&ACK_TIMEOUT),
        call_timeout: r.get(&CALL_TIMEOUT),
        registration_timeout: r.get(&REGISTRATION_TIMEOUT),
        max_record_size: r.get(&MAX_RECORD_SIZE),
        env_denylist: r.get(&ENV_DENYLIST),
        hooks: hook_settings(r),
        remote: remote_settings(r),
        output: output::output_settings(r),
        lifetime: LifetimeSettings {
            certificate_file: r.get(&CERTIFICATE_FILE),
            certificate_range: r.get(&CERTIFICATE_EXPIRATION_RANGE),
            max_lifetime: r.get(&MAX_LIFETIME),
            max_lifetime_spread: r.get(&MAX_LIFETIME_SPREAD),
        },
        graphite: {
            let prefix = r.get(&GRAPHITE_PREFIX);
            let interval = r.get(&GRAPHITE_INTERVAL);
            r.get(&GRAPHITE_ADDRESS).map(|address| GraphiteSettings {
                address,
                prefix,
                interval,
            })
        },
    }
}

/// The hooks' settings; a hook in the chain makes its own settings required.
fn hook_settings(r: &mut Reader<'_>) -> HookSettings {
    let chain = r.get(&HOOKS);
    for problem in hook_chain_problems(&chain) {
        r.problem(&HOOKS, problem);
    }
    let enabled = |name: &str| chain.iter().any(|h| h == name);
    let dir = r.get(&HOOKS_DIR);
    if enabled("exec") {
        match &dir {
            None => r.problem(&HOOKS_DIR, ValueError::MissingFor("by the `exec` hook")),
            Some(d) => match std::fs::metadata(d) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => r.problem(
                    &HOOKS_DIR,
                    ValueError::NotADirectory {
                        path: d.clone(),
                        source: None,
                    },
                ),
                Err(e) => r.problem(
                    &HOOKS_DIR,
                    ValueError::NotADirectory {
                        path: d.clone(),
                        source: Some(e),
                    },
                ),
            },
        }
    }
    let webhook_urls = r.get(&WEBHOOK_URLS);
    if enabled("webhook") && !r.is_set(&WEBHOOK_URLS) {
        r.problem(
            &WEBHOOK_URLS,
            ValueError::MissingFor("by the `webhook` hook"),
        );
    }
    let consul_url = consul_base_url(Some(&r.get(&CONSUL_HTTP_ADDR)));
    if enabled("consul") {
        match consul_url.parse::<hyper::Uri>() {
            Ok(u) if u.host().is_some() => {}
            Ok(_) => r.problem(
                &CONSUL_HTTP_ADDR,
                ValueError::ConsulAddress {
                    value: consul_url.clone(),
                    source: None,
                },
            ),
            Err(e) => r.problem(
                &CONSUL_HTTP_ADDR,
                ValueError::ConsulAddress {
                    value: consul_url.clone(),
                    source: Some(e),
                },
            ),
        }
    }
    HookSettings {
        timeout: r.get(&HOOK_TIMEOUT),
        dir,
        exec_user: r.get(&HOOKS_EXEC_USER),
        max_output: r.get(&HOOK_MAX_OUTPUT),
        allow_privileged: r.get(&POLICY_ALLOW_PRIVILEGED),
        allowed_host_paths: r
            .get(&POLICY_ALLOWED_HOST_PATHS)
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        allowed_users: r.get(&POLICY_ALLOWED_USERS),
        consul_service_label: r.get(&CONSUL_SERVICE_LABEL),
        consul_address: r.get(&CONSUL_ADDRESS),
        consul_deregister_wait: r.get(&CONSUL_DEREGISTER_WAIT),
        consul_url,
        consul_token: r.get(&CONSUL_HTTP_TOKEN),
        webhook_urls,
        webhook_required: r.get(&WEBHOOK_REQUIRED),
        webhook_timeout: r.get(&WEBHOOK_TIMEOUT),
        chain,
    }
}

/// The remote API's settings; a TCP listener needs a token.
fn remote_settings(r: &mut Reader<'_>) -> RemoteSettings {
    let token = r.get(&REMOTE_TOKEN);
    let mut tcp = r.get(&REMOTE_TCP);
    if tcp.is_some() && token.is_none() {
        r.problem(&REMOTE_TCP, ValueError::TcpWithoutToken);
        tcp = None;
    }
    RemoteSettings {
        enabled: r.get(&REMOTE_ENABLED),
        socket: r.get(&REMOTE_SOCKET),
        allowed_uids: r.get(&REMOTE_ALLOWED_UIDS),
        tcp,
        token,
        kill_grace: r.get(&REMOTE_KILL_GRACE),
        max_body: r.get(&REMOTE_MAX_BODY),
        max_output: r.get(&REMOTE_MAX_OUTPUT),
        max_running: r.get(&REMOTE_MAX_RUNNING),
        max_retained: r.get(&REMOTE_MAX_RETAINED),
        retention: r.get(&REMOTE_RETENTION),
        max_retained_bytes: r.get(&REMOTE_MAX_RETAINED_BYTES),
        max_queued: r.get(&REMOTE_MAX_QUEUED),
        queue_timeout: r.get(&REMOTE_QUEUE_TIMEOUT),
    }
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
        v.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        v
    }

    #[test]
    fn minimal_agent_environment() {
        let c = Config::from_vars(base()).expect("valid");
        assert_eq!(c.framework_id, "fw-1");
        assert_eq!(
            c.agent.url(),
            "http://10.1.2.3:5051/slave(1)/api/v1/executor"
        );
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
            (
                "HOOK_EXECUTOR_KILL_GRACE_PERIOD".to_owned(),
                "soon".to_owned(),
            ),
            ("HOOK_EXECUTOR_LOG_FORMAT".to_owned(), "xml".to_owned()),
        ])
        .expect_err("invalid");
        let names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
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
        let c = Config::from_vars(with(&[
            ("MESOS_SLAVE_PID", ""),
            ("MESOS_AGENT_ENDPOINT", "127.0.0.1:5051"),
        ]))
        .expect("valid");
        assert_eq!(
            c.agent.url(),
            "http://127.0.0.1:5051/slave(1)/api/v1/executor"
        );
        let c =
            Config::from_vars(with(&[("MESOS_DOMAIN_SOCKET", "/run/agent.sock")])).expect("valid");
        assert_eq!(
            c.agent.url(),
            "http+unix:///run/agent.sock/slave(1)/api/v1/executor"
        );
        let c = Config::from_vars(with(&[("LIBPROCESS_SSL_ENABLED", "true")])).expect("valid");
        assert!(matches!(
            c.agent.transport,
            AgentTransport::Https { verify: false, .. }
        ));
        let err = Config::from_vars(with(&[("MESOS_SLAVE_PID", "nonsense")])).expect_err("invalid");
        assert_eq!(err.problems[0].variable, "MESOS_SLAVE_PID");
        // A blank address is no address.
        let err = Config::from_vars(with(&[("MESOS_SLAVE_PID", " ")])).expect_err("no agent");
        assert!(
            matches!(err.problems[0].error, ValueError::NoAgent),
            "{err}"
        );
    }

    #[test]
    fn token_is_redacted_in_debug() {
        let c = Config::from_vars(with(&[(
            "MESOS_EXECUTOR_AUTHENTICATION_TOKEN",
            "s3cr3t-jwt",
        )]))
        .expect("valid");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t-jwt"), "{debug}");
        assert!(!c
            .environment
            .0
            .contains_key("MESOS_EXECUTOR_AUTHENTICATION_TOKEN"));
        assert!(format!("{:?}", c.auth_token).contains("redacted"));
        assert_eq!(
            c.auth_token.as_ref().map(Secret::expose),
            Some("s3cr3t-jwt")
        );
    }

    #[test]
    fn values_that_are_not_utf8_are_errors_for_ours_and_kept_for_others() {
        use std::os::unix::ffi::OsStringExt;
        let os = |s: &str| OsString::from(s);
        let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
        let mut vars: Vec<(OsString, OsString)> =
            base().into_iter().map(|(k, v)| (os(&k), os(&v))).collect();
        vars.retain(|(k, _)| k != "MESOS_FRAMEWORK_ID");
        vars.push((os("MESOS_FRAMEWORK_ID"), bytes(b"fw-\xff")));
        vars.push((os("HOOK_EXECUTOR_KILL_GRACE_PERIOD"), bytes(b"3\xfesecs")));
        vars.push((os("SSL_ENABLED"), bytes(b"\xff")));
        vars.push((os("APP_BYTES"), bytes(b"caf\xe9")));
        let err = Config::from_os_vars(vars.clone()).expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        for want in [
            "MESOS_FRAMEWORK_ID: is not valid UTF-8",
            "HOOK_EXECUTOR_KILL_GRACE_PERIOD: is not valid UTF-8",
            "SSL_ENABLED: is not valid UTF-8",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert!(!text.contains("is missing"), "{text}");
        // Ours fixed, the others kept.
        vars.retain(|(k, v)| k == "APP_BYTES" || v.to_str().is_some());
        vars.push((os("MESOS_FRAMEWORK_ID"), os("fw-1")));
        vars.push((bytes(b"NAME_\xff"), os("v")));
        let c = Config::from_os_vars(vars).expect("valid");
        assert_eq!(
            c.environment.1.get(&os("APP_BYTES")),
            Some(&bytes(b"caf\xe9"))
        );
        assert_eq!(c.environment.1.get(&bytes(b"NAME_\xff")), Some(&os("v")));
        assert!(!c.environment.0.contains_key("APP_BYTES"));
    }

    #[test]
    fn durations_beyond_the_maximum_are_named() {
        let err = Config::from_vars(with(&[
            ("HOOK_EXECUTOR_KILL_GRACE_PERIOD", "400days"),
            ("HOOK_EXECUTOR_ACK_TIMEOUT", "584942417355years"),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
                "1000000000000000secs",
            ),
        ]))
        .expect_err("too long");
        let text = err.to_string();
        for name in [
            "HOOK_EXECUTOR_KILL_GRACE_PERIOD: \"400days\" is longer than the maximum of 365days",
            "HOOK_EXECUTOR_ACK_TIMEOUT:",
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD:",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
        let c = Config::from_vars(with(&[("HOOK_EXECUTOR_KILL_GRACE_PERIOD", "365days")]))
            .expect("the maximum itself is fine");
        assert_eq!(c.settings.kill_grace_period, variables::MAX_DURATION);
    }

    #[test]
    fn unknown_hook_executor_variables_are_reported() {
        let c =
            Config::from_vars(with(&[("HOOK_EXECUTOR_KILL_GRACE_PERIDO", "5s")])).expect("valid");
        assert_eq!(
            c.unknown_variables(),
            vec!["HOOK_EXECUTOR_KILL_GRACE_PERIDO".to_owned()]
        );
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
        assert!(
            text.contains("HOOK_EXECUTOR_HOOKS_DIR: is missing"),
            "{text}"
        );
        assert!(text.contains("\"ftp://x\" is not an http(s) URL"), "{text}");
        let c = Config::from_vars(with(&[
            ("HOOK_EXECUTOR_HOOKS", "policy, consul"),
            ("CONSUL_HTTP_TOKEN", "t0k3n"),
        ]))
        .expect("valid");
        assert_eq!(c.settings.hooks.chain, vec!["policy", "consul"]);
        assert_eq!(c.settings.hooks.consul_url, "http://127.0.0.1:8500");
        assert!(!format!("{c:?}").contains("t0k3n"));
    }

    #[test]
    fn an_empty_setting_means_its_default() {
        let c = Config::from_vars(with(&[
            ("HOOK_EXECUTOR_LOG_FORMAT", ""),
            ("HOOK_EXECUTOR_ACK_TIMEOUT", ""),
            ("HOOK_EXECUTOR_REMOTE_MAX_RUNNING", " "),
            ("HOOK_EXECUTOR_REMOTE_ENABLED", ""),
        ]))
        .expect("valid");
        assert_eq!(c.settings.log_format, LogFormat::Full);
        assert_eq!(c.settings.ack_timeout, Duration::from_secs(60));
        assert_eq!(c.settings.remote.max_running, 32);
        assert!(c.settings.remote.enabled);
    }

    #[test]
    fn problems_show_their_causes_once_in_table_order() {
        let err = Config::from_vars(with(&[
            ("HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS", "0,bob"),
            ("HOOK_EXECUTOR_LOG_LEVEL", "a=b=c"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5"),
        ]))
        .expect_err("invalid");
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().skip(1).map(str::trim).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD: \"5\" is not a duration"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("HOOK_EXECUTOR_LOG_LEVEL: \"a=b=c\" is not a log filter: "),
            "{text}"
        );
        assert_eq!(
            lines[1].matches("invalid filter directive").count(),
            1,
            "the cause once: {text}"
        );
        assert_eq!(lines[2], "HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS: \"bob\" is not a numeric uid: invalid digit found in string");
    }

    #[test]
    fn every_declared_variable_is_read_and_every_default_is_valid() {
        let vars: BTreeMap<String, String> = base().into_iter().collect();
        let mut r = Reader::new(&vars);
        assert!(Config::read(&mut r).is_some());
        let mut read = r.read().to_vec();
        let problems = r.finish();
        assert!(problems.is_empty(), "{problems:?}");
        read.sort_unstable();
        read.dedup();
        let mut declared: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        declared.sort_unstable();
        assert_eq!(read, declared);
    }

    /// The settings allegro's names can give, for comparison.
    fn allegro_visible(
        c: &Config,
    ) -> (
        String,
        Duration,
        Vec<String>,
        Duration,
        Duration,
        Option<String>,
    ) {
        let s = &c.settings;
        (
            s.log_level.clone(),
            s.kill_grace_period,
            s.sigterm_exclude_processes.clone(),
            s.ack_timeout,
            s.call_timeout,
            s.hooks.consul_token.as_ref().map(|t| t.expose().to_owned()),
        )
    }

    #[test]
    fn allegro_aliases_reach_the_same_settings() {
        let ours = Config::from_vars(with(&[
            ("HOOK_EXECUTOR_LOG_LEVEL", "debug"),
            ("HOOK_EXECUTOR_KILL_GRACE_PERIOD", "7s"),
            ("HOOK_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES", "nginx,envoy"),
            ("HOOK_EXECUTOR_ACK_TIMEOUT", "12s"),
            ("HOOK_EXECUTOR_CALL_TIMEOUT", "4s"),
            ("CONSUL_HTTP_TOKEN", "c-tok"),
        ]))
        .expect("valid");
        let allegro = Config::from_vars(with(&[
            ("ALLEGRO_EXECUTOR_DEBUG", "true"),
            ("ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD", "7s"),
            ("ALLEGRO_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES", "nginx, envoy"),
            ("ALLEGRO_EXECUTOR_STATE_UPDATE_WAIT_TIMEOUT", "12s"),
            ("ALLEGRO_EXECUTOR_HTTPT_IMEOUT", "4s"),
            ("ALLEGRO_EXECUTOR_CONSUL_TOKEN", "c-tok"),
        ]))
        .expect("valid");
        assert_eq!(allegro_visible(&allegro), allegro_visible(&ours));
        assert_ne!(
            allegro_visible(&Config::from_vars(base()).expect("valid")),
            allegro_visible(&ours),
            "the values differ from the defaults, so the aliases were read"
        );
        assert!(allegro.unknown_variables().is_empty());
        let uses: Vec<String> = allegro
            .alias_uses()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            uses,
            [
                "read HOOK_EXECUTOR_LOG_LEVEL from allegro's ALLEGRO_EXECUTOR_DEBUG",
                "read HOOK_EXECUTOR_KILL_GRACE_PERIOD from allegro's ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD",
                "read HOOK_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES from allegro's ALLEGRO_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES",
                "read HOOK_EXECUTOR_ACK_TIMEOUT from allegro's ALLEGRO_EXECUTOR_STATE_UPDATE_WAIT_TIMEOUT",
                "read HOOK_EXECUTOR_CALL_TIMEOUT from allegro's ALLEGRO_EXECUTOR_HTTPT_IMEOUT",
                "read CONSUL_HTTP_TOKEN from allegro's ALLEGRO_EXECUTOR_CONSUL_TOKEN",
            ]
        );
        // The other spellings allegro users have: the example's
        // HTTP_TIMEOUT, the unprefixed CONSUL_TOKEN, DEBUG=false.
        let c = Config::from_vars(with(&[
            ("ALLEGRO_EXECUTOR_HTTP_TIMEOUT", "4s"),
            ("CONSUL_TOKEN", "c-tok"),
            ("ALLEGRO_EXECUTOR_DEBUG", "0"),
        ]))
        .expect("valid");
        assert_eq!(c.settings.call_timeout, Duration::from_secs(4));
        assert_eq!(
            c.settings.hooks.consul_token.as_ref().map(Secret::expose),
            Some("c-tok")
        );
        assert_eq!(c.settings.log_level, "info");
    }

    #[test]
    fn our_name_wins_over_allegro_and_says_so() {
        let c = Config::from_vars(with(&[
            ("HOOK_EXECUTOR_KILL_GRACE_PERIOD", "9s"),
            ("ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD", "1s"),
            ("ALLEGRO_EXECUTOR_HTTPT_IMEOUT", "2s"),
            ("ALLEGRO_EXECUTOR_HTTP_TIMEOUT", "3s"),
        ]))
        .expect("valid");
        assert_eq!(c.settings.kill_grace_period, Duration::from_secs(9));
        assert_eq!(c.settings.call_timeout, Duration::from_secs(2));
        let uses: Vec<String> = c.alias_uses().iter().map(ToString::to_string).collect();
        assert_eq!(
            uses,
            [
                "allegro's ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD ignored: HOOK_EXECUTOR_KILL_GRACE_PERIOD is set too and wins",
                "read HOOK_EXECUTOR_CALL_TIMEOUT from allegro's ALLEGRO_EXECUTOR_HTTPT_IMEOUT",
                "allegro's ALLEGRO_EXECUTOR_HTTP_TIMEOUT ignored: HOOK_EXECUTOR_CALL_TIMEOUT is set too and wins",
            ]
        );
    }

    #[test]
    fn bad_allegro_values_name_the_alias_and_unknown_ones_are_reported() {
        let err = Config::from_vars(with(&[
            ("ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD", "soon"),
            ("ALLEGRO_EXECUTOR_DEBUG", "maybe"),
        ]))
        .expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("HOOK_EXECUTOR_KILL_GRACE_PERIOD: (read from ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD) \"soon\" is not a duration"),
            "{text}"
        );
        assert!(
            text.contains("HOOK_EXECUTOR_LOG_LEVEL: (read from ALLEGRO_EXECUTOR_DEBUG) \"maybe\""),
            "{text}"
        );
        let c = Config::from_vars(with(&[
            ("ALLEGRO_EXECUTOR_SENTRY_DSN", "https://k@sentry/1"),
            ("ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD", "5s"),
        ]))
        .expect("valid");
        assert_eq!(
            c.unknown_variables(),
            vec!["ALLEGRO_EXECUTOR_SENTRY_DSN".to_owned()]
        );
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
        v.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        v
    }

    #[test]
    fn remote_defaults() {
        let c = Config::from_vars(vars(&[])).expect("valid");
        let r = &c.settings.remote;
        assert!(r.enabled);
        assert_eq!(c.remote_socket(), PathBuf::from("/tmp/sb/executor.sock"));
        assert_eq!(
            (r.max_running, r.max_retained, r.max_output, r.max_body),
            (32, 1024, 65_536, 65_536)
        );
        assert_eq!(
            (r.max_retained_bytes, r.max_queued, r.queue_timeout),
            (4 << 20, 512, Duration::from_secs(30))
        );
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
        let names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
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

/// Turns `CONSUL_HTTP_ADDR` into the Consul agent's base URL, with Consul's
/// own conventions (no scheme means `http`, unset means the local agent).
#[must_use]
pub(crate) fn consul_base_url(addr: Option<&str>) -> String {
    match addr.map(str::trim).filter(|a| !a.is_empty()) {
        None => "http://127.0.0.1:8500".to_owned(),
        Some(a) if a.starts_with("http://") || a.starts_with("https://") => {
            a.trim_end_matches('/').to_owned()
        }
        Some(a) => format!("http://{a}"),
    }
}

#[cfg(test)]
mod consul_tests {
    use super::consul_base_url as base_url;

    #[test]
    fn consul_addr_conventions() {
        assert_eq!(base_url(None), "http://127.0.0.1:8500");
        assert_eq!(base_url(Some("10.0.0.1:8500")), "http://10.0.0.1:8500");
        assert_eq!(
            base_url(Some("https://consul.local:8501/")),
            "https://consul.local:8501"
        );
    }
}
