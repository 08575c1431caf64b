// Issue 7, operations: rotating configd's encryption key and its tokens without a gap, on
// the process an operator runs.

use std::path::Path;
use std::time::Duration;

use deskmail_proto::v1 as pb;
use deskmail_testkit::process::DaemonProcess;
use deskmail_testkit_configd::{Admin, free_port, imap_mailbox};

const ADMIN_OLD: &str = "admin-token-old-0123456789";
const ADMIN_NEW: &str = "admin-token-new-0123456789";
const DAEMON_OLD: &str = "daemon-token-old-0123456789";
const DAEMON_NEW: &str = "daemon-token-new-0123456789";

fn start(dir: &Path, port: u16, envs: &[(&str, &str)]) -> DaemonProcess {
    let db = format!("sqlite://{}/configd.db?mode=rwc", dir.display());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/configd.example.toml");
    let port = port.to_string();
    let mut all = vec![("DESKMAIL_LISTEN__PORT", port.as_str()), ("DESKMAIL_DATABASE__URL", db.as_str())];
    all.extend_from_slice(envs);
    let mut p = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-configd")),
        &["--config", example.to_str().unwrap()],
        &all,
    )
    .unwrap();
    p.wait_for_log("Listening.", Duration::from_secs(30)).unwrap();
    p
}

async fn client(port: u16, token: &'static str) -> Admin {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Admin { channel, token }
}

/// The inbound password of mailbox `name` in the daemons' snapshot ("" when it does not decrypt).
async fn daemon_password(port: u16, token: &'static str, name: &str) -> String {
    let snap =
        client(port, token).await.watch().get_snapshot(pb::GetSnapshotRequest {}).await.unwrap().into_inner();
    let mb = snap.mailboxes.into_iter().find(|m| m.name == name).unwrap();
    mb.inbound.unwrap().password
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_tokens_rotate_without_losing_a_secret_or_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let (key_a, key_b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    std::fs::write(&key_a, "aa".repeat(32)).unwrap();
    std::fs::write(&key_b, "bb".repeat(32)).unwrap();
    let (a, b) = (key_a.to_str().unwrap(), key_b.to_str().unwrap());
    let port = free_port();

    // Before: key A, the old tokens.
    let before = [
        ("DESKMAIL_SECRETS__KEY_FILE", a),
        ("DESKMAIL_AUTH__ADMIN_TOKEN", ADMIN_OLD),
        ("DESKMAIL_AUTH__DAEMON_TOKEN", DAEMON_OLD),
    ];
    let mut configd = start(dir.path(), port, &before);
    let admin = client(port, ADMIN_OLD).await;
    let queue = admin.create_queue(pb::Queue { name: "Support".into(), ..Default::default() }).await;
    admin.create_mailbox(imap_mailbox("rotating", &queue.id, 993, "s3cret-pass")).await;
    assert_eq!(daemon_password(port, DAEMON_OLD, "rotating").await, "s3cret-pass");
    assert!(configd.terminate(Duration::from_secs(15)).unwrap().success());

    // During: key B with A as the previous key; new tokens, old ones still accepted.
    let during = [
        ("DESKMAIL_SECRETS__KEY_FILE", b),
        ("DESKMAIL_SECRETS__PREVIOUS_KEY_FILE", a),
        ("DESKMAIL_AUTH__ADMIN_TOKEN", ADMIN_NEW),
        ("DESKMAIL_AUTH__DAEMON_TOKEN", DAEMON_NEW),
        ("DESKMAIL_AUTH__PREVIOUS_ADMIN_TOKEN", ADMIN_OLD),
        ("DESKMAIL_AUTH__PREVIOUS_DAEMON_TOKEN", DAEMON_OLD),
    ];
    let mut configd = start(dir.path(), port, &during);
    let line = configd.wait_for_log("Key rotation", Duration::from_secs(10)).unwrap();
    assert!(line.contains("resealed=1") && line.contains("unreadable=0"), "{line}");
    for token in [DAEMON_OLD, DAEMON_NEW] {
        assert_eq!(daemon_password(port, token, "rotating").await, "s3cret-pass");
    }
    for token in [ADMIN_OLD, ADMIN_NEW] {
        client(port, token).await.queues().list_queues(pb::ListRequest::default()).await.unwrap();
    }
    // An old daemon token is still only a daemon token.
    let denied =
        client(port, DAEMON_OLD).await.queues().list_queues(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(configd.terminate(Duration::from_secs(15)).unwrap().success());
    let log = configd.log().join("\n");
    for secret in
        ["s3cret-pass", ADMIN_OLD, ADMIN_NEW, DAEMON_OLD, DAEMON_NEW, &"aa".repeat(32), &"bb".repeat(32)]
    {
        assert!(!log.contains(secret), "a secret was logged:\n{log}");
    }

    // After: key B only, new tokens only. The secret was re-sealed: it still opens.
    let after = [
        ("DESKMAIL_SECRETS__KEY_FILE", b),
        ("DESKMAIL_AUTH__ADMIN_TOKEN", ADMIN_NEW),
        ("DESKMAIL_AUTH__DAEMON_TOKEN", DAEMON_NEW),
    ];
    let mut configd = start(dir.path(), port, &after);
    assert_eq!(daemon_password(port, DAEMON_NEW, "rotating").await, "s3cret-pass");
    let old =
        client(port, ADMIN_OLD).await.queues().list_queues(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(old.code(), tonic::Code::Unauthenticated);
    assert!(!configd.log().join("\n").contains("does not decrypt"), "{}", configd.log().join("\n"));
    assert!(configd.terminate(Duration::from_secs(15)).unwrap().success());
}

#[test]
fn a_rotation_config_that_cannot_work_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    std::fs::write(&key, "aa".repeat(32)).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/configd.example.toml");
    let mut p = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-configd")),
        &["--config", example.to_str().unwrap(), "--check-config"],
        &[
            ("DESKMAIL_SECRETS__KEY_FILE", key.to_str().unwrap()),
            ("DESKMAIL_SECRETS__PREVIOUS_KEY_FILE", "/nonexistent/old.key"),
            ("DESKMAIL_AUTH__ADMIN_TOKEN", ADMIN_NEW),
            ("DESKMAIL_AUTH__DAEMON_TOKEN", DAEMON_NEW),
            ("DESKMAIL_AUTH__PREVIOUS_DAEMON_TOKEN", ADMIN_NEW),
        ],
    )
    .unwrap();
    assert_eq!(p.wait(Duration::from_secs(15)).unwrap().code(), Some(78));
    let log = p.log().join("\n");
    assert!(log.contains("secrets.previous_key_file: /nonexistent/old.key is not a readable file"), "{log}");
    assert!(
        log.contains("auth.previous_daemon_token: an admin token and a daemon token are the same"),
        "{log}"
    );
    assert!(!log.contains(ADMIN_NEW), "a token was printed:\n{log}");
}
