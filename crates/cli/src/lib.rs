//! deskmailctl: the admin CLI over configd's gRPC API (package `deskmail.v1`).
//!
//! ```text
//! deskmailctl mailbox  list|get|create|update|delete|presets|test|send-test
//! deskmailctl queue    list|get|create|update|delete
//! deskmailctl address  list|get|create|update|delete        (system addresses)
//! deskmailctl company  list|get|create|update|delete
//! deskmailctl contract list|get|create|update|delete
//! deskmailctl filter   list|get|create|update|delete
//! deskmailctl settings get|update
//! deskmailctl status [NAME] [--fail-on-error]
//! deskmailctl snapshot
//! deskmailctl health
//! deskmailctl dead     list|show|replay                      (RabbitMQ, not configd)
//! ```
//!
//! Output: tables by default; `--output json` prints one proto3 JSON document (lists as an
//! array) with the proto field names (`inbound.queue_id`, as in field masks and error paths),
//! every field included, enums by name. Write-only secrets are never printed; `has_password`
//! says whether one is stored.
//!
//! Exit codes, for scripts:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done; for `mailbox test`/`send-test` and `health`, the check passed |
//! | 1 | the call failed: configd said no (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, UNAUTHENTICATED, PERMISSION_DENIED, ...) or could not be reached; or a check failed (a connection test, a test mail, `health` not serving, `status --fail-on-error` with a mailbox in error); `dead`: RabbitMQ unreachable, a queue or message id not found, a replay not done |
//! | 2 | usage: bad flags or values (clap's own errors), an unreadable `--from-json`, a missing `--*-password-env` variable |
//! | 3 | invalid argument: configd rejected the values (INVALID_ARGUMENT, each field violation printed on its own line), or a name given for a reference (`--queue`, `--company`, ...) matches nothing |
//! | 78 | the CLI's own config is invalid or incomplete (no `token` / `DESKMAILCTL_TOKEN` for a call that needs it) |
//!
//! Depends on the config loader and the generated proto code; `dead` on deskmail-mq (lapin).

mod args;
mod client;
mod company;
mod config;
mod crud;
mod dead;
mod dead_browse;
mod dead_letter;
mod fail;
mod filter;
mod mailbox;
mod mailbox_fields;
mod output;
mod patch;
mod proto;
mod queue;
mod settings;
mod status;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use config::CliConfig;

/// Exit code when the server answered with an error or could not be reached, or a check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for usage errors (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when configd rejected the values (INVALID_ARGUMENT) or a referenced name is unknown.
pub const EXIT_INVALID: u8 = 3;
/// Exit code for an invalid CLI config (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

/// Parses the command line, runs the command and returns the exit code. All of `deskmailctl`.
pub fn main() -> ExitCode {
    let args = args::Args::parse();
    let loaded = deskmail_config::load_with_env_prefix::<CliConfig>(args.config.as_deref(), "DESKMAILCTL_");
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deskmailctl: invalid config:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        let _ = writeln!(std::io::stdout().lock(), "ok");
        return ExitCode::SUCCESS;
    }
    let Some(command) = args.command else {
        eprintln!("deskmailctl: no command given; see deskmailctl --help");
        return ExitCode::from(EXIT_USAGE);
    };
    let out = output::Out::new(args.output, args.no_color);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deskmailctl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(args::execute(&config, out, command)) {
        Ok(code) => ExitCode::from(code),
        Err(fail) => {
            eprint!("{}", fail.report());
            ExitCode::from(fail.exit_code())
        }
    }
}
