//! The executor binary: reads the configuration, installs logging, runs the
//! executor and maps its outcome to the exit code.

use std::process::ExitCode;

use mesos_hook_executor::{
    config::{self, Config, LogFormat},
    Outcome, RELEASE,
};

fn main() -> ExitCode {
    // A remote command's keeper: the same binary under another argv[0].
    if let Some(code) = mesos_hook_executor::remote::shim::run_if_keeper() {
        return code;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--help" || flag == "-h" => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        [flag] if flag == "--version" || flag == "-V" => {
            println!("mesos-hook-executor {RELEASE}");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let cfg = match Config::from_env() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("mesos-hook-executor: {e}");
            eprintln!("mesos-hook-executor: see `mesos-hook-executor --help` for every variable");
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
            eprintln!("mesos-hook-executor: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    let span = tracing::info_span!("executor", framework_id = %cfg.framework_id, executor_id = %cfg.executor_id);
    let outcome = runtime.block_on(tracing::Instrument::instrument(
        mesos_hook_executor::run(cfg),
        span,
    ));
    match &outcome {
        Outcome::Completed => tracing::info!("exiting"),
        Outcome::Internal(why) => tracing::error!(cause = %why, "exiting after an internal error"),
        other => tracing::warn!(outcome = ?other, "exiting"),
    }
    ExitCode::from(outcome.exit_code())
}

/// Installs the log subscriber. The filter is `tracing_subscriber`'s
/// `Targets` (levels per target), not `EnvFilter`: span-field matching is not
/// worth the regex engine it brings into the binary.
fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::{filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt};
    let filter: Targets = level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}
