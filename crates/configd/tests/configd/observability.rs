// Issue 7: configd's /healthz, /readyz (check `database`) and /metrics, on the process an
// operator runs, with a PostgreSQL store that goes away and comes back.

use std::path::Path;
use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use deskmail_testkit::process::DaemonProcess;
use deskmail_testkit::{http_get, metric_value};
use deskmail_testkit_configd::{ADMIN, Admin, DAEMON, free_port};
use sqlx::Connection;

async fn wait_readyz(port: u16, want: u16, contains: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = http_get(port, "/readyz").await.unwrap();
        if status == want && body.contains(contains) {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz still {status} after {within:?}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_follow_the_store() {
    let db = deskmail_testkit::pg::Database::create("configd_obs").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("configd.key");
    std::fs::write(&key, "00".repeat(32)).unwrap();
    let (port, metrics) = (free_port(), free_port());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/configd.example.toml");
    let mut configd = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-configd")),
        &["--config", example.to_str().unwrap()],
        &[
            ("DESKMAIL_LISTEN__PORT", port.to_string().as_str()),
            ("DESKMAIL_METRICS__PORT", metrics.to_string().as_str()),
            ("DESKMAIL_SECRETS__KEY_FILE", key.to_str().unwrap()),
            ("DESKMAIL_DATABASE__URL", db.url()),
            ("DESKMAIL_DATABASE__MAX_CONNECTIONS", "2"),
            ("DESKMAIL_AUTH__ADMIN_TOKEN", ADMIN),
            ("DESKMAIL_AUTH__DAEMON_TOKEN", DAEMON),
        ],
    )
    .unwrap();
    configd.wait_for_log("Listening.", Duration::from_secs(30)).unwrap();

    let (status, body) = http_get(metrics, "/healthz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("deskmail-configd"), "{body}");
    wait_readyz(metrics, 200, "database: ready", Duration::from_secs(10)).await;

    // Some admin writes and status reports: the gauges follow them.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let admin = Admin { channel: channel.clone(), token: ADMIN };
    let daemon = Admin { channel, token: DAEMON };
    let queue = admin.create_queue(pb::Queue { name: "Support".into(), ..Default::default() }).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mb = admin
            .create_mailbox(deskmail_testkit_configd::imap_mailbox(&format!("box{i}"), &queue.id, 993, "pw"))
            .await;
        ids.push(mb.id);
    }
    for (id, state) in
        ids.iter().zip([pb::MailboxState::Active, pb::MailboxState::Active, pb::MailboxState::Error])
    {
        daemon
            .status()
            .report_status(pb::ReportStatusRequest {
                mailbox_id: id.clone(),
                direction: pb::Direction::Inbound as i32,
                state: state as i32,
                reason: if state == pb::MailboxState::Error {
                    pb::StatusReason::AuthFailed as i32
                } else {
                    0
                },
                message: String::new(),
                messages: 1,
                reporter: "test".into(),
            })
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, text) = http_get(metrics, "/metrics").await.unwrap();
        let active =
            metric_value(&text, "deskmail_configd_mailboxes", r#"direction="inbound",state="active""#);
        let error = metric_value(&text, "deskmail_configd_mailboxes", r#"direction="inbound",state="error""#);
        let rev = metric_value(&text, "deskmail_configd_config_revision", "");
        if active == Some(2.0) && error == Some(1.0) && rev.is_some_and(|r| r >= 4.0) {
            assert!(text.contains("deskmail_build_info"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges not there after 15 s (active {active:?}, error {error:?}, revision {rev:?}):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The database goes away (no new connections, the open ones cut): unready, naming it.
    let mut pg = sqlx::PgConnection::connect(deskmail_testkit::pg::ADMIN_URL).await.unwrap();
    let name = db.name().to_owned();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")))
        .execute(&mut pg)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut pg)
        .await
        .unwrap();
    let body = wait_readyz(metrics, 503, "database: not ready", Duration::from_secs(30)).await;
    assert!(body.starts_with("not ready"), "{body}");
    // Liveness is not readiness: the process is fine.
    assert_eq!(http_get(metrics, "/healthz").await.unwrap().0, 200);

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")))
        .execute(&mut pg)
        .await
        .unwrap();
    wait_readyz(metrics, 200, "database: ready", Duration::from_secs(30)).await;
    pg.close().await.unwrap();

    let status = configd.terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status}; log:\n{}", configd.log().join("\n"));
}
