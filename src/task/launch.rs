//! From a `TaskInfo` to what exactly gets executed: the program, its arguments,
//! its environment, working directory and user. Pure functions, no I/O.
//!
//! # Which command runs
//! 1. `TaskInfo.command`, when present: `shell: true` (the proto default) runs
//!    `sh -c <value>` and ignores `arguments`; `shell: false` execs `value` (found
//!    on `PATH`) with `arguments` as the complete argv, argv\[0\] included, as
//!    Mesos does. An empty `arguments` list gives argv = `[value]`.
//! 2. Otherwise Marathon's custom-executor form: Marathon sends no
//!    `TaskInfo.command` and puts `chmod ug+rx '<path>' && exec '<path>' <cmd>` in
//!    `ExecutorInfo.command.value`. We strip exactly that prefix (the same quoted
//!    path twice) and run `<cmd>` with `sh -c`, as Marathon's `cmd` is shell.
//! 3. Anything else is refused with a message saying which forms are understood.
//!
//! # The task's environment
//! Built from empty, in this order (later entries win):
//! 1. the executor's own environment minus our `HOOK_EXECUTOR_*` settings and
//!    the secret deny-list ([`BUILTIN_DENYLIST`] plus `HOOK_EXECUTOR_ENV_DENYLIST`).
//!    For Marathon apps this is how the app's `env` reaches the task; for other
//!    frameworks it carries the agent's `MESOS_*` variables, as the Mesos command
//!    executor passes them;
//! 2. `TaskInfo.command.environment` (`VALUE` variables; `SECRET` ones are left
//!    to the containerizer, as Mesos' own executors do);
//! 3. `MESOS_TASK_ID`, `MESOS_SANDBOX` and `MESOS_ALLOCATION_ROLE` (first
//!    resource's allocation role), and a default `PATH` if none is set;
//! 4. variables returned by before-start hooks (added by the caller).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
};

use crate::proto::v1::{self, environment::variable::Type as VariableType};

/// Variables never passed to a task, a hook or a remote command, whatever the
/// configuration says. `HOOK_EXECUTOR_*` is removed as a whole as well.
pub const BUILTIN_DENYLIST: &[&str] = &[
    "MESOS_EXECUTOR_AUTHENTICATION_TOKEN",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_TOKEN",
    "HOOK_EXECUTOR_*",
    // allegro's settings, accepted as aliases, hold tokens too (Consul, VaaS,
    // the Sentry DSN); allegro meant to strip them and leaked them.
    "ALLEGRO_EXECUTOR_*",
];

/// `PATH` given to a task whose environment has none (what
/// `mesos-containerizer launch` sets).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// `sh -c <command>`.
    Shell {
        /// The shell command line.
        command: String,
    },
    /// `execvp(path, argv)`: no shell, arguments verbatim.
    Exec {
        /// The executable (looked up on `PATH` if it has no slash).
        path: String,
        /// The complete argv, argv\[0\] included.
        argv: Vec<String>,
    },
}

impl Program {
    /// The command line as one string, for logs and messages.
    #[must_use]
    pub fn display(&self) -> String {
        match self {
            Self::Shell { command } => command.clone(),
            Self::Exec { path, argv } if argv.is_empty() => path.clone(),
            Self::Exec { argv, .. } => argv.join(" "),
        }
    }
}

/// Where the command came from, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandSource {
    /// `TaskInfo.command`.
    TaskCommand,
    /// Marathon's `chmod … && exec …` executor command.
    MarathonExecutorCommand,
}

/// Everything needed to start the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The program.
    pub program: Program,
    /// The complete environment, sorted by name.
    pub env: BTreeMap<String, String>,
    /// Inherited variables whose name or value is not UTF-8, passed on
    /// byte for byte (after the same deny-list); a name also in `env` is
    /// not passed (the explicit value wins).
    pub other_env: Vec<(OsString, OsString)>,
    /// Working directory (the sandbox).
    pub cwd: PathBuf,
    /// `CommandInfo.user`, honoured when the executor runs as root.
    pub user: Option<String>,
    /// Where the command came from.
    pub source: CommandSource,
}

