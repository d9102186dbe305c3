//! Validation of an execute request into a [`Plan`]: what to run, with which
//! environment and timeout, and what was ignored. Pure but for the `PATH`
//! lookup.
//!
//! Commands get the task's environment rules (the executor's environment
//! minus `HOOK_EXECUTOR_*` and the secret deny-list, given as `base`) plus the
//! request's variables.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{error::ApiError, types::ExecuteRequest};
use crate::task::launch::DEFAULT_PATH;

/// The longest timeout or wait accepted (a typo like `1e12` is an error,
/// not a never-ending command).
pub(crate) const MAX_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// What to run, decided from a request by [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The executable (absolute, resolved on the command's `PATH`).
    pub(crate) program: PathBuf,
    /// `argv[0]`.
    pub(crate) argv0: String,
    /// `argv[1..]`.
    pub(crate) args: Vec<String>,
    /// The command line, for listings and logs.
    pub(crate) display: String,
    /// The request's command, for the audit line.
    pub(crate) command: String,
    /// The request's arguments, for the audit line.
    pub(crate) arguments: Vec<String>,
    /// Whether it runs through `/bin/sh -c`.
    pub(crate) shell: bool,
    /// The complete environment.
    pub(crate) env: BTreeMap<String, String>,
    /// When to send SIGTERM.
    pub(crate) timeout: Option<Duration>,
    /// What was ignored, for the response and the log.
    pub(crate) warnings: Vec<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// Seconds as a duration: a finite, non-negative number up to
/// [`MAX_SECONDS`]; zero means none, and any positive value is a timeout
/// (below a nanosecond it rounds up to one, not down to "none").
pub(crate) fn seconds(what: &str, value: f64) -> Result<Option<Duration>, ApiError> {
    if !value.is_finite() || !(0.0..=MAX_SECONDS).contains(&value) {
        return Err(bad(format!(
            "{what} must be a number of seconds from 0 to {MAX_SECONDS}, got {value}"
        )));
    }
    if value == 0.0 {
        return Ok(None);
    }
    Ok(Some(
        Duration::from_secs_f64(value).max(Duration::from_nanos(1)),
    ))
}

