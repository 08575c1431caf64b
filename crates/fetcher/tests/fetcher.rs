//! deskmail-fetcher run as its own process against a real RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic: that is the failure

use std::path::Path;

#[tokio::test]
async fn starts_declares_the_topology_and_stops_on_sigterm() {
    deskmail_testkit::process::check_broker_daemon_lifecycle(
        Path::new(env!("CARGO_BIN_EXE_deskmail-fetcher")),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/fetcher.example.toml"),
    )
    .await
    .unwrap();
}
