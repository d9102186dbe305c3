//! The executor binary: reads the configuration, installs logging, runs the
//! executor and maps its outcome to the exit code.

use std::process::ExitCode;

use mesos_hook_executor::{
    config::{self, Config, LogFormat},
    logging::{self, print_stderr, print_stdout},
    Outcome, RELEASE,
};

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
    match args.as_slice() {
        [flag] if flag == "--help" || flag == "-h" => {
            print_stdout(&config::help_text());
            return ExitCode::SUCCESS;
        }
        [flag] if flag == "--version" || flag == "-V" => {
            print_stdout(&format!("mesos-hook-executor {RELEASE}\n"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let read = Config::from_env();
    // Whatever the outcome, the secrets now live in the configuration (or
    // nowhere): wipe them from the process's own environment block.
    config::protect::scrub_secrets();
    let cfg = match read {
        Ok(cfg) => cfg,
        Err(e) => {
            print_stderr(&format!("mesos-hook-executor: {e}"));
            print_stderr(
                "mesos-hook-executor: see `mesos-hook-executor --help` for every variable",
            );
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.settings.log_format, &cfg.settings.log_level);
    if !args.is_empty() {
        // The agent passes mesos-executor's flags (--launcher_dir=…), Marathon
        // passes the app command after `exec '<path>'`: neither drives us.
        tracing::info!(
            count = args.len(),
            "ignoring command-line arguments (configuration comes from the environment)"
        );
    }
    for name in cfg.unknown_variables() {
        tracing::warn!(variable = %name, "unknown HOOK_EXECUTOR_ variable (typo?); ignored");
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
    let span = tracing::info_span!("executor", framework_id = %cfg.framework_id, executor_id = %cfg.executor_id);
    let outcome = runtime.block_on(tracing::Instrument::instrument(
        mesos_hook_executor::run(cfg),
        span,
    ));
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

/// Installs the log subscriber. The filter is `tracing_subscriber`'s
/// `Targets` (levels per target), not `EnvFilter`: span-field matching is not
/// worth the regex engine it brings into the binary. Both formats write
/// through [`logging::LossyStderr`], and the formatter's own error report
/// (an `eprintln!` that panics when stderr is what failed) is off.
fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::{filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt};
    let filter: Targets = level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .log_internal_errors(false)
                    .with_writer(logging::LossyStderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .log_internal_errors(false)
                    .with_writer(logging::LossyStderr),
            )
            .init(),
    }
}
