//! deskmail-configd: the gRPC config service. Admins manage mailboxes, queues, addresses,
//! contracts, companies, filters and settings through it; the daemons watch their config,
//! report mailbox status and take fetch leases from it. Owns the config database.
//!
//! Status: the foundation only. It serves `grpc.health.v1` and server reflection on the
//! configured listener (TLS when a certificate is set) and stops cleanly on SIGTERM; the
//! resource services land with the configd issue.

mod config;
pub mod fieldmask;
pub mod presets;
pub mod resource;
pub mod secrets;
pub mod store;

use std::net::SocketAddr;

pub use config::Config;
use deskmail_runtime::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// Why configd stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConfigdError {
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listen: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves until `shutdown` is cancelled, then lets calls in flight finish.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ConfigdError> {
    let addr = SocketAddr::new(config.listen.bind, config.listen.port.get());
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
    tracing::info!(%addr, tls = config.listen.cert_file.is_some(), "Listening.");
    server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_shutdown(addr, shutdown.cancelled_owned())
        .await?;
    Ok(())
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ConfigdError> {
    std::fs::read(path).map_err(|source| ConfigdError::ReadFile { path: path.display().to_string(), source })
}
