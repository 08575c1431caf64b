//! Start, topology, SIGTERM, with the example config (configd not even running).

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
