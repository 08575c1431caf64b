//! `deskmail-router`: see the crate docs (`lib.rs`) for what it does.

use std::process::ExitCode;

use clap::Parser;

/// Turns raw inbound mail into tickets and follow-ups by the dispatch rules.
#[derive(Debug, Parser)]
#[command(name = "deskmail-router", version)]
struct Args {
    #[command(flatten)]
    daemon: deskmail_runtime::DaemonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    deskmail_runtime::daemon_main("deskmail-router", args.daemon, deskmail_router::run)
}
