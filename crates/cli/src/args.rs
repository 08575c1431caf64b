//! The command line: global flags, the command tree, and dispatch.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::Api;
use crate::company::{self, CompanyCommand, ContractCommand};
use crate::config::CliConfig;
use crate::crud::Ctx;
use crate::dead::{self, DeadCommand};
use crate::fail::Fail;
use crate::filter::{self, FilterCommand};
use crate::mailbox::{self, MailboxCommand};
use crate::output::{Format, Out};
use crate::queue::{self, AddressCommand, QueueCommand};
use crate::settings::{self, SettingsCommand};
use crate::status::{self, StatusArgs};

const AFTER_HELP: &str = "\
Config: --config FILE (TOML: endpoint, token, ca_file, timeout, [amqp]), overridden by
DESKMAILCTL_ENDPOINT, DESKMAILCTL_TOKEN, DESKMAILCTL_CA_FILE, DESKMAILCTL_TIMEOUT and
DESKMAILCTL_AMQP__URL, DESKMAILCTL_AMQP__PREFIX. Every command but `health` and `dead` needs the
admin token; `dead` talks to RabbitMQ ([amqp] url, default amqp://guest:guest@127.0.0.1:5672/%2f).

Output: tables by default; --output json prints one proto3 JSON document (lists as an array; with
--page-size/--page-token the List response with next_page_token), proto field names, every field.
Secrets are write-only: never printed (has_password says whether one is stored). Passwords are read
from stdin (--in-password-stdin) or a variable (--in-password-env VAR), never from a flag.

Exit codes:
  0   done (for checks: `mailbox test`, `send-test`, `health`, `status --fail-on-error`: passed)
  1   the call failed: configd said no (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
      UNAUTHENTICATED, PERMISSION_DENIED, ...) or is unreachable; or the check failed;
      `dead`: RabbitMQ unreachable, a queue or message id not found, a replay not done
  2   usage: bad flags or values, unreadable --from-json, unset --*-password-env variable
  3   invalid argument: configd rejected the values (each field violation on its own line),
      or a name given for a reference (--queue, --company, ...) matches nothing
  78  the CLI config is invalid or has no token";

/// Manage deskmail through configd (mailboxes, queues, addresses, contracts, companies,
/// filters, settings and status), and its dead letters in RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "deskmailctl", version, after_help = AFTER_HELP)]
pub struct Args {
    /// CLI config file (endpoint, token, ca_file, timeout, [amqp]); DESKMAILCTL_* variables
    /// override it.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Validate the CLI config, print `ok` or every problem, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
    /// No colours (also when NO_COLOR is set, or stdout is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mail accounts: inbound (IMAP/POP3) and outbound (SMTP) parts, tests, presets.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Ticket queues and their auto-replies.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// System addresses (and aliases) that route mail to queues.
    #[command(subcommand)]
    Address(AddressCommand),
    /// Customer companies, their domains and outbound mailbox.
    #[command(subcommand)]
    Company(CompanyCommand),
    /// Contracts of companies, with their own outbound mailbox.
    #[command(subcommand)]
    Contract(ContractCommand),
    /// Postmaster filters: header match -> queue, priority, ignore, stop.
    #[command(subcommand)]
    Filter(FilterCommand),
    /// System settings: ticket hook and numbers, default outbound mailbox, auto-reply limit.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Every mailbox's status (state coloured on a terminal: green active, yellow waiting,
    /// red error). Exit 0 when it could be read; with --fail-on-error, 1 when any mailbox is in
    /// error.
    Status(StatusArgs),
    /// The whole config as the daemons get it (admin view: no secrets), with its revision.
    Snapshot,
    /// Ask configd whether it is serving (grpc.health.v1; no token needed); exit 1 when not.
    Health,
    /// Dead letters in RabbitMQ: list, show, replay.
    ///
    /// The queues `<prefix>.inbound.dead` and `<prefix>.outbound.dead`. Talks to RabbitMQ
    /// (`[amqp]` in the config, DESKMAILCTL_AMQP__URL), not to configd; needs no token.
    #[command(subcommand)]
    Dead(DeadCommand),
}

pub async fn execute(config: &CliConfig, out: Out, command: Command) -> Result<u8, Fail> {
    let slow = matches!(&command, Command::Mailbox(m) if m.is_slow());
    let at_least = if slow { Duration::from_secs(90) } else { Duration::ZERO };
    if let Command::Health = command {
        return status::health(config, out).await;
    }
    if let Command::Dead(c) = command {
        return dead::run(config, out, c).await;
    }
    let ctx = Ctx { api: Api::connect(config, at_least).await?, out };
    match command {
        Command::Mailbox(c) => mailbox::run(&ctx, c).await,
        Command::Queue(c) => queue::run_queue(&ctx, c).await,
        Command::Address(c) => queue::run_address(&ctx, c).await,
        Command::Company(c) => company::run_company(&ctx, c).await,
        Command::Contract(c) => company::run_contract(&ctx, c).await,
        Command::Filter(c) => filter::run_filter(&ctx, c).await,
        Command::Settings(c) => settings::run(&ctx, c).await,
        Command::Status(a) => status::status(&ctx, a).await,
        Command::Snapshot => status::snapshot(&ctx).await,
        Command::Health => status::health(config, out).await,
        Command::Dead(c) => dead::run(config, out, c).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_tree_is_consistent() {
        <super::Args as clap::CommandFactory>::command().debug_assert();
    }
}
