//! The `exec` hook: runs the executables in `$HOOK_EXECUTOR_HOOKS_DIR/<event>.d/`
//! in lexical order.
//!
//! Contract with a script:
//! - stdin: the JSON document of [`super::HookContext::document`] (event, ids,
//!   sandbox, the TaskInfo in Mesos JSON field names);
//! - environment: the executor's environment without our settings and secrets,
//!   plus `HOOK_EVENT`, `MESOS_TASK_ID`, `MESOS_SANDBOX`, `MESOS_FRAMEWORK_ID`,
//!   `MESOS_EXECUTOR_ID`, and the variables earlier before-start hooks added;
//! - working directory: the sandbox; its own process group, SIGKILLed as a
//!   whole when the hook's time is up;
//! - exit status 0 = success; otherwise the hook fails with the tail of stderr;
//! - for `before-start`, each non-empty stdout line must be `KEY=VALUE` (lines
//!   starting with `#` are comments) and becomes a task environment variable.
//!
//! Hidden files (`.name`) are ignored; a non-executable file is skipped with a
//! warning (as `run-parts` does), so a script can be disabled with `chmod -x`.
//!
//! Only what the operator installed runs ([`super::strict`]): an untrusted
//! file or directory, or a symlink leading out of the hooks directory, fails
//! the hook with an error naming it, before any script of the event runs.
//! Scripts run as the executor's user, or as the task's user with
//! `HOOK_EXECUTOR_HOOKS_EXEC_USER=task` (then files owned by that user are
//! trusted too). A before-start script's stdout beyond
//! `HOOK_EXECUTOR_HOOK_MAX_OUTPUT` fails the hook. A script that exits while
//! a process it left behind still holds its stdout or stderr gets
//! [`DRAIN_WINDOW`] for the pipes to close, then its group is killed and the
//! hook fails saying so (rather than hanging until the hook timeout).

use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{strict, Hook, HookContext, HookError, HookEvent, HookFuture};
use crate::{
    config::ExecHookUser,
    task::{
        guard::Leftovers,
        process::{resolve_user, AuxCommand, AuxiliaryStdio, UserSwitch},
        termination::ExitOutcome,
    },
};

/// Largest stderr kept from one script (only its end is quoted).
const MAX_STDERR: usize = 64 * 1024;
/// How much of stderr's end is quoted in a failure reason.
const STDERR_TAIL: usize = 512;
/// How long a script's pipes may stay open after it exited (a background
/// process it started still holding them) before its group is killed.
pub(crate) const DRAIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs hook scripts from a directory tree.
#[derive(Debug, Clone)]
pub(crate) struct ExecHook {
    dir: PathBuf,
    user: ExecHookUser,
    max_output: usize,
}

/// One script to run: its name in the event folder, and the checked path
/// that runs (a symlink resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    name: String,
    path: PathBuf,
}

impl ExecHook {
    /// Scripts live in `dir/<event>.d/`; they run as `user`; a before-start
    /// script may print at most `max_output` bytes.
    #[must_use]
    pub(crate) fn new(dir: PathBuf, user: ExecHookUser, max_output: usize) -> Self {
        Self {
            dir,
            user,
            max_output,
        }
    }

