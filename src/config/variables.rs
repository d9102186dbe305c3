//! Every variable the executor reads, declared once: name, kind, default,
//! parser and meaning. The declaration drives reading and validating the
//! variable ([`Reader::get`]), the `--help` text ([`help_text`]) and the
//! configuration table in docs/configuration.md (generated from it and compared by a test,
//! so the two cannot drift). Rules that involve several variables (which agent
//! address wins, what checkpointing or a hook requires) live in
//! `Config::from_vars`, next to the struct they fill.
//!
//! Why not `envy`, the crate first planned for this (dropped): envy deserialises the
//! whole struct through serde and stops at the first bad value, while an
//! operator must get every problem at once; its errors are strings
//! (`envy::Error::Custom`), so the cause could not be kept as a source; a serde
//! field cannot carry the default and meaning that `--help` and the reference table
//! need, so each variable would again be declared twice (field and table); and
//! no variable could use envy's own value parsing: durations take Mesos syntax,
//! `MESOS_CHECKPOINT` only `1` or `0`, lists are trimmed (envy splits on commas
//! and keeps the spaces), counts are bounded, secrets are wrapped, and a third
//! of the variables (`MESOS_*`, `LIBPROCESS_*`, `CONSUL_*`) lack our prefix.
//! envy would be left mapping `HOOK_EXECUTOR_X` to a field `x`, which the
//! declaration states anyway.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use super::{duration, ExecHookUser, LogFormat, Protocol, ScrapeFormat, Secret, HOOK_NAMES};

/// How a variable's value is written: what `--help` and docs/configuration.md show as its
/// type, and the bounds its parser enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Free text, taken as written.
    Text,
    /// Free text that is never logged or shown.
    Secret,
    /// A filesystem path.
    Path,
    /// `ip:port`.
    Address,
    /// Mesos or humantime duration.
    Duration,
    /// Exactly `1` or `0`, as the agent writes its own flags.
    Flag,
    /// `true`/`false` or `1`/`0`, for settings operators type.
    Switch,
    /// Comma-separated items, spaces around them ignored.
    List,
    /// A whole number within bounds.
    Count { min: usize, max: usize },
    /// A byte count within bounds (`usize::MAX`: no upper bound).
    Bytes { min: usize, max: usize },
    /// One of these words.
    Choice(&'static [&'static str]),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text => f.write_str("string"),
            Self::Secret => f.write_str("secret"),
            Self::Path => f.write_str("path"),
            Self::Address => f.write_str("ip:port"),
            Self::Duration => f.write_str("duration"),
            Self::Flag => f.write_str("1 or 0"),
            Self::Switch => f.write_str("true/false (or 1/0)"),
            Self::List => f.write_str("list"),
            Self::Count { min, max } => write!(f, "count, {min} to {max}"),
            Self::Bytes {
                min,
                max: usize::MAX,
            } => write!(f, "bytes, at least {min}"),
            Self::Bytes { min, max } => write!(f, "bytes, {min} to {max}"),
            Self::Choice(words) => f.write_str(&words.join("|")),
        }
    }
}

/// What an unset (absent, empty or blank) variable means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// It must be set.
    Required,
    /// It must be set in the situation described (`if MESOS_CHECKPOINT=1`),
    /// which `Config::from_vars` checks; otherwise it is left empty or zero.
    RequiredWhen(&'static str),
    /// This value, written as an operator would write it and read with the
    /// variable's own parser, so the documented default is the one in effect.
    Value(&'static str),
    /// Unset is a state of its own, described here (`agent hostname`).
    Unset(&'static str),
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Required => f.write_str("required"),
            Self::RequiredWhen(when) => write!(f, "required {when}"),
            Self::Value(value) => f.write_str(value),
            Self::Unset(meaning) => f.write_str(meaning),
        }
    }
}

/// What `--help`, docs/configuration.md and the unknown-variable check know of a variable.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Full name.
    pub name: &'static str,
    /// Other names read, in order, when this one is unset (libprocess'
    /// `SSL_ENABLED`, allegro's `ALLEGRO_EXECUTOR_*`).
    pub(crate) also_read_as: &'static [Alias],
    pub(crate) kind: Kind,
    pub(crate) fallback: Fallback,
    /// What it does, one or two sentences.
    pub(crate) help: &'static str,
}

impl Spec {
    /// The help text, with the other names if there are any.
    fn meaning(&self) -> String {
        if self.also_read_as.is_empty() {
            return self.help.to_owned();
        }
        let names: Vec<String> = self
            .also_read_as
            .iter()
            .map(|a| match a.translate {
                Some((_, how)) => format!("{}{} ({how})", a.owner(), a.name),
                None => format!("{}{}", a.owner(), a.name),
            })
            .collect();
        format!("{} Also read as {}.", self.help, names.join(", "))
    }
}

/// Prefix of allegro/mesos-executor's settings, accepted as aliases of ours
/// (docs/allegro-migration.md).
pub const ALLEGRO_PREFIX: &str = "ALLEGRO_EXECUTOR_";

/// Another name of a variable, read when the variable itself is unset.
#[derive(Debug, Clone, Copy)]
pub struct Alias {
    /// The other name.
    pub name: &'static str,
    /// When the alias' values are written differently: the function mapping
    /// its value to ours (`None` when it has no counterpart) and a short
    /// description for `--help`.
    pub(crate) translate: Option<(Translate, &'static str)>,
}

/// Maps an alias' value to ours; `None` when the value has no counterpart.
pub(crate) type Translate = fn(&str) -> Option<&'static str>;

impl Alias {
    /// A name whose values mean the same as ours.
    const fn same(name: &'static str) -> Self {
        Self {
            name,
            translate: None,
        }
    }

    /// `allegro's ` for allegro's names, for messages.
    pub(crate) fn owner(&self) -> &'static str {
        if self.name.starts_with(ALLEGRO_PREFIX) {
            "allegro's "
        } else {
            ""
        }
    }
}

/// A variable and the parser that turns its text into a `T`.
pub(crate) struct Var<T> {
    pub(crate) spec: Spec,
    parse: fn(&str, Kind) -> Result<T, ValueError>,
}

impl<T> Var<T> {
    const fn new(
        name: &'static str,
        kind: Kind,
        fallback: Fallback,
        parse: fn(&str, Kind) -> Result<T, ValueError>,
        help: &'static str,
    ) -> Self {
        Self {
            spec: Spec {
                name,
                also_read_as: &[],
                kind,
                fallback,
                help,
            },
            parse,
        }
    }

    const fn also_read_as(mut self, aliases: &'static [Alias]) -> Self {
        self.spec.also_read_as = aliases;
        self
    }
}

/// Declares each variable as a `Var` constant and lists them all in
/// [`VARIABLES`], so that nothing can be read without being documented.
macro_rules! variables {
    ($($id:ident: $t:ty = $var:expr;)*) => {
        $(pub(crate) const $id: Var<$t> = $var;)*
        /// Every variable the executor reads, in `--help` and docs/configuration.md order.
        pub const VARIABLES: &[Spec] = &[$($id.spec),*];
    };
}

