//! The executor binary: reads the configuration, installs logging, runs the
//! executor and maps its outcome to the exit code.

use std::process::ExitCode;

use mesos_hook_executor::{
    config::{self, Config},
    logging::{self, print_stderr, print_stdout},
    Outcome, RELEASE,
};

/// `--help`: what it is, how it is started, where the reference is.
const USAGE: &str = "\
mesos-hook-executor: a custom Apache Mesos executor with hook chains, health
checks and a remote-execution API on the task sandbox's Unix socket.

Usage: started by the Mesos agent, once per task, e.g. as a Marathon app's
\"executor\": Marathon runs `chmod ug+rx '<path>' && exec '<path>' <app cmd>`.
It is configured by environment variables only (the agent's MESOS_* ones and
HOOK_EXECUTOR_* from the app's env); other arguments are ignored, so it can
stand in for mesos-executor, whose flags the agent passes.

Options:
  --help       this text
  --help-env   every environment variable with its type, default and meaning
  --version    version and git revision

Reference: docs/configuration.md in the source repository and the release
archive. The remote API's client is `executorctl`.
";

/// What the command line asks for: one of the informational flags, or a run.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Help,
    HelpEnv,
    Version,
    Run,
}

/// A flag counts anywhere on a command line typed by a person. When the agent
/// started us (`started_by_agent`: `MESOS_EXECUTOR_ID` is set) the arguments
/// are the agent's flags and Marathon's app command, where a `-h` or
/// `--version` belongs to the task: then only a flag given alone counts.
fn mode(args: &[String], started_by_agent: bool) -> Mode {
    if started_by_agent && args.len() > 1 {
        return Mode::Run;
    }
    let has = |names: &[&str]| args.iter().any(|a| names.contains(&a.as_str()));
    if has(&["--help", "-h"]) {
        Mode::Help
    } else if has(&["--help-env"]) {
        Mode::HelpEnv
    } else if has(&["--version", "-V"]) {
        Mode::Version
    } else {
        Mode::Run
    }
}

fn main() -> ExitCode {
    // A panic is a bug; release builds abort on one (`panic = "abort"`).
    // Debug builds (the integration tests run them) abort too, instead of
    // tokio quietly ending the one task that panicked, so a test sees every
    // panic the release binary would die of.
    std::panic::set_hook(Box::new(|info| {
        print_stderr(&format!("mesos-hook-executor: internal error: {info}"));
        std::process::abort();
    }));
    logging::ignore_sigpipe();
    // Before any secret is read: from here on same-uid processes (the task,
    // hooks, remote commands) cannot read our environ or memory.
    if let Err(e) = config::protect::make_undumpable() {
        print_stderr(&format!(
            "mesos-hook-executor: cannot make the process non-dumpable: {e}"
        ));
        return ExitCode::from(4);
    }
    // `std::env::args` panics on an argument that is not UTF-8, and the
    // arguments are not ours to judge (the agent passes mesos-executor's
    // flags, Marathon the app's command): read them lossily.
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match mode(&args, std::env::var_os("MESOS_EXECUTOR_ID").is_some()) {
        Mode::Help => {
            print_stdout(USAGE);
            return ExitCode::SUCCESS;
        }
        Mode::HelpEnv => {
            print_stdout(&config::help_text());
            return ExitCode::SUCCESS;
        }
        Mode::Version => {
            print_stdout(&format!("mesos-hook-executor {RELEASE}\n"));
            return ExitCode::SUCCESS;
        }
        Mode::Run => {}
    }
    // Nothing we start gets what our own parent left open.
    config::protect::close_inherited_on_exec();
    let read = Config::from_env();
    // Whatever the outcome, the secrets now live in the configuration (or
    // nowhere): wipe them from the process's own environment block.
    config::protect::scrub_secrets();
    let cfg = match read {
        Ok(cfg) => cfg,
        Err(e) => {
            print_stderr(&format!("mesos-hook-executor: {e}"));
            print_stderr(
                "mesos-hook-executor: see `mesos-hook-executor --help-env` for every variable",
            );
            return ExitCode::from(2);
        }
    };
    // Forked before logging or the runtime start any thread (docs in
    // task::spawner); without it, guards are forked by the executor itself.
    let spawner = mesos_hook_executor::task::spawner::start();
    logging::init(cfg.settings.log_format, &cfg.settings.log_level);
    if let Err(e) = spawner {
        tracing::warn!(cause = %e, "cannot start the spawner; forking guards in the executor");
    }
    // Entered on this thread for the whole run: the current-thread runtime
    // polls every task here, so every line (spawned tasks included: audit,
    // subscription retries, hooks, the exit line) carries the ids.
    let span = tracing::info_span!("executor", framework_id = %cfg.framework_id, executor_id = %cfg.executor_id);
    let _in_span = span.enter();
    if !args.is_empty() {
        // The agent passes mesos-executor's flags (--launcher_dir=…), Marathon
        // passes the app command after `exec '<path>'`: neither drives us.
        tracing::info!(
            count = args.len(),
            "ignoring command-line arguments (configuration comes from the environment)"
        );
    }
    for name in cfg.unknown_variables() {
        if name.starts_with(mesos_hook_executor::config::ALLEGRO_PREFIX) {
            tracing::warn!(variable = %name, "allegro setting with no counterpart here (docs/allegro-migration.md); ignored");
        } else {
            tracing::warn!(variable = %name, "unknown HOOK_EXECUTOR_ variable (typo?); ignored");
        }
    }
    for alias in cfg.alias_uses() {
        if alias.shadowed {
            tracing::warn!(variable = alias.variable, alias = alias.alias, "{alias}");
        } else {
            tracing::info!(variable = alias.variable, alias = alias.alias, "{alias}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_stderr(&format!(
                "mesos-hook-executor: cannot start the async runtime: {e}"
            ));
            return ExitCode::from(4);
        }
    };
    let outcome = runtime.block_on(mesos_hook_executor::run(cfg));
    let dropped = logging::dropped_writes();
    match &outcome {
        Outcome::Completed => tracing::info!(dropped_log_writes = dropped, "exiting"),
        Outcome::Internal(why) => {
            tracing::error!(cause = %why, dropped_log_writes = dropped, "exiting after an internal error")
        }
        other => tracing::warn!(outcome = ?other, dropped_log_writes = dropped, "exiting"),
    }
    ExitCode::from(outcome.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn informational_flags_are_found_anywhere_on_a_typed_command_line() {
        let by_hand = |list: &[&str]| mode(&args(list), false);
        assert_eq!(by_hand(&[]), Mode::Run);
        assert_eq!(by_hand(&["--launcher_dir=/usr/libexec/mesos"]), Mode::Run);
        assert_eq!(by_hand(&["exec", "./server", "--help"]), Mode::Help);
        assert_eq!(by_hand(&["-h"]), Mode::Help);
        assert_eq!(by_hand(&["x", "--help-env"]), Mode::HelpEnv);
        assert_eq!(by_hand(&["--version", "--help"]), Mode::Help);
        assert_eq!(by_hand(&["a", "-V"]), Mode::Version);
    }

    #[test]
    fn under_the_agent_a_flag_in_the_app_command_belongs_to_the_task() {
        let by_agent = |list: &[&str]| mode(&args(list), true);
        assert_eq!(by_agent(&["./server", "-h", "0.0.0.0"]), Mode::Run);
        assert_eq!(by_agent(&["./tool", "--version"]), Mode::Run);
        assert_eq!(by_agent(&["--help"]), Mode::Help);
    }
}