    /// The scripts for `event`, in lexical order of their names, each checked
    /// against the strict modes (`trusted` owners).
    fn scripts(&self, event: HookEvent, trusted: &[u32]) -> Result<Vec<Script>, HookError> {
        let root = strict::check_hooks_dir(&self.dir, trusted)?;
        let dir = root.join(format!("{event}.d"));
        match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(cause) => return Err(HookError::ScriptDir { dir, cause }),
            Ok(_) => {}
        }
        let dir = strict::check_inside(&dir, &root, trusted)?;
        let entries = std::fs::read_dir(&dir).map_err(|cause| HookError::ScriptDir {
            dir: dir.clone(),
            cause,
        })?;
        let mut scripts = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || path.is_dir() {
                continue;
            }
            let path = strict::check_script(&path, &root, trusted)?;
            scripts.push(Script { name, path });
        }
        scripts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(scripts
            .into_iter()
            .filter(|s| {
                let executable = std::fs::metadata(&s.path).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
                if !executable {
                    tracing::warn!(script = %s.name, path = %s.path.display(), "skipping a hook script that is not executable (chmod +x to enable it)");
                }
                executable
            })
            .collect())
    }

    /// Who runs the scripts: the task's user (resolved; `None` when that is
    /// us anyway) with `HOOK_EXECUTOR_HOOKS_EXEC_USER=task`, else us.
    fn user(&self, ctx: &HookContext) -> Result<Option<UserSwitch>, HookError> {
        match self.user {
            ExecHookUser::Executor => Ok(None),
            ExecHookUser::Task => {
                resolve_user(ctx.task_user.as_deref()).map_err(|cause| HookError::HookUser {
                    user: ctx.task_user.clone().unwrap_or_default(),
                    cause,
                })
            }
        }
    }

    async fn run_event(&self, ctx: &HookContext) -> Result<Vec<(String, String)>, HookError> {
        let user = self.user(ctx)?;
        let trusted = strict::trusted_uids(user.as_ref().map(UserSwitch::uid));
        let mut added: Vec<(String, String)> = Vec::new();
        for script in self.scripts(ctx.event, &trusted)? {
            let stdout = run_script(&script, ctx, &added, user.clone(), self.max_output).await?;
            if ctx.event == HookEvent::BeforeStart {
                added.extend(parse_env_lines(&stdout, &script.name)?);
            }
        }
        Ok(added)
    }
}

impl Hook for ExecHook {
    fn name(&self) -> &'static str {
        "exec"
    }
    fn before_start<'a>(
        &'a self,
        ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<Vec<(String, String)>, HookError>> {
        Box::pin(self.run_event(ctx))
    }
    fn after_start<'a>(&'a self, ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async move { self.run_event(ctx).await.map(|_| ()) })
    }
    fn after_healthy<'a>(&'a self, ctx: &'a HookContext) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async move { self.run_event(ctx).await.map(|_| ()) })
    }
    fn before_terminate<'a>(
        &'a self,
        ctx: &'a HookContext,
    ) -> HookFuture<'a, Result<(), HookError>> {
        Box::pin(async move { self.run_event(ctx).await.map(|_| ()) })
    }
}