use Fallback::{Required, RequiredWhen, Unset, Value};

variables! {
    FRAMEWORK_ID: String = Var::new("MESOS_FRAMEWORK_ID", Kind::Text, Required, parse::text,
        "Framework id (set by the agent).");
    EXECUTOR_ID: String = Var::new("MESOS_EXECUTOR_ID", Kind::Text, Required, parse::text,
        "Executor id (set by the agent).");
    SLAVE_PID: Option<Upid> = Var::new("MESOS_SLAVE_PID", Kind::Text, Unset("—"), parse::upid,
        "Agent UPID `slave(1)@ip:port`; gives the agent address and API path. One of it, MESOS_AGENT_ENDPOINT or MESOS_DOMAIN_SOCKET is required.");
    AGENT_ENDPOINT: Option<String> = Var::new("MESOS_AGENT_ENDPOINT", Kind::Text, Unset("—"), parse::authority,
        "Agent `ip:port`, used when MESOS_SLAVE_PID is absent.");
    DOMAIN_SOCKET: Option<PathBuf> = Var::new("MESOS_DOMAIN_SOCKET", Kind::Path, Unset("—"), parse::path,
        "Agent Unix socket; when set, the API is reached over it (http+unix).");
    SLAVE_ID: Option<String> = Var::new("MESOS_SLAVE_ID", Kind::Text, Unset("—"), parse::optional_text,
        "Agent id, for logs.");
    SANDBOX: Option<PathBuf> = Var::new("MESOS_SANDBOX", Kind::Path, Unset("MESOS_DIRECTORY, else cwd"), parse::path,
        "Sandbox path as seen by the task; the task's working directory.");
    DIRECTORY: Option<PathBuf> = Var::new("MESOS_DIRECTORY", Kind::Path, Unset("—"), parse::path,
        "Sandbox host path.");
    CHECKPOINT: bool = Var::new("MESOS_CHECKPOINT", Kind::Flag, Value("0"), parse::flag,
        "1: survive agent restarts by reconnecting; 0: shut down when the agent connection drops.");
    RECOVERY_TIMEOUT: Duration = Var::new("MESOS_RECOVERY_TIMEOUT", Kind::Duration, RequiredWhen("if MESOS_CHECKPOINT=1"), parse::duration,
        "How long to keep reconnecting after the first disconnect.");
    SUBSCRIPTION_BACKOFF_MAX: Duration = Var::new("MESOS_SUBSCRIPTION_BACKOFF_MAX", Kind::Duration, RequiredWhen("if MESOS_CHECKPOINT=1"), parse::duration,
        "Upper bound of the random delay between reconnect attempts.");
    SHUTDOWN_GRACE_PERIOD: Duration = Var::new("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", Kind::Duration, Required, parse::duration,
        "Time the agent allows between SHUTDOWN and destroying the container; the kill on SHUTDOWN fits 2s inside it.");
    AUTHENTICATION_TOKEN: Option<Secret> = Var::new("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", Kind::Secret, Unset("—"), parse::secret,
        "Sent as `Authorization: Bearer` on every agent request; never logged, never passed to the task.");
    SSL_ENABLED: bool = Var::new("LIBPROCESS_SSL_ENABLED", Kind::Switch, Value("0"), parse::flag,
        "1 or true: reach the agent over HTTPS.").also_read_as(&[Alias::same("SSL_ENABLED")]);
    SSL_CA_FILE: Option<PathBuf> = Var::new("LIBPROCESS_SSL_CA_FILE", Kind::Path, Unset("system roots"), parse::path,
        "CA bundle to verify the agent's certificate with.");
    SSL_VERIFY_CERT: bool = Var::new("LIBPROCESS_SSL_VERIFY_CERT", Kind::Switch, Value("0"), parse::flag,
        "1 or true: verify the agent's certificate (libprocess does not by default).");
    LOG_FORMAT: LogFormat = Var::new("HOOK_EXECUTOR_LOG_FORMAT", Kind::Choice(&["json", "compact", "full"]), Value("full"), parse::log_format,
        "Log line format on stderr: `json` (one object per line), `compact` (short human lines: time, level, message, fields; no ids), `full` (human lines with the framework and executor ids; `text` is accepted for it).");
    LOG_LEVEL: String = Var::new("HOOK_EXECUTOR_LOG_LEVEL", Kind::Text, Value("info"), parse::log_filter,
        "Log filter: a level, or comma-separated `target=level` directives with an optional default level (e.g. `debug`, `mesos_hook_executor=trace,info`).")
        .also_read_as(&[Alias { name: "ALLEGRO_EXECUTOR_DEBUG", translate: Some((allegro::debug, "true: debug, false: info")) }]);
    KILL_GRACE_PERIOD: Duration = Var::new("HOOK_EXECUTOR_KILL_GRACE_PERIOD", Kind::Duration, Value("3secs"), parse::duration,
        "SIGTERM→SIGKILL grace when neither the KILL nor the task carries a kill policy.")
        .also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_KILL_POLICY_GRACE_PERIOD")]);
    SIGTERM_EXCLUDE_PROCESSES: Vec<String> = Var::new("HOOK_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES", Kind::List, Unset("—"), parse::list,
        "Process names (comm) spared from SIGTERM; they are still SIGKILLed at the deadline.")
        .also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SIGTERM_EXCLUDE_PROCESSES")]);
    ACK_TIMEOUT: Duration = Var::new("HOOK_EXECUTOR_ACK_TIMEOUT", Kind::Duration, Value("60secs"), parse::duration,
        "How long to wait for the terminal update's acknowledgement before exiting with code 1.")
        .also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_STATE_UPDATE_WAIT_TIMEOUT")]);
    CALL_TIMEOUT: Duration = Var::new("HOOK_EXECUTOR_CALL_TIMEOUT", Kind::Duration, Value("5secs"), parse::nonzero_duration,
        "Timeout of each agent call and connection attempt.")
        .also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_HTTPT_IMEOUT"), Alias::same("ALLEGRO_EXECUTOR_HTTP_TIMEOUT")]);
    REGISTRATION_TIMEOUT: Duration = Var::new("HOOK_EXECUTOR_REGISTRATION_TIMEOUT", Kind::Duration, Value("1mins"), parse::duration,
        "How long to retry the first SUBSCRIBE before exiting with code 3 (the agent's own limit is 1 min).");
    MAX_RECORD_SIZE: usize = Var::new("HOOK_EXECUTOR_MAX_RECORD_SIZE", Kind::Bytes { min: 1024, max: usize::MAX }, Value("67108864"), parse::count,
        "Largest RecordIO record accepted from the agent; a larger one is a stream error.");
    ENV_DENYLIST: Vec<String> = Var::new("HOOK_EXECUTOR_ENV_DENYLIST", Kind::List, Unset("—"), parse::list,
        "Extra variable names, or `PREFIX*` patterns, kept out of the task's environment.");
    HOOKS: Vec<String> = Var::new("HOOK_EXECUTOR_HOOKS", Kind::List, Unset("— (no hooks)"), parse::list,
        "Built-in hooks to run, in order: `policy`, `exec`, `consul`, `webhook`.");
    HOOK_TIMEOUT: Duration = Var::new("HOOK_EXECUTOR_HOOK_TIMEOUT", Kind::Duration, Value("30secs"), parse::duration,
        "Time limit of each hook call (the Consul drain wait and webhook retries come on top).");
    HOOKS_DIR: Option<PathBuf> = Var::new("HOOK_EXECUTOR_HOOKS_DIR", Kind::Path, RequiredWhen("with `exec`"), parse::path,
        "Directory holding `<event>.d/` script folders for the `exec` hook.");
    // Production hardening: exec hooks' user and output limit.
    HOOKS_EXEC_USER: ExecHookUser = Var::new("HOOK_EXECUTOR_HOOKS_EXEC_USER", Kind::Choice(&["executor", "task"]), Value("executor"), parse::exec_user,
        "`exec`: who runs hook scripts. `executor`: the executor's user; only files owned by root or that user, writable by their owner only, run. `task`: the task's user (task-owned hooks; files owned by that user are accepted too).");
    HOOK_MAX_OUTPUT: usize = Var::new("HOOK_EXECUTOR_HOOK_MAX_OUTPUT", Kind::Bytes { min: 1024, max: 16 * 1024 * 1024 }, Value("65536"), parse::count,
        "`exec`: most bytes a before-start script may print on stdout; more fails the hook.");
    POLICY_ALLOW_PRIVILEGED: bool = Var::new("HOOK_EXECUTOR_POLICY_ALLOW_PRIVILEGED", Kind::Switch, Value("false"), parse::flag,
        "`policy`: allow Docker privileged mode.");
    POLICY_ALLOWED_HOST_PATHS: Vec<String> = Var::new("HOOK_EXECUTOR_POLICY_ALLOWED_HOST_PATHS", Kind::List, Unset("— (sandbox only)"), parse::list,
        "`policy`: host path prefixes volumes may mount.");
    POLICY_ALLOWED_USERS: Vec<String> = Var::new("HOOK_EXECUTOR_POLICY_ALLOWED_USERS", Kind::List, Unset("— (any)"), parse::list,
        "`policy`: users a task may run as.");
    CONSUL_SERVICE_LABEL: String = Var::new("HOOK_EXECUTOR_CONSUL_SERVICE_LABEL", Kind::Text, Value("consul"), parse::text,
        "`consul`: task label naming the service (value = name; empty = task name).");
    CONSUL_ADDRESS: Option<String> = Var::new("HOOK_EXECUTOR_CONSUL_ADDRESS", Kind::Text, Unset("agent hostname"), parse::optional_text,
        "`consul`: address registered for the service.");
    CONSUL_DEREGISTER_WAIT: Duration = Var::new("HOOK_EXECUTOR_CONSUL_DEREGISTER_WAIT", Kind::Duration, Value("0secs"), parse::duration,
        "`consul`: wait after deregistering, before SIGTERM, so traffic drains.");
    CONSUL_HTTP_ADDR: String = Var::new("CONSUL_HTTP_ADDR", Kind::Text, Value("127.0.0.1:8500"), parse::text,
        "`consul`: the local Consul agent (`host:port` or URL), Consul's own convention.");
    CONSUL_HTTP_TOKEN: Option<Secret> = Var::new("CONSUL_HTTP_TOKEN", Kind::Secret, Unset("—"), parse::secret,
        "`consul`: ACL token sent as `X-Consul-Token`; never logged or passed to the task or hooks.")
        .also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_CONSUL_TOKEN"), Alias::same("CONSUL_TOKEN")]);
    WEBHOOK_URLS: Vec<String> = Var::new("HOOK_EXECUTOR_WEBHOOK_URLS", Kind::List, RequiredWhen("with `webhook`"), parse::http_urls,
        "`webhook`: http(s) URLs each event is POSTed to as JSON.");
    WEBHOOK_REQUIRED: bool = Var::new("HOOK_EXECUTOR_WEBHOOK_REQUIRED", Kind::Switch, Value("false"), parse::flag,
        "`webhook`: a failed before-start POST vetoes the launch.");
    WEBHOOK_TIMEOUT: Duration = Var::new("HOOK_EXECUTOR_WEBHOOK_TIMEOUT", Kind::Duration, Value("5secs"), parse::duration,
        "`webhook`: timeout of each POST attempt (3 attempts).");
    REMOTE_ENABLED: bool = Var::new("HOOK_EXECUTOR_REMOTE_ENABLED", Kind::Switch, Value("true"), parse::flag,
        "Serve the remote-execution API.");
    REMOTE_SOCKET: Option<PathBuf> = Var::new("HOOK_EXECUTOR_REMOTE_SOCKET", Kind::Path, Unset("`$MESOS_SANDBOX/executor.sock`"), parse::path,
        "Unix socket of the remote-execution API; may be longer than the 108-byte socket-path limit.");
    REMOTE_ALLOWED_UIDS: Option<Vec<u32>> = Var::new("HOOK_EXECUTOR_REMOTE_ALLOWED_UIDS", Kind::List, Unset("0 and the executor's uid"), parse::uids,
        "Numeric uids allowed to use the socket (SO_PEERCRED); naming any other uid makes the socket mode 0666 instead of 0600.");
    REMOTE_TCP: Option<SocketAddr> = Var::new("HOOK_EXECUTOR_REMOTE_TCP", Kind::Address, Unset("—"), parse::socket_address,
        "Also listen on this `ip:port` (e.g. `127.0.0.1:7070`); requires `HOOK_EXECUTOR_REMOTE_TOKEN`.");
    REMOTE_TOKEN: Option<Secret> = Var::new("HOOK_EXECUTOR_REMOTE_TOKEN", Kind::Secret, Unset("—"), parse::secret,
        "Bearer token required on the TCP listener; never logged, never passed on.");
    REMOTE_KILL_GRACE: Duration = Var::new("HOOK_EXECUTOR_REMOTE_KILL_GRACE", Kind::Duration, Value("2secs"), parse::duration,
        "SIGTERM→SIGKILL grace for a remote command's process group (timeout or terminate).");
    REMOTE_MAX_BODY: usize = Var::new("HOOK_EXECUTOR_REMOTE_MAX_BODY", Kind::Bytes { min: 1024, max: 64 * 1024 * 1024 }, Value("65536"), parse::count,
        "Largest request body accepted (413 above).");
    REMOTE_MAX_OUTPUT: usize = Var::new("HOOK_EXECUTOR_REMOTE_MAX_OUTPUT", Kind::Bytes { min: 0, max: 1024 * 1024 * 1024 }, Value("65536"), parse::count,
        "Bytes captured per stream (stdout, stderr) of each remote command; the rest is discarded and flagged.");
    REMOTE_MAX_RUNNING: usize = Var::new("HOOK_EXECUTOR_REMOTE_MAX_RUNNING", Kind::Count { min: 1, max: 4096 }, Value("32"), parse::count,
        "Remote commands running at once; more wait in the queue (`HOOK_EXECUTOR_REMOTE_MAX_QUEUED`).");
    REMOTE_MAX_RETAINED: usize = Var::new("HOOK_EXECUTOR_REMOTE_MAX_RETAINED", Kind::Count { min: 0, max: 100_000 }, Value("1024"), parse::count,
        "Finished results kept for retrieval (oldest dropped first).");
    REMOTE_RETENTION: Duration = Var::new("HOOK_EXECUTOR_REMOTE_RETENTION", Kind::Duration, Value("10mins"), parse::duration,
        "How long a finished result is kept.");
    // Remote API under load and abuse (docs/remote-limits.md).
    REMOTE_MAX_RETAINED_BYTES: usize = Var::new("HOOK_EXECUTOR_REMOTE_MAX_RETAINED_BYTES", Kind::Bytes { min: 0, max: 1024 * 1024 * 1024 }, Value("4194304"), parse::count,
        "Captured output kept in finished results, all together (oldest results dropped first; the newest is always kept).");
    REMOTE_MAX_QUEUED: usize = Var::new("HOOK_EXECUTOR_REMOTE_MAX_QUEUED", Kind::Count { min: 0, max: 100_000 }, Value("512"), parse::count,
        "Executes waiting for a running slot, oldest first (429 when the queue is full).");
    REMOTE_QUEUE_TIMEOUT: Duration = Var::new("HOOK_EXECUTOR_REMOTE_QUEUE_TIMEOUT", Kind::Duration, Value("30secs"), parse::duration,
        "How long an execute waits in the queue for a running slot (503 after).");
    // The task's output: capture, sandbox rotation, scraping and shipping to
    // Logstash (docs/logging.md). allegro's names are read as aliases.
    LOG_ROTATE_SIZE: Option<u64> = Var::new("HOOK_EXECUTOR_LOG_ROTATE_SIZE", Kind::Text, Unset("— (no rotation)"), output::size,
        "Rotate the sandbox's `stdout`/`stderr` at this size (Mesos spelling: `10MB`, `512KB`, `1GB`); the task's output then goes through the executor.");
    LOG_ROTATE_KEEP: usize = Var::new("HOOK_EXECUTOR_LOG_ROTATE_KEEP", Kind::Count { min: 1, max: 1000 }, Value("5"), parse::count,
        "Rotated files kept per stream: `stdout.1` (newest) to `stdout.<keep>`.");
    LOG_SCRAPING: Option<ScrapeFormat> = Var::new("HOOK_EXECUTOR_LOG_SCRAPING", Kind::Choice(&["logstash", "json", "logfmt"]), Unset("— (per task label `log-scraping`)"), output::scrape_format,
        "Scrape every task's output as if it had the label `log-scraping` with this value.");
    LOG_SCRAPING_ALL: bool = Var::new("HOOK_EXECUTOR_LOG_SCRAPING_ALL", Kind::Switch, Value("false"), parse::flag,
        "Also ship lines that are neither JSON nor logfmt, as a plain `message` (as the task label `log-scraping-all`).");
    LOG_LOGSTASH_PROTOCOL: Protocol = Var::new("HOOK_EXECUTOR_LOG_LOGSTASH_PROTOCOL", Kind::Choice(&["tcp", "udp"]), Value("tcp"), output::protocol,
        "Transport to Logstash's `json_lines` input.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_PROTOCOL")]);
    LOG_LOGSTASH_ADDRESS: Option<String> = Var::new("HOOK_EXECUTOR_LOG_LOGSTASH_ADDRESS", Kind::Text, RequiredWhen("when scraping without discovery"), parse::authority,
        "Logstash `host:port`.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_ADDRESS")]);
    LOG_LOGSTASH_SERVICE: Option<String> = Var::new("HOOK_EXECUTOR_LOG_LOGSTASH_SERVICE", Kind::Text, Unset("—"), parse::optional_text,
        "Consul service name of Logstash (passing instances, through CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN); replaces the address.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_DISCOVERY_SERVICE_NAME")]);
    LOG_LOGSTASH_REFRESH: Duration = Var::new("HOOK_EXECUTOR_LOG_LOGSTASH_REFRESH", Kind::Duration, Value("10secs"), parse::nonzero_duration,
        "How often Consul is asked for Logstash's instances.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_DISCOVERY_REFRESH_INTERVAL")]);
    LOG_RATE_LIMIT: usize = Var::new("HOOK_EXECUTOR_LOG_RATE_LIMIT", Kind::Count { min: 0, max: 10_000_000 }, Value("0"), parse::count,
        "Entries shipped per second at most (0: no limit); the excess is dropped and counted.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_RATE_LIMIT")]);
    LOG_SIZE_LIMIT: usize = Var::new("HOOK_EXECUTOR_LOG_SIZE_LIMIT", Kind::Bytes { min: 0, max: 64 * 1024 * 1024 }, Value("0"), parse::count,
        "Largest serialized entry shipped (0: no limit; UDP is always bound by the datagram size); larger ones are dropped and counted.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_SIZE_LIMIT")]);
    LOG_TCP_KEEP_ALIVE: Duration = Var::new("HOOK_EXECUTOR_LOG_TCP_KEEP_ALIVE", Kind::Duration, Value("5secs"), parse::nonzero_duration,
        "TCP keep-alive idle time of the Logstash connection.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_TCP_KEEP_ALIVE")]);
    LOG_TCP_TIMEOUT: Duration = Var::new("HOOK_EXECUTOR_LOG_TCP_TIMEOUT", Kind::Duration, Value("2secs"), parse::nonzero_duration,
        "Connect and write timeout of the Logstash connection.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_LOGSTASH_TCP_TIMEOUT")]);
    LOG_QUEUE_SIZE: usize = Var::new("HOOK_EXECUTOR_LOG_QUEUE_SIZE", Kind::Count { min: 1, max: 1_000_000 }, Value("100000"), parse::count,
        "Entries waiting to be shipped at most (memory is bound by HOOK_EXECUTOR_LOG_QUEUE_BYTES); more are dropped and counted (the task never waits).").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_BUFFER_SIZE")]);
    LOG_QUEUE_BYTES: usize = Var::new("HOOK_EXECUTOR_LOG_QUEUE_BYTES", Kind::Bytes { min: 4096, max: 1024 * 1024 * 1024 }, Value("8388608"), parse::count,
        "Bytes of lines waiting to be shipped at most (bounds the executor's memory).");
    LOG_MAX_LINE: usize = Var::new("HOOK_EXECUTOR_LOG_MAX_LINE", Kind::Bytes { min: 64, max: 64 * 1024 * 1024 }, Value("65536"), parse::count,
        "Longest line scraped; a longer one is cut there and flagged `truncated` (the sandbox file still gets all of it).");
    LOG_IGNORE_KEYS: Vec<String> = Var::new("HOOK_EXECUTOR_LOG_IGNORE_KEYS", Kind::List, Unset("—"), parse::list,
        "Keys removed from every shipped entry.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_SERVICELOG_IGNORE_KEYS")]);
    LOG_LABELS: Vec<String> = Var::new("HOOK_EXECUTOR_LOG_LABELS", Kind::List, Value("scId"), parse::list,
        "Task labels added to every entry, under the label's key in lower case (allegro's `scId` becomes `scid`).");
    LOG_DRAIN_TIMEOUT: Duration = Var::new("HOOK_EXECUTOR_LOG_DRAIN_TIMEOUT", Kind::Duration, Value("3secs"), parse::duration,
        "When the task ends, how long its output may still be drained and shipped before the terminal update.");
    // Task lifetime: certificate expiry (allegro's `validate-certificate`) and maximum lifetime.
    CERTIFICATE_FILE: Option<PathBuf> = Var::new("HOOK_EXECUTOR_CERTIFICATE_FILE", Kind::Path, Unset("—"), parse::path,
        "PEM certificate for tasks labelled `validate-certificate: true` whose environment has no `CERTIFICATE`; relative paths are in the sandbox; read once at start.");
    CERTIFICATE_EXPIRATION_RANGE: Duration = Var::new("HOOK_EXECUTOR_CERTIFICATE_EXPIRATION_RANGE", Kind::Duration, Value("3hrs"), parse::schedule_duration,
        "Such a task is killed gracefully at the certificate's NotAfter minus a random part of this range (capped at the time left), so instances do not restart at once; at most 365days.").also_read_as(&[Alias::same("ALLEGRO_EXECUTOR_RANDOM_EXPIRATION_RANGE")]);
    MAX_LIFETIME: Option<Duration> = Var::new("HOOK_EXECUTOR_MAX_LIFETIME", Kind::Duration, Unset("— (no limit)"), parse::lifetime,
        "Kill the task gracefully this long after its launch (minus a random part of HOOK_EXECUTOR_MAX_LIFETIME_SPREAD); at most 365days.");
    MAX_LIFETIME_SPREAD: Duration = Var::new("HOOK_EXECUTOR_MAX_LIFETIME_SPREAD", Kind::Duration, Value("0secs"), parse::schedule_duration,
        "Random part taken off HOOK_EXECUTOR_MAX_LIFETIME per task, so instances launched together do not end together; at most 365days.");
    // Metrics: the Graphite push (GET /metrics needs no setting).
    GRAPHITE_ADDRESS: Option<String> = Var::new("HOOK_EXECUTOR_GRAPHITE_ADDRESS", Kind::Text, Unset("— (no push)"), parse::authority,
        "Graphite's plaintext `host:port`; when set, the metrics are pushed there every HOOK_EXECUTOR_GRAPHITE_INTERVAL.");
    GRAPHITE_PREFIX: String = Var::new("HOOK_EXECUTOR_GRAPHITE_PREFIX", Kind::Text, Value("mesos_hook_executor.{app_id}.{task_id}"), parse::text,
        "Path prefix of the pushed metrics; `{app_id}` (MARATHON_APP_ID), `{task_id}` and `{executor_id}` become one path segment each.");
    GRAPHITE_INTERVAL: Duration = Var::new("HOOK_EXECUTOR_GRAPHITE_INTERVAL", Kind::Duration, Value("1mins"), parse::push_interval,
        "Time between pushes (100ms to 1days); connect and write each time out after 5s or the interval, whichever is shorter.");
}