fn no_nul(what: &str, s: &str) -> Result<(), ApiError> {
    if s.contains('\0') {
        return Err(bad(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

/// Finds `name` the way `execvp` would with the command's own `PATH`, so the
/// lookup uses the environment the command gets, not the executor's.
fn resolve(name: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, ApiError> {
    if name.contains('/') {
        let p = cwd.join(name);
        return if crate::task::launch::is_executable(&p) {
            Ok(p)
        } else {
            Err(bad(format!(
                "cannot execute {name:?}: not an executable file"
            )))
        };
    }
    crate::task::launch::find_on_path(name, path_var, cwd).ok_or_else(|| {
        bad(format!(
            "command not found: {name:?} (not on the command's PATH)"
        ))
    })
}

/// Validates a request into a plan (pure but for the `PATH` lookup). `base`
/// is the environment every command starts from.
pub(crate) fn plan(
    req: ExecuteRequest,
    base: &BTreeMap<String, String>,
    cwd: &Path,
) -> Result<Plan, ApiError> {
    let mut warnings: Vec<String> = req
        .unknown
        .keys()
        .map(|k| format!("unknown field {k:?} ignored"))
        .collect();
    let command = match (req.command, req.value) {
        (Some(c), Some(v)) if c != v => {
            return Err(bad("both \"command\" and \"value\" are given and differ"))
        }
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => return Err(bad("missing \"command\" (or \"value\")")),
    };
    if command.trim().is_empty() {
        return Err(bad("the command is empty"));
    }
    no_nul("the command", &command)?;
    let shell = req.shell.unwrap_or(true);
    let arguments = req.arguments.unwrap_or_default();
    for a in &arguments {
        no_nul("an argument", a)?;
    }
    let mut env = base.clone();
    for v in req.environment.map(|e| e.variables).unwrap_or_default() {
        if v.name.is_empty() || v.name.contains('=') {
            return Err(bad(format!(
                "invalid environment variable name {:?}",
                v.name
            )));
        }
        no_nul("an environment variable", &v.name)?;
        match v.kind.as_deref() {
            None | Some("VALUE") => {}
            Some(other) => {
                warnings.push(format!(
                    "environment variable {:?} of type {other} ignored (only VALUE is supported)",
                    v.name
                ));
                continue;
            }
        }
        let value = v.value.unwrap_or_default();
        no_nul("an environment variable", &value)?;
        env.insert(v.name, value);
    }
    let timeout = match req.timeout {
        Some(t) => seconds("\"timeout\"", t)?,
        None => match env.get("EXECUTE_TIMEOUT_SEC") {
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => match v
                .parse::<u64>()
            {
                #[allow(clippy::cast_precision_loss)]
                Ok(n) => seconds("EXECUTE_TIMEOUT_SEC", n as f64)?,
                Err(_) => return Err(bad(format!("EXECUTE_TIMEOUT_SEC {v:?} is out of range"))),
            },
            Some(v) => {
                return Err(bad(format!(
                    "EXECUTE_TIMEOUT_SEC must be an integer number of seconds, got {v:?}"
                )))
            }
            None => None,
        },
    };
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    let (program, argv0, args, display) = if shell {
        if !arguments.is_empty() {
            warnings.push(
                "\"arguments\" are ignored when \"shell\" is true (the default); set \"shell\": false to pass them verbatim".to_owned(),
            );
        }
        (
            PathBuf::from("/bin/sh"),
            "sh".to_owned(),
            vec!["-c".to_owned(), command.clone()],
            command.clone(),
        )
    } else {
        let program = resolve(
            &command,
            env.get("PATH").map_or(DEFAULT_PATH, String::as_str),
            cwd,
        )?;
        let display = std::iter::once(command.as_str())
            .chain(arguments.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        (program, command.clone(), arguments.clone(), display)
    };
    Ok(Plan {
        program,
        argv0,
        args,
        display,
        command,
        arguments,
        shell,
        env,
        timeout,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::types::{Environment, Variable};

    fn base() -> BTreeMap<String, String> {
        [("PATH".to_owned(), "/usr/bin:/bin".to_owned())]
            .into_iter()
            .collect()
    }

    fn req(json: &str) -> ExecuteRequest {
        serde_json::from_str(json).expect("valid request json")
    }

    #[test]
    fn shell_is_the_default_and_ignores_arguments_with_a_warning() {
        let p = plan(
            req(r#"{"command": "echo hi", "arguments": ["x"]}"#),
            &base(),
            Path::new("/"),
        )
        .expect("plan");
        assert_eq!(p.program, PathBuf::from("/bin/sh"));
        assert_eq!(p.args, vec!["-c".to_owned(), "echo hi".to_owned()]);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("ignored"));
    }

    #[test]
    fn no_shell_passes_arguments_verbatim_after_the_program() {
        let p = plan(
            req(r#"{"command": "echo", "arguments": ["$PATH"], "shell": false}"#),
            &base(),
            Path::new("/"),
        )
        .expect("plan");
        assert!(p.program.ends_with("echo"));
        assert_eq!(
            (p.argv0.as_str(), p.args.clone()),
            ("echo", vec!["$PATH".to_owned()])
        );
        assert!(p.warnings.is_empty());
        assert_eq!(p.display, "echo $PATH");
    }

    #[test]
    fn command_info_spelling_environment_and_timeouts() {
        let p = plan(
            req(r#"{"value": "env", "environment": {"variables": [{"name": "A", "value": "1"}, {"name": "EXECUTE_TIMEOUT_SEC", "value": "7"}]}, "user": "x"}"#),
            &base(),
            Path::new("/"),
        )
        .expect("plan");
        assert_eq!(p.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(p.timeout, Some(Duration::from_secs(7)));
        assert_eq!(
            p.warnings,
            vec!["unknown field \"user\" ignored".to_owned()]
        );
        let p = plan(
            req(r#"{"command": "true", "timeout": 1.5}"#),
            &base(),
            Path::new("/"),
        )
        .expect("plan");
        assert_eq!(p.timeout, Some(Duration::from_millis(1500)));
        let p = plan(
            req(r#"{"command": "true", "timeout": 0}"#),
            &base(),
            Path::new("/"),
        )
        .expect("plan");
        assert_eq!(p.timeout, None);
    }

    #[test]
    fn any_positive_timeout_is_a_timeout() {
        for tiny in [1e-10, 5e-324, f64::MIN_POSITIVE, 1e-9] {
            assert_eq!(
                seconds("t", tiny).ok(),
                Some(Some(Duration::from_nanos(1))),
                "{tiny}"
            );
        }
        assert_eq!(seconds("t", 0.0).ok(), Some(None));
        assert_eq!(seconds("t", -0.0).ok(), Some(None));
        assert!(seconds("t", -1e-10).is_err());
        assert!(seconds("t", f64::NAN).is_err());
        assert!(seconds("t", MAX_SECONDS * 2.0).is_err());
    }

    #[test]
    fn bad_requests_are_400() {
        for body in [
            r#"{"command": ""}"#,
            r#"{"command": "   "}"#,
            r"{}",
            r#"{"command": "a", "value": "b"}"#,
            r#"{"command": "true", "timeout": -1}"#,
            r#"{"command": "true", "environment": {"variables": [{"name": "EXECUTE_TIMEOUT_SEC", "value": "ten"}]}}"#,
            r#"{"command": "true", "environment": {"variables": [{"name": "EXECUTE_TIMEOUT_SEC", "value": "1.5"}]}}"#,
            r#"{"command": "no-such-program-here", "shell": false}"#,
            r#"{"command": "true", "environment": {"variables": [{"name": "A=B", "value": "1"}]}}"#,
        ] {
            let r = plan(req(body), &base(), Path::new("/"));
            assert!(matches!(r, Err(ApiError::BadRequest(_))), "{body}: {r:?}");
        }
        let secret = ExecuteRequest {
            command: Some("true".into()),
            environment: Some(Environment {
                variables: vec![Variable {
                    name: "S".into(),
                    value: None,
                    kind: Some("SECRET".into()),
                }],
            }),
            ..ExecuteRequest::default()
        };
        let p = plan(secret, &base(), Path::new("/")).expect("plan");
        assert!(!p.env.contains_key("S"));
        assert_eq!(p.warnings.len(), 1);
    }
}
