//! `deskmail-fetcher`: see the crate docs (`lib.rs`) for what it does.

use std::process::ExitCode;

use clap::Parser;

/// Polls inbound IMAP/POP3 mailboxes and publishes each mail to RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "deskmail-fetcher", version)]
struct Args {
    #[command(flatten)]
    daemon: deskmail_runtime::DaemonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    deskmail_runtime::daemon_main("deskmail-fetcher", args.daemon, deskmail_fetcher::run)
}