/// Parsers of the task-output settings.
mod output {
    use super::{Kind, ValueError};
    use crate::config::{bytes, Protocol, ScrapeFormat};

    pub(super) fn size(value: &str, _: Kind) -> Result<Option<u64>, ValueError> {
        match bytes::parse(value) {
            Ok(0) => Err(ValueError::Zero),
            Ok(n) => Ok(Some(n)),
            Err(e) => Err(ValueError::NotOneOf {
                value: e.0,
                expected: "a size like `10MB`, `512KB`, `1GB` or a number of bytes".to_owned(),
            }),
        }
    }

    pub(super) fn scrape_format(value: &str, _: Kind) -> Result<Option<ScrapeFormat>, ValueError> {
        ScrapeFormat::from_label(value.trim())
            .map(Some)
            .ok_or_else(|| ValueError::NotOneOf {
                value: value.trim().to_owned(),
                expected: "`logstash`, `json` or `logfmt`".to_owned(),
            })
    }

    pub(super) fn protocol(value: &str, _: Kind) -> Result<Protocol, ValueError> {
        match value.trim() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(ValueError::NotOneOf {
                value: other.to_owned(),
                expected: "`tcp` or `udp`".to_owned(),
            }),
        }
    }
}

/// The longest duration any variable accepts: far beyond any sensible
/// timeout or grace, and far inside what clock arithmetic can hold (a larger
/// value would only ever be a typo, or an overflow waiting to happen).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// A libprocess UPID `id@host:port`, split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Upid {
    /// The process id, `slave(1)`: the first segment of the API path.
    pub(crate) id: String,
    /// `host:port`.
    pub(crate) authority: String,
}

