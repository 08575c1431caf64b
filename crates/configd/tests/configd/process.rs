// configd run as its own process, the way an operator runs it.

use std::path::Path;
use std::time::Duration;

use deskmail_testkit::process::DaemonProcess;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// Multi-threaded: the client's connection task must keep running while this test blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("configd.key");
    std::fs::write(&key, "00".repeat(32)).unwrap();
    let port = free_port().to_string();
    let db = format!("sqlite://{}/configd.db?mode=rwc", dir.path().display());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/configd.example.toml");
    let mut configd = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-configd")),
        &["--config", example.to_str().unwrap()],
        &[
            ("DESKMAIL_LISTEN__PORT", port.as_str()),
            ("DESKMAIL_SECRETS__KEY_FILE", key.to_str().unwrap()),
            ("DESKMAIL_DATABASE__URL", db.as_str()),
        ],
    )
    .unwrap();
    configd.wait_for_log("Listening.", Duration::from_secs(30)).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let reply = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
    let status = configd.terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status}; log:\n{}", configd.log().join("\n"));
    let log = configd.log().join("\n");
    assert!(!log.contains("change-me-admin-token"), "a token was logged:\n{log}");
}

#[test]
fn refuses_to_start_without_an_encryption_key() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/configd.example.toml");
    let mut configd = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-configd")),
        &["--config", example.to_str().unwrap()],
        &[("DESKMAIL_SECRETS__KEY_FILE", "/nonexistent/deskmail.key")],
    )
    .unwrap();
    let status = configd.wait(Duration::from_secs(15)).unwrap();
    assert_eq!(status.code(), Some(78));
    let log = configd.log().join("\n");
    assert!(
        log.contains(
            "DESKMAIL_SECRETS__KEY_FILE: secrets.key_file: /nonexistent/deskmail.key is not a readable file"
        ),
        "{log}"
    );
}

/// With a certificate configured, configd serves TLS: a client that trusts the CA gets
/// through, a clear-text client does not. (The test kit's mail stack has a CA and a
/// localhost certificate; configd borrows them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_when_a_certificate_is_configured() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let stack = deskmail_testkit::mail::MailStack::builder().start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("configd.key");
    std::fs::write(&key, "00".repeat(32)).unwrap();
    let port = free_port().to_string();
    let db = format!("sqlite://{}/configd.db?mode=rwc", dir.path().display());
    let cert = stack.dir().join("tls/cert.pem");
    let tls_key = stack.dir().join("tls/key.pem");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/configd.example.toml");
    let mut configd = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-configd")),
        &["--config", example.to_str().unwrap()],
        &[
            ("DESKMAIL_LISTEN__PORT", port.as_str()),
            ("DESKMAIL_LISTEN__CERT_FILE", cert.to_str().unwrap()),
            ("DESKMAIL_LISTEN__KEY_FILE", tls_key.to_str().unwrap()),
            ("DESKMAIL_SECRETS__KEY_FILE", key.to_str().unwrap()),
            ("DESKMAIL_DATABASE__URL", db.as_str()),
        ],
    )
    .unwrap();
    let line = configd.wait_for_log("Listening.", Duration::from_secs(30)).unwrap();
    assert!(line.contains("tls=true"), "{line}");
    let tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(stack.ca_pem())).domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reply =
        HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await;
    if let Ok(channel) = plain {
        let err = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
        assert!(err.is_err(), "clear text must not be served");
    }
    assert!(configd.terminate(Duration::from_secs(15)).unwrap().success());
}
