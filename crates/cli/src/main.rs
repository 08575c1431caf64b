//! `deskmailctl`: the admin CLI. See the crate docs for exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use deskmail_cli::{CliConfig, EXIT_CONFIG, EXIT_FAILED};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Manage deskmail through configd: mailboxes, queues, addresses, contracts, companies,
/// filters, settings and status.
#[derive(Debug, Parser)]
#[command(name = "deskmailctl", version)]
struct Args {
    /// CLI config file (endpoint, token, ca_file, timeout); DESKMAILCTL_* variables override it.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Validate the CLI config, print `ok` or every problem, and exit.
    #[arg(long)]
    check_config: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask configd whether it is serving (grpc.health.v1); exit 1 when not.
    Health,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deskmailctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(&config, args.output, command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deskmailctl: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn execute(config: &CliConfig, output: Output, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Health => {
            let channel = connect(config).await?;
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest { service: String::new() })
                .await
                .context("health check")?
                .into_inner();
            let serving = reply.status() == ServingStatus::Serving;
            let status = reply.status().as_str_name();
            let mut out = std::io::stdout().lock();
            match output {
                Output::Table => writeln!(out, "{}: {status}", config.endpoint)?,
                Output::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"endpoint": config.endpoint.as_str(), "status": status})
                )?,
            }
            Ok(if serving { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) })
        }
    }
}

async fn connect(config: &CliConfig) -> anyhow::Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let mut endpoint = Endpoint::from_shared(config.endpoint.to_string())
        .context("endpoint")?
        .timeout(config.timeout)
        .connect_timeout(config.timeout);
    if config.endpoint.scheme() == "https" {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("ca_file {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    }
    endpoint.connect().await.with_context(|| format!("cannot reach configd at {}", config.endpoint))
}
