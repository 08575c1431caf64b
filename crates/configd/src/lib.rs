//! deskmail-configd: the gRPC config service. Admins manage mailboxes, queues, addresses,
//! contracts, companies, filters and settings through it; the daemons watch their config,
//! report mailbox status and take fetch leases from it. Owns the config database (SQLite by
//! default, PostgreSQL by URL) and the at-rest encryption of mailbox secrets.
//!
//! Depends on `deskmail-proto` for the wire types, `deskmail-mailconn` for connection tests,
//! and the config/runtime crates; no daemon depends on it.

pub mod auth;
mod config;
pub mod fieldmask;
pub mod health;
pub mod presets;
pub mod resource;
pub mod secrets;
pub mod service;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{AuthConfig, Config, ListenConfig, SecretsConfig};
use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::service::RejectUndecodable;
use crate::state::{AppState, Snapshots};

/// Why configd stopped (or did not start).
#[derive(Debug, thiserror::Error)]
pub enum ConfigdError {
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("listen: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("listen.port: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Telemetry(#[from] deskmail_telemetry::TelemetryError),
}

/// How long calls in flight (and Watch streams) get after SIGTERM before configd closes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Opens the store and the secrets key, then serves until `shutdown` is cancelled.
///
/// Serves `/metrics`, `/healthz` and `/readyz` on `metrics.port` (readiness check
/// `database`), tells systemd READY once the gRPC listener is bound and STOPPING on
/// shutdown, and pings its watchdog when one is set.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ConfigdError> {
    let telemetry =
        deskmail_telemetry::Telemetry::start(&config.metrics, "deskmail-configd", &shutdown).await?;
    deskmail_telemetry::configd::init();
    let database = telemetry.readiness().register("database");
    let result = run_with(config, shutdown, database).await;
    deskmail_runtime::notify::stopping();
    telemetry.stop().await;
    result
}

async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    database: deskmail_telemetry::ReadyFlag,
) -> Result<(), ConfigdError> {
    let secrets = secrets::SecretBox::from_config(&config.secrets)?;
    let store = store::Store::open(&config.database).await?;
    if secrets.has_previous() {
        let (resealed, unreadable) = store.reseal_secrets(&secrets).await?;
        tracing::info!(
            resealed,
            unreadable,
            "Key rotation: re-sealed the secrets that only the previous key opened; once every configd runs \
             with the new key, remove secrets.previous_key_file / previous_key."
        );
    }
    let (snapshots, _) = tokio::sync::watch::channel(Arc::new(Snapshots::default()));
    let state = AppState { store, secrets, snapshots };
    let first =
        service::snapshot::build(&state).await.map_err(|s| ConfigdError::Snapshot(s.message().to_owned()))?;
    state.snapshots.send_replace(Arc::new(first));
    let follower = tokio::spawn(service::snapshot::follow_store(state.clone(), shutdown.clone()));
    let checker = health::spawn_store_check(state.clone(), database, shutdown.clone());
    let watchdog = deskmail_runtime::notify::spawn_watchdog(shutdown.clone());
    let served = serve(&config, state, shutdown.clone()).await;
    follower.abort();
    checker.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    served
}

async fn serve(config: &Config, state: AppState, shutdown: CancellationToken) -> Result<(), ConfigdError> {
    let addr = SocketAddr::new(config.listen.bind, config.listen.port.get());
    let tokens = auth::Tokens::new(&config.auth);
    let resources = service::Resources { state, shutdown: shutdown.clone() };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(deskmail_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(deskmail_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut server = Server::builder();
    if let (Some(cert), Some(key)) = (&config.listen.cert_file, &config.listen.key_file) {
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        server = server.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let admin = tokens.admin_only();
    let any = tokens.any_role();
    let r = resources;
    let router = server
        .add_service(RejectUndecodable::new(health_service))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::mailbox_service_server::MailboxServiceServer::new(r.clone())),
            admin.clone(),
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::queue_service_server::QueueServiceServer::new(r.clone())),
            admin.clone(),
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::system_address_service_server::SystemAddressServiceServer::new(
                r.clone(),
            )),
            admin.clone(),
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::company_service_server::CompanyServiceServer::new(r.clone())),
            admin.clone(),
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::contract_service_server::ContractServiceServer::new(r.clone())),
            admin.clone(),
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::filter_service_server::FilterServiceServer::new(r.clone())),
            admin.clone(),
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::settings_service_server::SettingsServiceServer::new(r.clone())),
            admin,
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::status_service_server::StatusServiceServer::new(r.clone())),
            any.clone(),
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::config_watch_server::ConfigWatchServer::new(r.clone())),
            any.clone(),
        ))
        .add_service(InterceptedService::new(
            RejectUndecodable::new(pb::lease_service_server::LeaseServiceServer::new(r)),
            any,
        ));
    // Bind before saying "Listening.", so a client that waits for that line can connect.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ConfigdError::Bind { addr: addr.to_string(), source })?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(%addr, tls = config.listen.cert_file.is_some(), "Listening.");
    deskmail_runtime::notify::ready();
    let stop = shutdown.clone();
    let serving = router.serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => result?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "Calls still open after the grace period; closing them.");
        }
    }
    Ok(())
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ConfigdError> {
    std::fs::read(path).map_err(|source| ConfigdError::ReadFile { path: path.display().to_string(), source })
}