/// What is wrong with one variable. Messages follow the variable's name
/// (`HOOK_EXECUTOR_ACK_TIMEOUT: "soon" is not a duration …`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ValueError {
    #[error("is missing")]
    Missing,
    #[error("is empty")]
    Empty,
    /// Missing although another setting needs it.
    #[error("is missing (required {0})")]
    MissingFor(&'static str),
    #[error("is missing (as are MESOS_AGENT_ENDPOINT and MESOS_DOMAIN_SOCKET): no way to reach the agent")]
    NoAgent,
    #[error(transparent)]
    Duration(#[from] duration::DurationError),
    #[error("must be greater than zero")]
    Zero,
    #[error("is not valid UTF-8")]
    NotUtf8,
    #[error("{value:?} is longer than the maximum of 365days")]
    TooLong { value: String },
    #[error("must be at most {0}")]
    AboveMax(&'static str),
    #[error("must be at least {0}")]
    BelowMin(&'static str),
    #[error("{value:?} is not {expected}")]
    NotOneOf { value: String, expected: String },
    #[error("{value:?} is not a {what} from {min} to {max}")]
    OutOfRange {
        value: String,
        what: &'static str,
        min: usize,
        max: usize,
        #[source]
        source: Option<std::num::ParseIntError>,
    },
    #[error("{value:?} is not a {what} of at least {min}")]
    TooSmall {
        value: String,
        what: &'static str,
        min: usize,
        #[source]
        source: Option<std::num::ParseIntError>,
    },
    #[error("{value:?} is not a log filter")]
    LogFilter {
        value: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("{0:?} is not a UPID like `slave(1)@10.0.0.1:5051`")]
    Upid(String),
    #[error("{0:?} is not `host:port`")]
    Authority(String),
    #[error("{value:?} is not `ip:port`")]
    SocketAddress {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("{value:?} is not a numeric uid")]
    Uid {
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("{value:?} is not an http(s) URL")]
    HttpUrl {
        value: String,
        #[source]
        source: Option<hyper::http::uri::InvalidUri>,
    },
    #[error("{value:?} is not an address")]
    ConsulAddress {
        value: String,
        #[source]
        source: Option<hyper::http::uri::InvalidUri>,
    },
    #[error("unknown hook {0:?} (known: {known})", known = HOOK_NAMES.join(", "))]
    UnknownHook(String),
    #[error("hook {0:?} is listed twice")]
    DuplicateHook(String),
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        path: PathBuf,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("requires HOOK_EXECUTOR_REMOTE_TOKEN (the TCP listener is never open without a bearer token)")]
    TcpWithoutToken,
    /// The value came from another name, which the message names.
    #[error("(read from {alias}) {source}")]
    FromAlias {
        alias: &'static str,
        source: Box<ValueError>,
    },
    /// Several items of a list are wrong; each is reported on its own.
    #[error("{} items are invalid", .0.len())]
    Items(Vec<ValueError>),
    /// A declared default that its own parser rejects: a bug, which the test
    /// `every_declared_variable_is_read_and_every_default_is_valid` catches
    /// before it can ship.
    #[error("its built-in default {default:?} is invalid")]
    BadDefault {
        default: &'static str,
        #[source]
        source: Box<ValueError>,
    },
}

/// One invalid or missing variable.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) variable: &'static str,
    pub(crate) error: ValueError,
}

/// `name`'s value when set: present and not blank.
fn set_value<'a>(vars: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    vars.get(name)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

/// A setting whose value was read from another name, or whose other name was
/// ignored because the setting itself is set too: logged once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasUse {
    /// Our variable.
    pub variable: &'static str,
    /// The other name.
    pub alias: &'static str,
    /// Both are set: ours wins and the alias is ignored.
    pub shadowed: bool,
}

