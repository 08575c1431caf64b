//! `deskmail-sender`: see the crate docs (`lib.rs`) for what it does.

use std::process::ExitCode;

use clap::Parser;

/// Sends outbound mail jobs through the right SMTP box.
#[derive(Debug, Parser)]
#[command(name = "deskmail-sender", version)]
struct Args {
    #[command(flatten)]
    daemon: deskmail_runtime::DaemonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    deskmail_runtime::daemon_main("deskmail-sender", args.daemon, deskmail_sender::run)
}
