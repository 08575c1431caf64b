//! The sent-jobs log on both stores (SQLite file, PostgreSQL database of its own): one
//! migration set, a record per job id, the first record kept, reopening migrates nothing twice.

use deskmail_config::{DatabaseConfig, Secret};
use deskmail_sender::sentlog::{SentLog, SentRecord};

async fn exercise(config: DatabaseConfig) {
    let log = SentLog::open(&config).await.unwrap();
    assert_eq!(log.find("j1").await.unwrap(), None);
    let first = SentRecord {
        job_id: "j1".into(),
        message_id: "<a@desk.test>".into(),
        mailbox_id: "m1".into(),
        sent_at_micros: 1_764_000_000_000_000,
        reply: "250 2.0.0 Ok".into(),
        dry_run: false,
    };
    log.record(&first).await.unwrap();
    // A second record of the same job (two senders racing) keeps the first.
    log.record(&SentRecord { message_id: "<b@desk.test>".into(), ..first.clone() }).await.unwrap();
    assert_eq!(log.find("j1").await.unwrap(), Some(first.clone()));
    log.record(&SentRecord { job_id: "j2".into(), dry_run: true, ..first.clone() }).await.unwrap();
    assert_eq!(log.count().await.unwrap(), 2);
    drop(log);
    let again = SentLog::open(&config).await.unwrap();
    assert_eq!(again.count().await.unwrap(), 2, "reopening keeps the records and migrates once");
}

#[tokio::test]
async fn sqlite_file_in_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("var/nested/sender.db").display());
    exercise(DatabaseConfig { url: Secret::new(url), max_connections: 4 }).await;
}

#[tokio::test]
async fn postgresql() {
    let db = deskmail_testkit::pg::Database::create("sender").await.unwrap();
    exercise(DatabaseConfig { url: Secret::new(db.url().to_owned()), max_connections: 4 }).await;
}

/// The SQLite settings hold on every pooled connection, not only the one that happened to run
/// a PRAGMA: synchronous=NORMAL (1), WAL, a busy timeout.
#[tokio::test]
async fn sqlite_pragmas_on_every_pooled_connection() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("sender.db").display());
    let log = SentLog::open(&DatabaseConfig { url: Secret::new(url), max_connections: 4 }).await.unwrap();
    let pool = log.connection().get_sqlite_connection_pool();
    // Hold four connections at once, so each answer comes from a different one.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.acquire().await.unwrap());
    }
    for conn in &mut held {
        let sync: (i64,) =
            sea_orm::sqlx::query_as("PRAGMA synchronous").fetch_one(&mut **conn).await.unwrap();
        assert_eq!(sync.0, 1, "synchronous=NORMAL on every connection");
        let mode: (String,) =
            sea_orm::sqlx::query_as("PRAGMA journal_mode").fetch_one(&mut **conn).await.unwrap();
        assert_eq!(mode.0, "wal");
        let busy: (i64,) =
            sea_orm::sqlx::query_as("PRAGMA busy_timeout").fetch_one(&mut **conn).await.unwrap();
        assert_eq!(busy.0, 5000);
    }
}