impl fmt::Display for AliasUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = if self.alias.starts_with(ALLEGRO_PREFIX) {
            "allegro's "
        } else {
            ""
        };
        if self.shadowed {
            write!(
                f,
                "{owner}{} ignored: {} is set too and wins",
                self.alias, self.variable
            )
        } else {
            write!(f, "read {} from {owner}{}", self.variable, self.alias)
        }
    }
}

/// Which settings `vars` gives through an alias, and which aliases it sets
/// in vain (the setting itself is set as well), in table order.
pub(crate) fn alias_uses(vars: &BTreeMap<String, String>) -> Vec<AliasUse> {
    let mut uses = Vec::new();
    for spec in VARIABLES {
        let ours = set_value(vars, spec.name).is_some();
        let mut first = true;
        for alias in spec.also_read_as {
            if set_value(vars, alias.name).is_none() {
                continue;
            }
            uses.push(AliasUse {
                variable: spec.name,
                alias: alias.name,
                // Only the first set alias is read; later ones lose as well.
                shadowed: ours || !first,
            });
            first = false;
        }
    }
    uses
}

/// Whether `name` is one of the declared aliases.
pub(crate) fn is_alias(name: &str) -> bool {
    VARIABLES
        .iter()
        .any(|v| v.also_read_as.iter().any(|a| a.name == name))
}