impl LaunchSpec {
    /// The variables of [`Self::other_env`] that no variable of
    /// [`Self::env`] overrides (a hook or the CommandInfo may set a name
    /// whose inherited value was not UTF-8).
    pub fn unshadowed_other_env(&self) -> impl Iterator<Item = &(OsString, OsString)> {
        self.other_env
            .iter()
            .filter(|(k, _)| k.to_str().is_none_or(|k| !self.env.contains_key(k)))
    }
}

/// Why a task cannot be launched as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// Neither a `TaskInfo.command` nor a Marathon executor command.
    #[error(
        "the task has no command: TaskInfo.command is absent and the executor command is not Marathon's \
         `chmod ug+rx '<path>' && exec '<path>' <cmd>` form"
    )]
    NoCommand,
    /// A command whose `value` is empty.
    #[error("the task's command is empty ({0})")]
    EmptyCommand(&'static str),
}

/// Inputs of [`launch_spec`] that do not come from the TaskInfo.
#[derive(Debug, Clone, Copy)]
pub struct LaunchContext<'a> {
    /// The executor's own environment (already without the agent token).
    pub executor_env: &'a BTreeMap<String, String>,
    /// Its variables whose name or value is not UTF-8.
    pub executor_env_other: &'a BTreeMap<OsString, OsString>,
    /// Extra deny-list entries from the configuration.
    pub denylist: &'a [String],
    /// The sandbox path seen by the task.
    pub sandbox: &'a std::path::Path,
}

/// Recovers the app command from Marathon's executor command line
/// `chmod ug+rx '<path>' && exec '<path>' <cmd>`. Returns `None` when the line is
/// not of that form; `Some("")` when it is but carries no command.
#[must_use]
pub fn strip_marathon_prefix(line: &str) -> Option<&str> {
    fn path_token(s: &str) -> Option<(&str, &str)> {
        if let Some(rest) = s.strip_prefix('\'') {
            let end = rest.find('\'')?;
            Some((&rest[..end], &rest[end + 1..]))
        } else {
            let end = s.find(' ').unwrap_or(s.len());
            (end > 0).then(|| (&s[..end], &s[end..]))
        }
    }
    let rest = line.strip_prefix("chmod ug+rx ")?;
    let (first, rest) = path_token(rest)?;
    let rest = rest.strip_prefix(" && exec ")?;
    let (second, rest) = path_token(rest)?;
    if first != second {
        return None;
    }
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix(' ')
}

/// A `CommandInfo` as Mesos runs it: `shell` (the default) gives `sh -c
/// value`; otherwise `value` is exec'd with `arguments` as the complete argv
/// (`[value]` when empty).
#[must_use]
pub fn command_program(command: &v1::CommandInfo) -> Program {
    let value = command.value.clone().unwrap_or_default();
    if command.shell() {
        Program::Shell { command: value }
    } else {
        let argv = if command.arguments.is_empty() {
            vec![value.clone()]
        } else {
            command.arguments.clone()
        };
        Program::Exec { path: value, argv }
    }
}

/// Decides the program from the task's and the executor's `CommandInfo`.
pub fn program(
    task: &v1::TaskInfo,
    executor: Option<&v1::ExecutorInfo>,
) -> Result<(Program, CommandSource), LaunchError> {
    if let Some(command) = &task.command {
        if command.value.as_deref().unwrap_or_default().is_empty() {
            return Err(LaunchError::EmptyCommand("TaskInfo.command.value"));
        }
        return Ok((command_program(command), CommandSource::TaskCommand));
    }
    let line = executor
        .and_then(|e| e.command.as_ref())
        .and_then(|c| c.value.as_deref())
        .unwrap_or_default();
    match strip_marathon_prefix(line) {
        Some("") => Err(LaunchError::EmptyCommand(
            "Marathon executor command without an app command",
        )),
        Some(cmd) => Ok((
            Program::Shell {
                command: cmd.to_owned(),
            },
            CommandSource::MarathonExecutorCommand,
        )),
        None => Err(LaunchError::NoCommand),
    }
}

