use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use deskmail_config::{ConfigError, Validate};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::log::{LogConfig, LogFormat, init_tracing};
use crate::shutdown::shutdown_on_signals;

/// Exit code for a refused config (`EX_CONFIG` from sysexits.h), so that systemd's
/// `RestartPreventExitStatus=78` can stop a restart loop on a bad file.
pub const EXIT_CONFIG: u8 = 78;

/// The arguments every daemon takes; a daemon's `Args` flattens them.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The TOML config file. Without it, built-in defaults and DESKMAIL_* environment
    /// variables must be enough.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Load and validate the config, print `ok` or every problem, and exit
    /// (0 when valid, 78 when not).
    #[arg(long)]
    pub check_config: bool,
    /// Log format, overriding `log.format`: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// What `daemon_main` needs to know about a daemon's config.
pub trait DaemonConfig: DeserializeOwned + Validate {
    fn log_mut(&mut self) -> &mut LogConfig;
}

/// The whole `main` of a daemon: load the config (or just check it), start logging, install
/// the signal handlers, run until a signal, and turn the outcome into an exit code.
pub fn daemon_main<C, F, Fut, E>(name: &str, args: DaemonArgs, run: F) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let loaded = deskmail_config::load::<C>(args.config.as_deref());
    if args.check_config {
        return report_check(name, loaded);
    }
    let mut config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: invalid config:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(format) = args.log_format {
        config.log_mut().format = format;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        init_tracing(config.log_mut());
        let shutdown = match shutdown_on_signals() {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "Cannot install signal handlers.");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(daemon = name, version = env!("CARGO_PKG_VERSION"), "Starting.");
        match run(config, shutdown).await {
            Ok(()) => {
                tracing::info!(daemon = name, "Stopped.");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(daemon = name, error = %e, "Stopped on an error.");
                ExitCode::FAILURE
            }
        }
    })
}

fn report_check<C>(name: &str, loaded: Result<C, ConfigError>) -> ExitCode {
    match loaded {
        Ok(_) => {
            // Write errors (a closed stdout) change nothing about the verdict.
            let _ = writeln!(std::io::stdout().lock(), "ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: invalid config:\n{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