/// Value translations for allegro's settings written differently from ours.
mod allegro {
    /// `ALLEGRO_EXECUTOR_DEBUG` is a Go bool (`strconv.ParseBool`): true means
    /// log level debug, false the default, info.
    pub(super) fn debug(value: &str) -> Option<&'static str> {
        match value.trim() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Some("debug"),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Some("info"),
            _ => None,
        }
    }
}

/// The variables of one environment, read through their declarations; every
/// problem is collected rather than returned, so all are reported together.
pub(crate) struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    /// Variables present with a value that is not UTF-8.
    not_utf8: Vec<&'static str>,
    problems: Vec<Problem>,
    /// Names read so far, for the test that every declared variable is read.
    #[cfg(test)]
    read: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(vars: &'a BTreeMap<String, String>) -> Self {
        Self {
            vars,
            not_utf8: Vec::new(),
            problems: Vec::new(),
            #[cfg(test)]
            read: Vec::new(),
        }
    }

    /// Names variables that are present but not UTF-8: reading one is a
    /// problem naming it, and it counts as set.
    pub(crate) fn not_utf8(mut self, names: &[&'static str]) -> Self {
        self.not_utf8 = names.to_vec();
        self
    }

    /// Whether `spec` (or one of its aliases) is set to a value that is not
    /// UTF-8.
    fn is_not_utf8(&self, spec: &Spec) -> Option<&'static str> {
        std::iter::once(spec.name)
            .chain(spec.also_read_as.iter().map(|a| a.name))
            .find(|n| self.not_utf8.contains(n))
    }

    /// The variable's text, `None` when unset: absent, empty or blank. When
    /// it is unset, the first set alias is read instead, and returned too.
    fn text(&self, spec: &Spec) -> Option<(&'a str, Option<&'static Alias>)> {
        if let Some(v) = set_value(self.vars, spec.name) {
            return Some((v, None));
        }
        spec.also_read_as
            .iter()
            .find_map(|a| set_value(self.vars, a.name).map(|v| (v, Some(a))))
    }

    /// Whether the variable is set (present and not blank).
    pub(crate) fn is_set<T>(&self, var: &Var<T>) -> bool {
        self.text(&var.spec).is_some() || self.is_not_utf8(&var.spec).is_some()
    }

    /// The variable's value: parsed when set, its fallback otherwise. A
    /// problem is recorded, and `T::default()` returned, when it is invalid or
    /// required and unset.
    pub(crate) fn get<T: Default>(&mut self, var: &Var<T>) -> T {
        let spec = &var.spec;
        #[cfg(test)]
        self.read.push(spec.name);
        if let Some(name) = self.is_not_utf8(spec) {
            self.problems.push(Problem {
                variable: name,
                error: ValueError::NotUtf8,
            });
            return T::default();
        }
        let parsed = match (self.text(spec), spec.fallback) {
            (Some((text, None)), _) => (var.parse)(text, spec.kind),
            (Some((text, Some(alias))), _) => {
                let ours = match alias.translate {
                    Some((translate, how)) => translate(text).ok_or_else(|| ValueError::NotOneOf {
                        value: text.to_owned(),
                        expected: format!("true or false ({how})"),
                    }),
                    None => Ok(text),
                };
                ours.and_then(|t| (var.parse)(t, spec.kind))
                    .map_err(|e| ValueError::FromAlias {
                        alias: alias.name,
                        source: Box::new(e),
                    })
            }
            (None, Fallback::Value(default)) => {
                (var.parse)(default, spec.kind).map_err(|e| ValueError::BadDefault {
                    default,
                    source: Box::new(e),
                })
            }
            (None, Fallback::Required) if self.vars.contains_key(spec.name) => {
                Err(ValueError::Empty)
            }
            (None, Fallback::Required) => Err(ValueError::Missing),
            (None, Fallback::RequiredWhen(_) | Fallback::Unset(_)) => Ok(T::default()),
        };
        parsed.unwrap_or_else(|e| {
            self.problem(var, e);
            T::default()
        })
    }

    /// Records a problem with `var`; a list of item problems becomes one each.
    pub(crate) fn problem<T>(&mut self, var: &Var<T>, error: ValueError) {
        match error {
            ValueError::Items(items) => items.into_iter().for_each(|e| self.problem(var, e)),
            error => self.problems.push(Problem {
                variable: var.spec.name,
                error,
            }),
        }
    }

    /// The problems found, in table order.
    pub(crate) fn finish(mut self) -> Vec<Problem> {
        let position = |name: &str| VARIABLES.iter().position(|v| v.name == name);
        self.problems.sort_by_key(|p| position(p.variable));
        self.problems
    }

    #[cfg(test)]
    pub(crate) fn read(&self) -> &[&'static str] {
        &self.read
    }
}

