//! `deskmail-configd`: see the crate docs (`lib.rs`) for what it does.

use std::process::ExitCode;

use clap::Parser;

/// The gRPC config service for admins and daemons.
#[derive(Debug, Parser)]
#[command(name = "deskmail-configd", version)]
struct Args {
    #[command(flatten)]
    daemon: deskmail_runtime::DaemonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    deskmail_runtime::daemon_main("deskmail-configd", args.daemon, deskmail_configd::run)
}