async fn run_script(
    script: &Script,
    ctx: &HookContext,
    added: &[(String, String)],
    user: Option<UserSwitch>,
    max_output: usize,
) -> Result<String, HookError> {
    let name = script.name.clone();
    let mut cmd = AuxCommand::new(&script.path);
    cmd.envs(ctx.base_env.iter())
        .envs(ctx.added_env.iter().map(|(k, v)| (k, v)))
        .envs(added.iter().map(|(k, v)| (k, v)))
        .env("HOOK_EVENT", ctx.event.as_str())
        .env("MESOS_TASK_ID", ctx.task_id())
        .env("MESOS_SANDBOX", &ctx.sandbox)
        .env("MESOS_FRAMEWORK_ID", &ctx.framework_id)
        .env("MESOS_EXECUTOR_ID", &ctx.executor_id)
        .current_dir(&ctx.sandbox);
    // Kills the script's whole group when dropped: on timeout the chain drops
    // this future, and nothing of the script may survive (nor the executor).
    let mut child = ctx
        .reaper
        .spawn_guarded(cmd, AuxiliaryStdio::piped(), user, Leftovers::Leave)
        .map_err(|cause| HookError::ScriptStart {
            script: name.clone(),
            cause,
        })?;
    let mut stdin = child.stdin.take();
    let document = ctx.document().to_string();
    // A script may ignore its stdin and exit before reading it: a broken pipe
    // here is not a failure.
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(document.as_bytes()).await;
        }
        drop(stdin);
    };
    // Only a before-start script's stdout matters; the others' is drained.
    let out_cap = if ctx.event == HookEvent::BeforeStart {
        max_output
    } else {
        0
    };
    let read_out = read_capped(child.stdout.take(), out_cap, false);
    let read_err = read_capped(child.stderr.take(), MAX_STDERR, true);
    let reads = async { tokio::join!(feed, read_out, read_err) };
    tokio::pin!(reads);
    let lost = |cause| HookError::ScriptLost {
        script: name.clone(),
        cause,
    };
    let (outcome, ((), (out, out_cut), (err, _))) = tokio::select! {
        done = &mut reads => (child.wait().await.map_err(lost)?, done),
        exited = child.wait() => {
            let outcome = exited.map_err(lost)?;
            match tokio::time::timeout(DRAIN_WINDOW, &mut reads).await {
                Ok(done) => (outcome, done),
                // Dropping `child` below kills the group, the holder included.
                Err(_) => return Err(HookError::OutputHeld {
                    script: name,
                    outcome,
                    window: DRAIN_WINDOW,
                }),
            }
        }
    };
    drop(child);
    if out_cut && ctx.event == HookEvent::BeforeStart {
        return Err(HookError::OutputTooLarge {
            script: name,
            limit: max_output,
        });
    }
    match outcome {
        ExitOutcome::Exited(0) => {
            if err.is_empty() {
                tracing::debug!(script = %name, event = %ctx.event, "hook script succeeded");
            } else {
                tracing::info!(script = %name, event = %ctx.event, stderr = %stderr_tail(&err), "hook script succeeded");
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        outcome => Err(HookError::ScriptFailed {
            script: name,
            outcome,
            stderr: stderr_tail(&err),
        }),
    }
}

fn stderr_tail(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let text = text.trim();
    if text.is_empty() {
        return "(no stderr output)".to_owned();
    }
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].replace('\n', " | ")
}

/// Reads a pipe to its end, keeping at most `cap` bytes: the first ones, or
/// with `keep_tail` the last ones; also says whether anything was cut. The
/// rest is still drained, so the writer never blocks on a full pipe.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    keep_tail: bool,
) -> (Vec<u8>, bool) {
    let Some(mut reader) = reader else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) if keep_tail => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > cap {
                    kept.drain(..kept.len() - cap);
                    cut = true;
                }
            }
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (kept, cut)
}

/// Parses a before-start script's stdout: `KEY=VALUE` lines, blank lines and
/// `#` comments. Anything else is an error naming the script and the line.
pub(crate) fn parse_env_lines(
    stdout: &str,
    script: &str,
) -> Result<Vec<(String, String)>, HookError> {
    let mut out = Vec::new();
    for (number, line) in stdout.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let valid = line.split_once('=').filter(|(key, _)| valid_name(key));
        match valid {
            Some((key, value)) => out.push((key.to_owned(), value.to_owned())),
            None => {
                return Err(HookError::ScriptOutput {
                    script: script.to_owned(),
                    line: number + 1,
                    text: line.chars().take(80).collect(),
                })
            }
        }
    }
    Ok(out)
}

fn valid_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_are_parsed_strictly() {
        let p = "10-env";
        assert_eq!(
            parse_env_lines("A=1\n\n# comment\nB_2=x=y\nEMPTY=\n", p).expect("valid"),
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B_2".to_owned(), "x=y".to_owned()),
                ("EMPTY".to_owned(), String::new())
            ]
        );
        let err = parse_env_lines("A=1\nnot a variable\n", p)
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("10-env printed an invalid line 2"), "{err}");
        assert!(parse_env_lines("1A=x", p).is_err());
        assert!(parse_env_lines("A B=x", p).is_err());
        assert!(parse_env_lines("=x", p).is_err());
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        assert_eq!(stderr_tail(b""), "(no stderr output)");
        assert_eq!(stderr_tail(b"line1\nline2\n"), "line1 | line2");
        let long = "x".repeat(2000) + "END";
        assert!(stderr_tail(long.as_bytes()).ends_with("END"));
        assert!(stderr_tail(long.as_bytes()).len() <= STDERR_TAIL);
    }
}