/// Parsers, one per shape of value. Each receives set (non-blank) text.
mod parse {
    use super::*;

    pub(super) fn text(value: &str, _: Kind) -> Result<String, ValueError> {
        Ok(value.to_owned())
    }

    pub(super) fn optional_text(value: &str, _: Kind) -> Result<Option<String>, ValueError> {
        Ok(Some(value.to_owned()))
    }

    pub(super) fn secret(value: &str, _: Kind) -> Result<Option<Secret>, ValueError> {
        Ok(Some(Secret::new(value.to_owned())))
    }

    pub(super) fn path(value: &str, _: Kind) -> Result<Option<PathBuf>, ValueError> {
        Ok(Some(PathBuf::from(value)))
    }

    pub(super) fn duration(value: &str, _: Kind) -> Result<Duration, ValueError> {
        let d = duration::parse(value.trim())?;
        if d > MAX_DURATION {
            return Err(ValueError::TooLong {
                value: value.trim().to_owned(),
            });
        }
        Ok(d)
    }

    /// A duration for a task's schedule: bounded like every duration
    /// (365days), so that no deadline overflows.
    pub(super) fn schedule_duration(value: &str, kind: Kind) -> Result<Duration, ValueError> {
        duration(value, kind)
    }

    /// The Graphite interval: 100 ms to a day.
    pub(super) fn push_interval(value: &str, kind: Kind) -> Result<Duration, ValueError> {
        let d = duration(value, kind)?;
        if d < Duration::from_millis(100) {
            return Err(ValueError::BelowMin("100ms"));
        }
        if d > Duration::from_secs(86_400) {
            return Err(ValueError::AboveMax("1days"));
        }
        Ok(d)
    }

    /// `HOOK_EXECUTOR_MAX_LIFETIME`: set means a positive, bounded duration.
    pub(super) fn lifetime(value: &str, kind: Kind) -> Result<Option<Duration>, ValueError> {
        let d = schedule_duration(value, kind)?;
        if d.is_zero() {
            return Err(ValueError::Zero);
        }
        Ok(Some(d))
    }

    pub(super) fn nonzero_duration(value: &str, kind: Kind) -> Result<Duration, ValueError> {
        duration(value, kind).and_then(|d| {
            if d.is_zero() {
                Err(ValueError::Zero)
            } else {
                Ok(d)
            }
        })
    }

    /// `1` or `0` for a [`Kind::Flag`]; also `true` or `false` for a [`Kind::Switch`].
    pub(super) fn flag(value: &str, kind: Kind) -> Result<bool, ValueError> {
        match (value.trim(), kind) {
            ("1", _) | ("true", Kind::Switch) => Ok(true),
            ("0", _) | ("false", Kind::Switch) => Ok(false),
            (other, Kind::Switch) => Err(ValueError::NotOneOf {
                value: other.to_owned(),
                expected: "1, 0, true or false".to_owned(),
            }),
            (other, _) => Err(ValueError::NotOneOf {
                value: other.to_owned(),
                expected: "1 or 0".to_owned(),
            }),
        }
    }

    pub(super) fn list(value: &str, _: Kind) -> Result<Vec<String>, ValueError> {
        Ok(value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// A whole number within the bounds of a [`Kind::Count`] or [`Kind::Bytes`].
    pub(super) fn count(value: &str, kind: Kind) -> Result<usize, ValueError> {
        let (what, min, max) = match kind {
            Kind::Bytes { min, max } => ("byte count", min, max),
            Kind::Count { min, max } => ("whole number", min, max),
            _ => ("whole number", 0, usize::MAX),
        };
        let value = value.trim();
        let parsed = value.parse::<usize>();
        match parsed {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ if max == usize::MAX => Err(ValueError::TooSmall {
                value: value.to_owned(),
                what,
                min,
                source: parsed.err(),
            }),
            _ => Err(ValueError::OutOfRange {
                value: value.to_owned(),
                what,
                min,
                max,
                source: parsed.err(),
            }),
        }
    }

    pub(super) fn log_format(value: &str, _: Kind) -> Result<LogFormat, ValueError> {
        match value.trim() {
            "full" | "text" => Ok(LogFormat::Full),
            "compact" => Ok(LogFormat::Compact),
            "json" => Ok(LogFormat::Json),
            other => Err(ValueError::NotOneOf {
                value: other.to_owned(),
                expected: "`json`, `compact` or `full`".to_owned(),
            }),
        }
    }

    pub(super) fn exec_user(value: &str, _: Kind) -> Result<ExecHookUser, ValueError> {
        match value.trim() {
            "executor" => Ok(ExecHookUser::Executor),
            "task" => Ok(ExecHookUser::Task),
            other => Err(ValueError::NotOneOf {
                value: other.to_owned(),
                expected: "`executor` or `task`".to_owned(),
            }),
        }
    }

    pub(super) fn log_filter(value: &str, _: Kind) -> Result<String, ValueError> {
        match value.parse::<tracing_subscriber::filter::Targets>() {
            Ok(_) => Ok(value.to_owned()),
            Err(source) => Err(ValueError::LogFilter {
                value: value.to_owned(),
                source,
            }),
        }
    }

    pub(super) fn upid(value: &str, _: Kind) -> Result<Option<Upid>, ValueError> {
        let split = value
            .split_once('@')
            .filter(|(id, address)| !id.is_empty() && valid_authority(address));
        match split {
            Some((id, authority)) => Ok(Some(Upid {
                id: id.to_owned(),
                authority: authority.to_owned(),
            })),
            None => Err(ValueError::Upid(value.to_owned())),
        }
    }

    pub(super) fn authority(value: &str, _: Kind) -> Result<Option<String>, ValueError> {
        if valid_authority(value) {
            Ok(Some(value.to_owned()))
        } else {
            Err(ValueError::Authority(value.to_owned()))
        }
    }

    fn valid_authority(address: &str) -> bool {
        address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    }

    pub(super) fn socket_address(value: &str, _: Kind) -> Result<Option<SocketAddr>, ValueError> {
        let value = value.trim();
        value
            .parse()
            .map(Some)
            .map_err(|source| ValueError::SocketAddress {
                value: value.to_owned(),
                source,
            })
    }

    pub(super) fn uids(value: &str, kind: Kind) -> Result<Option<Vec<u32>>, ValueError> {
        let (uids, bad): (Vec<_>, Vec<_>) = list(value, kind)?
            .into_iter()
            .map(|item| {
                item.parse::<u32>().map_err(|source| ValueError::Uid {
                    value: item,
                    source,
                })
            })
            .partition(Result::is_ok);
        if bad.is_empty() {
            Ok(Some(uids.into_iter().flatten().collect()))
        } else {
            Err(ValueError::Items(
                bad.into_iter().filter_map(Result::err).collect(),
            ))
        }
    }

    pub(super) fn http_urls(value: &str, kind: Kind) -> Result<Vec<String>, ValueError> {
        let urls = list(value, kind)?;
        let bad: Vec<ValueError> = urls
            .iter()
            .filter_map(|url| match url.parse::<hyper::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                    None
                }
                Ok(_) => Some(ValueError::HttpUrl {
                    value: url.clone(),
                    source: None,
                }),
                Err(e) => Some(ValueError::HttpUrl {
                    value: url.clone(),
                    source: Some(e),
                }),
            })
            .collect();
        if bad.is_empty() {
            Ok(urls)
        } else {
            Err(ValueError::Items(bad))
        }
    }
}