/// Whether `name` is kept out of child environments by `denylist` (exact names,
/// or `PREFIX*` patterns) or the built-in list.
#[must_use]
pub fn is_denied(name: &str, denylist: &[String]) -> bool {
    let matches = |pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    };
    BUILTIN_DENYLIST.iter().any(|p| matches(p)) || denylist.iter().any(|p| matches(p))
}

/// The executor's environment with our settings and secrets removed: the base
/// of every child environment (tasks, hooks, checks, remote commands).
#[must_use]
pub fn inherited_env(
    executor_env: &BTreeMap<String, String>,
    denylist: &[String],
) -> BTreeMap<String, String> {
    executor_env
        .iter()
        .filter(|(k, _)| !is_denied(k, denylist))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// [`inherited_env`] for the variables that are not UTF-8: the same deny
/// rules, applied to the name as far as it is text.
#[must_use]
pub fn inherited_env_other(
    executor_env: &BTreeMap<OsString, OsString>,
    denylist: &[String],
) -> Vec<(OsString, OsString)> {
    executor_env
        .iter()
        .filter(|(k, _)| !is_denied(&k.to_string_lossy(), denylist))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Adds the `VALUE` variables of a Mesos `Environment`; `SECRET` ones are skipped.
pub fn apply_environment(
    env: &mut BTreeMap<String, String>,
    environment: Option<&v1::Environment>,
) {
    for variable in environment
        .map(|e| e.variables.as_slice())
        .unwrap_or_default()
    {
        if variable.r#type() == VariableType::Secret {
            continue;
        }
        env.insert(
            variable.name.clone(),
            variable.value.clone().unwrap_or_default(),
        );
    }
}

/// Builds the whole launch specification.
pub fn launch_spec(
    task: &v1::TaskInfo,
    executor: Option<&v1::ExecutorInfo>,
    ctx: LaunchContext<'_>,
) -> Result<LaunchSpec, LaunchError> {
    let (program, source) = program(task, executor)?;
    let mut env = inherited_env(ctx.executor_env, ctx.denylist);
    if source == CommandSource::TaskCommand {
        apply_environment(
            &mut env,
            task.command.as_ref().and_then(|c| c.environment.as_ref()),
        );
    }
    env.insert("MESOS_TASK_ID".to_owned(), task.task_id.value.clone());
    env.insert(
        "MESOS_SANDBOX".to_owned(),
        ctx.sandbox.display().to_string(),
    );
    let role = task
        .resources
        .first()
        .and_then(|r| r.allocation_info.as_ref())
        .and_then(|a| a.role.clone());
    if let Some(role) = role {
        env.insert("MESOS_ALLOCATION_ROLE".to_owned(), role);
    }
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    let user = match source {
        CommandSource::TaskCommand => task.command.as_ref().and_then(|c| c.user.clone()),
        CommandSource::MarathonExecutorCommand => None,
    }
    .or_else(|| {
        executor
            .and_then(|e| e.command.as_ref())
            .and_then(|c| c.user.clone())
    })
    .filter(|u| !u.is_empty());
    let other_env = inherited_env_other(ctx.executor_env_other, ctx.denylist);
    Ok(LaunchSpec {
        program,
        other_env,
        env,
        cwd: ctx.sandbox.to_path_buf(),
        user,
        source,
    })
}

/// Where `execvp` finds `name` (no slash) on `path_var` (the `PATH` the
/// process will have), relative entries taken from `cwd`: the first regular
/// file with an execute bit.
#[must_use]
pub(crate) fn find_on_path(name: &str, path_var: &str, cwd: &Path) -> Option<PathBuf> {
    path_var
        .split(':')
        .map(|dir| {
            if dir.is_empty() {
                cwd.to_path_buf()
            } else {
                cwd.join(dir)
            }
            .join(name)
        })
        .find(|p| is_executable(p))
}

/// A regular file with an execute bit, as `execvp` would try to run.
#[must_use]
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The user the task runs as when the executor is root, for hooks: the
/// task's `CommandInfo.user`, else the executor's (Marathon's command lives
/// there); an empty name is none. (The launch spec applies the same rule,
/// knowing which command it runs.)
#[must_use]
pub(crate) fn task_user(
    task: &v1::TaskInfo,
    executor: Option<&v1::ExecutorInfo>,
) -> Option<String> {
    task.command
        .as_ref()
        .and_then(|c| c.user.clone())
        .or_else(|| {
            executor
                .and_then(|e| e.command.as_ref())
                .and_then(|c| c.user.clone())
        })
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_with(command: Option<v1::CommandInfo>) -> v1::TaskInfo {
        v1::TaskInfo {
            name: "t".into(),
            task_id: v1::TaskId {
                value: "task-1".into(),
            },
            agent_id: v1::AgentId {
                value: "agent-1".into(),
            },
            command,
            ..Default::default()
        }
    }

    fn executor_with(line: &str) -> v1::ExecutorInfo {
        v1::ExecutorInfo {
            executor_id: v1::ExecutorId { value: "e".into() },
            command: Some(v1::CommandInfo {
                value: Some(line.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn marathon_prefix_is_stripped_exactly() {
        assert_eq!(
            strip_marathon_prefix(
                "chmod ug+rx './executor' && exec './executor' python3 -m http.server $PORT0"
            ),
            Some("python3 -m http.server $PORT0")
        );
        assert_eq!(
            strip_marathon_prefix("chmod ug+rx '/opt/x y/ex' && exec '/opt/x y/ex'  two  spaces "),
            Some(" two  spaces ")
        );
        assert_eq!(
            strip_marathon_prefix("chmod ug+rx './e' && exec './e'"),
            Some("")
        );
        assert_eq!(
            strip_marathon_prefix("chmod ug+rx ./e && exec ./e sleep 1"),
            Some("sleep 1")
        );
        assert_eq!(
            strip_marathon_prefix("chmod ug+rx './a' && exec './b' sleep 1"),
            None
        );
        assert_eq!(strip_marathon_prefix("./executor sleep 1"), None);
        assert_eq!(
            strip_marathon_prefix("chmod ug+rx './e' && exec './e'sleep"),
            None
        );
        assert_eq!(strip_marathon_prefix("chmod ug+rx '"), None);
    }

    #[test]
    fn task_command_shell_and_argv() {
        let shell = task_with(Some(v1::CommandInfo {
            value: Some("echo $HOME".into()),
            arguments: vec!["ignored".into()],
            ..Default::default()
        }));
        assert_eq!(
            program(&shell, None),
            Ok((
                Program::Shell {
                    command: "echo $HOME".into()
                },
                CommandSource::TaskCommand
            ))
        );
        let exec = task_with(Some(v1::CommandInfo {
            value: Some("/bin/echo".into()),
            shell: Some(false),
            arguments: vec!["echo".into(), "$HOME".into(), "a b".into()],
            ..Default::default()
        }));
        assert_eq!(
            program(&exec, None),
            Ok((
                Program::Exec {
                    path: "/bin/echo".into(),
                    argv: vec!["echo".into(), "$HOME".into(), "a b".into()]
                },
                CommandSource::TaskCommand
            ))
        );
        let bare = task_with(Some(v1::CommandInfo {
            value: Some("true".into()),
            shell: Some(false),
            ..Default::default()
        }));
        assert_eq!(
            program(&bare, None).map(|p| p.0),
            Ok(Program::Exec {
                path: "true".into(),
                argv: vec!["true".into()]
            })
        );
    }

    #[test]
    fn task_command_wins_over_the_executor_command() {
        let task = task_with(Some(v1::CommandInfo {
            value: Some("sleep 1".into()),
            ..Default::default()
        }));
        let ex = executor_with("chmod ug+rx './e' && exec './e' other");
        assert_eq!(
            program(&task, Some(&ex)).map(|p| p.1),
            Ok(CommandSource::TaskCommand)
        );
        let marathon = task_with(None);
        assert_eq!(
            program(&marathon, Some(&ex)),
            Ok((
                Program::Shell {
                    command: "other".into()
                },
                CommandSource::MarathonExecutorCommand
            ))
        );
    }

    #[test]
    fn missing_or_empty_commands_are_refused() {
        assert_eq!(program(&task_with(None), None), Err(LaunchError::NoCommand));
        assert_eq!(
            program(
                &task_with(None),
                Some(&executor_with("/usr/bin/mesos-hook-executor"))
            ),
            Err(LaunchError::NoCommand)
        );
        assert!(matches!(
            program(
                &task_with(None),
                Some(&executor_with("chmod ug+rx 'e' && exec 'e'"))
            ),
            Err(LaunchError::EmptyCommand(_))
        ));
        let empty = task_with(Some(v1::CommandInfo::default()));
        assert!(matches!(
            program(&empty, None),
            Err(LaunchError::EmptyCommand(_))
        ));
    }

    #[test]
    fn environment_is_built_from_explicit_rules() {
        let executor_env: BTreeMap<String, String> = [
            ("PORT0", "31000"),
            ("MESOS_FRAMEWORK_ID", "fw"),
            ("HOOK_EXECUTOR_KILL_GRACE_PERIOD", "5s"),
            ("CONSUL_HTTP_TOKEN", "secret"),
            ("ALLEGRO_EXECUTOR_CONSUL_TOKEN", "secret"),
            ("MY_SECRET_KEY", "secret"),
            ("VAULT_TOKEN", "secret"),
            ("OVERRIDDEN", "old"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let denylist = vec!["MY_SECRET_*".to_owned(), "VAULT_TOKEN".to_owned()];
        let bytes = |b: &[u8]| <OsString as std::os::unix::ffi::OsStringExt>::from_vec(b.to_vec());
        let executor_env_other: BTreeMap<OsString, OsString> = [
            (OsString::from("APP_BYTES"), bytes(b"caf\xe9")),
            (OsString::from("MY_SECRET_BYTES"), bytes(b"\xff")),
            (OsString::from("OVERRIDDEN"), bytes(b"\xff")),
        ]
        .into_iter()
        .collect();
        let task = v1::TaskInfo {
            command: Some(v1::CommandInfo {
                value: Some("env".into()),
                environment: Some(v1::Environment {
                    variables: vec![
                        v1::environment::Variable {
                            name: "OVERRIDDEN".into(),
                            value: Some("new".into()),
                            ..Default::default()
                        },
                        v1::environment::Variable {
                            name: "FROM_SECRET".into(),
                            r#type: Some(VariableType::Secret as i32),
                            ..Default::default()
                        },
                    ],
                }),
                ..Default::default()
            }),
            resources: vec![v1::Resource {
                name: "cpus".into(),
                allocation_info: Some(v1::resource::AllocationInfo {
                    role: Some("web".into()),
                }),
                ..Default::default()
            }],
            ..task_with(None)
        };
        let spec = launch_spec(
            &task,
            None,
            LaunchContext {
                executor_env: &executor_env,
                executor_env_other: &executor_env_other,
                denylist: &denylist,
                sandbox: std::path::Path::new("/sb"),
            },
        )
        .expect("launchable");
        let keys: Vec<&str> = spec.env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "MESOS_ALLOCATION_ROLE",
                "MESOS_FRAMEWORK_ID",
                "MESOS_SANDBOX",
                "MESOS_TASK_ID",
                "OVERRIDDEN",
                "PATH",
                "PORT0"
            ]
        );
        assert_eq!(spec.env["OVERRIDDEN"], "new");
        assert_eq!(spec.env["MESOS_TASK_ID"], "task-1");
        assert_eq!(spec.env["MESOS_ALLOCATION_ROLE"], "web");
        assert_eq!(spec.env["PATH"], DEFAULT_PATH);
        assert_eq!(spec.cwd, PathBuf::from("/sb"));
        // Not UTF-8: passed byte for byte, after the same deny-list, unless
        // an explicit variable of the same name overrides it.
        let other: Vec<_> = spec.unshadowed_other_env().cloned().collect();
        assert_eq!(
            other,
            vec![(OsString::from("APP_BYTES"), bytes(b"caf\xe9"))]
        );
    }
}