/// What is wrong with a hook chain: unknown names and repeated ones. The
/// chain is kept as given, so the settings the hooks require are still checked.
pub(crate) fn hook_chain_problems(chain: &[String]) -> Vec<ValueError> {
    let mut problems = Vec::new();
    for (i, name) in chain.iter().enumerate() {
        if !HOOK_NAMES.contains(&name.as_str()) {
            problems.push(ValueError::UnknownHook(name.clone()));
        } else if chain[..i].contains(name) {
            problems.push(ValueError::DuplicateHook(name.clone()));
        }
    }
    problems
}

/// The `--help` text: usage, then every variable with type, default and meaning.
#[must_use]
pub fn help_text() -> String {
    let mut out = String::from(
        "mesos-hook-executor: every environment variable it reads (an empty value counts as unset;\n\
         durations are at most 365days; a value that is not UTF-8 is an error for every variable\n\
         listed here).\n\n",
    );
    for v in VARIABLES {
        out.push_str(&format!(
            "  {:<40} {:<10} default: {}\n      {}\n",
            v.name,
            v.kind.to_string(),
            v.fallback,
            v.meaning()
        ));
    }
    out.push_str(
        "\nExit codes: 0 clean run (terminal update acknowledged, or SHUTDOWN before any task);\n\
         1 terminal update not acknowledged in time; 2 configuration error; 3 agent lost or never reached;\n\
         4 internal error (see log).\n",
    );
    out
}

/// docs/configuration.md's table, generated from [`VARIABLES`].
#[cfg(test)]
fn reference_table() -> String {
    let cell = |text: String| text.replace('|', "\\|");
    let mut out = String::from("| variable | type | default | meaning |\n|---|---|---|---|\n");
    for v in VARIABLES {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            v.name,
            cell(v.kind.to_string()),
            cell(v.fallback.to_string()),
            cell(v.meaning())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str =
        "<!-- BEGIN variables: generated from src/config/variables.rs; `UPDATE_DOCS=1 cargo test --lib config::` rewrites it -->\n";
    const END: &str = "<!-- END variables -->";

    /// docs/configuration.md's table is the one the declarations generate.
    /// With `UPDATE_DOCS=1` the test rewrites it instead of failing.
    #[test]
    fn reference_table_is_generated_from_the_declarations() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let readme = std::fs::read_to_string(path).expect("docs/configuration.md");
        let start = readme
            .find(BEGIN)
            .expect("docs/configuration.md has the BEGIN variables marker")
            + BEGIN.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("docs/configuration.md has the END variables marker");
        let expected = reference_table();
        if readme[start..end] == expected {
            return;
        }
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(
                path,
                format!("{}{expected}{}", &readme[..start], &readme[end..]),
            )
            .expect("docs/configuration.md written");
        } else {
            panic!("docs/configuration.md's configuration table is stale: run `UPDATE_DOCS=1 cargo test --lib config::` and commit the result");
        }
    }

    /// Every `HOOK_EXECUTOR_*` name the README and docs/ mention is declared
    /// (a name ending in `_`, as in `HOOK_EXECUTOR_POLICY_*`, is a prefix of one).
    #[test]
    fn docs_mention_only_declared_variables() {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut files = vec![format!("{root}/README.md")];
        for entry in std::fs::read_dir(format!("{root}/docs")).expect("docs/") {
            let path = entry.expect("docs entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path.display().to_string());
            }
        }
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            for (at, _) in text.match_indices(super::super::PREFIX) {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let known = if name.ends_with('_') {
                    VARIABLES.iter().any(|v| v.name.starts_with(&name))
                } else {
                    VARIABLES.iter().any(|v| v.name == name)
                };
                assert!(
                    known,
                    "{file} mentions {name}, which is not a declared variable"
                );
            }
        }
    }

    #[test]
    fn defaults_match_the_constants_they_mirror() {
        let vars = BTreeMap::new();
        let mut r = Reader::new(&vars);
        assert_eq!(
            r.get(&MAX_RECORD_SIZE),
            crate::agent::recordio::DEFAULT_MAX_RECORD_LEN
        );
        assert_eq!(r.get(&ACK_TIMEOUT), Duration::from_secs(60));
        assert!(r.get(&REMOTE_ENABLED));
    }

    #[test]
    fn blank_means_unset_and_the_alias_is_read() {
        let vars: BTreeMap<String, String> = [
            ("HOOK_EXECUTOR_ACK_TIMEOUT", " "),
            ("MESOS_FRAMEWORK_ID", ""),
            ("SSL_ENABLED", "true"),
            ("HOOK_EXECUTOR_REMOTE_ENABLED", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut r = Reader::new(&vars);
        assert_eq!(r.get(&ACK_TIMEOUT), Duration::from_secs(60));
        assert!(r.get(&SSL_ENABLED));
        assert!(r.get(&REMOTE_ENABLED));
        let _ = r.get(&FRAMEWORK_ID);
        let problems = r.finish();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].error.to_string(), "is empty");
    }

    #[test]
    fn flags_switches_and_counts() {
        assert!(matches!(
            parse::flag("true", Kind::Flag),
            Err(ValueError::NotOneOf { .. })
        ));
        assert_eq!(parse::flag(" true ", Kind::Switch).ok(), Some(true));
        let err = parse::count(
            "100",
            Kind::Bytes {
                min: 1024,
                max: usize::MAX,
            },
        )
        .expect_err("too small");
        assert_eq!(
            err.to_string(),
            "\"100\" is not a byte count of at least 1024"
        );
        let err = parse::count("0", Kind::Count { min: 1, max: 4096 }).expect_err("out of range");
        assert_eq!(
            err.to_string(),
            "\"0\" is not a whole number from 1 to 4096"
        );
        assert!(std::error::Error::source(
            &parse::count("x", Kind::Count { min: 1, max: 2 }).expect_err("nan")
        )
        .is_some());
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let help = help_text();
        for v in VARIABLES {
            assert!(help.contains(v.name), "{}", v.name);
        }
        assert!(
            help.contains("HOOK_EXECUTOR_KILL_GRACE_PERIOD          duration   default: 3secs"),
            "{help}"
        );
    }
}
