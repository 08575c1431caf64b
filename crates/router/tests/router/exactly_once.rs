//! Exactly one article per source id: redeliveries, a crash between commit and publish, two
//! routers on one queue and one database, a router started before configd answers.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use deskmail_router::dispatch;
use deskmail_router::rules::Rules;
use deskmail_router::store::{Item, Outcome};

use crate::harness::{Db, Env, mail};
use crate::on_both_stores;

on_both_stores!(
    five_deliveries_one_article,
    refetched_under_a_new_source_id_is_one_article,
    outbox_of_a_crashed_run_is_published_on_redelivery,
    two_routers_one_queue_one_database,
    no_consuming_before_configd_answers,
);

async fn five_deliveries_one_article(db: Db) {
    let mut env = Env::new(db).await;
    let inbox = env.ids.inbox.clone();
    let raw = mail("c@cust.test", "support@desk.test", "again and again", "five@cust.test", "", "x");
    // Three land in one batch, two after the first commit.
    for _ in 0..3 {
        env.publish("test:five", &inbox, &raw).await;
    }
    env.start_router().await;
    env.wait_processed(1).await;
    for _ in 0..2 {
        env.publish("test:five", &inbox, &raw).await;
    }
    env.publish("test:after", &inbox, &mail("d@cust.test", "sales@desk.test", "x", "after@x", "", "x")).await;
    env.wait_processed(2).await;
    env.stop_router().await;
    assert_eq!(env.count_articles().await, 2);
    assert_eq!(env.tickets().await.len(), 2);
    let events = env.events().await;
    assert_eq!(events.iter().filter(|e| e["source_id"] == "test:five").count(), 1, "{events:?}");
    assert_eq!(env.jobs().await.len(), 1, "one auto-reply");
}

/// A server that lost its UID assignments hands the same bytes out again under new UIDs:
/// the content key makes them duplicates, in one batch and across batches. The same bytes in
/// another mailbox are another mail.
async fn refetched_under_a_new_source_id_is_one_article(db: Db) {
    let mut env = Env::new(db).await;
    let inbox = env.ids.inbox.clone();
    let other = env.ids.billing_box.clone();
    let raw = mail("c@cust.test", "support@desk.test", "fetched twice", "twice@cust.test", "", "x");
    env.publish("imap:test:1:41", &inbox, &raw).await;
    env.publish("imap:test:2:1", &inbox, &raw).await;
    env.start_router().await;
    env.wait_processed(1).await;
    env.publish("imap:test:3:1", &inbox, &raw).await;
    env.publish("imap:billing:1:1", &other, &raw).await;
    env.publish(
        "imap:test:3:2",
        &inbox,
        &mail("c@cust.test", "support@desk.test", "fetched twice", "twice@cust.test", "", "y"),
    )
    .await;
    env.wait_processed(3).await;
    env.stop_router().await;
    assert_eq!(env.count_articles().await, 3, "one per mailbox, and the changed body");
    assert_eq!(env.article("imap:test:1:41").await.subject, "fetched twice");
    assert_eq!(env.article("imap:billing:1:1").await.subject, "fetched twice");
    let events = env.events().await;
    assert_eq!(events.len(), 3, "{events:?}");
}

/// A router that committed a batch and died before publishing: the redelivered mail is a
/// duplicate, and its event and auto-reply job still go out.
async fn outbox_of_a_crashed_run_is_published_on_redelivery(db: Db) {
    let mut env = Env::new(db).await;
    let inbox = env.ids.inbox.clone();
    let raw =
        mail("c@cust.test", "support@desk.test", "committed, never published", "crash@cust.test", "", "x");
    let snapshot =
        env.configd.daemon().await.watch().get_snapshot(deskmail_proto::v1::GetSnapshotRequest {}).await;
    let rules = Rules::from_snapshot(&snapshot.unwrap().into_inner());
    let plan = dispatch::plan(&raw, Some(&inbox), &rules, &Default::default());
    let store = env.store().await;
    let item = Item {
        source_id: "test:crash".into(),
        mailbox_id: Some(inbox.clone()),
        raw: Bytes::from(raw.clone()),
        plan,
    };
    let done = store.commit(&[item], &rules, deskmail_router::now_micros()).await.unwrap();
    assert!(matches!(done.outcomes[0], Outcome::Created { .. }));
    assert_eq!(done.outbox.len(), 2, "event and auto-reply job in the outbox");

    env.publish("test:crash", &inbox, &raw).await;
    env.publish("test:next", &inbox, &mail("d@cust.test", "sales@desk.test", "x", "next@x", "", "x")).await;
    env.start_router().await;
    env.wait_processed(2).await;
    env.stop_router().await;
    assert_eq!(env.count_articles().await, 2);
    let events = env.events().await;
    assert_eq!(events.iter().filter(|e| e["source_id"] == "test:crash").count(), 1);
    let jobs = env.jobs().await;
    assert_eq!(jobs.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["autoreply:test:crash"]);
    assert!(
        store.outbox_of(&["test:crash".to_owned()]).await.unwrap().is_empty(),
        "outbox cleared after the confirms"
    );
}

async fn two_routers_one_queue_one_database(db: Db) {
    let mut env = Env::new(db).await;
    let inbox = env.ids.inbox.clone();
    let total = 400;
    for i in 0..total {
        // Every fourth mail answers the one before it by Message-ID.
        let headers =
            if i % 4 == 3 { format!("In-Reply-To: <two{}@cust.test>\r\n", i - 1) } else { String::new() };
        let raw = mail(
            &format!("c{i}@cust.test"),
            "sales@desk.test",
            &format!("m{i}"),
            &format!("two{i}@cust.test"),
            &headers,
            "x",
        );
        env.publish(&format!("test:two:{i}"), &inbox, &raw).await;
        if i % 50 == 0 {
            // Redeliveries of an earlier mail, racing between the two routers.
            env.publish(
                &format!("test:two:{}", i / 2),
                &inbox,
                &mail("r@x", "sales@desk.test", "dup", "dup@x", "", "x"),
            )
            .await;
        }
    }
    let second = env.config();
    let stop = deskmail_runtime::CancellationToken::new();
    let token = stop.clone();
    let other = tokio::spawn(async move { deskmail_router::run(second, token).await.unwrap() });
    env.start_router().await;
    env.wait_processed(total).await;
    env.stop_router().await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), other).await.unwrap().unwrap();
    assert_eq!(env.count_articles().await, total);
    let tickets = env.tickets().await;
    let numbers: HashSet<&str> = tickets.iter().map(|t| t.number.as_str()).collect();
    assert_eq!(numbers.len(), tickets.len(), "no ticket number twice");
    assert!(tickets.len() as u64 >= total * 3 / 4, "{} tickets", tickets.len());
}

async fn no_consuming_before_configd_answers(db: Db) {
    let mut env = Env::new(db).await;
    env.configd.pause().await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    env.publish("test:early", &inbox, &mail("c@cust.test", "sales@desk.test", "early", "early@x", "", "x"))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // give a wrong router time to consume
    assert_eq!(env.count_articles().await, 0, "no config, no consuming");
    env.configd.resume().await;
    env.wait_processed(1).await;
    assert_eq!(env.ticket_of("test:early").await.queue_id.as_deref(), Some(env.ids.sales.as_str()));
    env.stop_router().await;
}

/// PostgreSQL refusing connections while mail arrives: the router holds its batch, takes no
/// more, retries, and goes on when the database is back; nothing is lost, nothing doubled,
/// nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_holds_the_batch_and_resumes() {
    use sqlx::Connection;
    let mut env = Env::new(Db::Postgres).await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    env.publish("test:o0", &inbox, &mail("c@cust.test", "sales@desk.test", "before", "o0@x", "", "x")).await;
    env.wait_processed(1).await;

    let name = env.db.pg.as_ref().unwrap().name().to_owned();
    let mut admin = sqlx::postgres::PgConnection::connect(deskmail_testkit::pg::ADMIN_URL).await.unwrap();
    let sql = |s: String| sqlx::raw_sql(sqlx::AssertSqlSafe(s));
    sql(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")).execute(&mut admin).await.unwrap();
    sql(format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"))
        .execute(&mut admin)
        .await
        .unwrap();
    for i in 1..=5 {
        let raw = mail("c@cust.test", "sales@desk.test", &format!("during {i}"), &format!("o{i}@x"), "", "x");
        env.publish(&format!("test:o{i}"), &inbox, &raw).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage lasts a while
    assert!(env.router_running(), "the router keeps running while the database is down");
    sql(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).execute(&mut admin).await.unwrap();
    let _ = admin.close().await;

    env.wait_processed(6).await;
    env.stop_router().await;
    assert_eq!(env.count_articles().await, 6);
    assert!(env.drain(&env.topology.inbound_dead_queue()).await.is_empty(), "nothing dead-lettered");
    let events = env.events().await;
    assert_eq!(events.len(), 6, "{events:?}");
}

/// PostgreSQL keeps the mail's text lz4-compressed (migration m4) and attachment bytes
/// uncompressed out of line; a compressible article's raw mail is stored compressed, and
/// reads back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_mail_text_with_lz4() {
    let mut env = Env::new(Db::Postgres).await;
    let inbox = env.ids.inbox.clone();
    let body = "A line of a long customer mail that repeats, as quoted replies do.\r\n".repeat(200);
    let raw = mail("c@cust.test", "support@desk.test", "long", "long@cust.test", "", &body);
    env.publish("test:long", &inbox, &raw).await;
    env.start_router().await;
    env.wait_processed(1).await;
    env.stop_router().await;
    let url = env.db.pg.as_ref().unwrap().url().to_owned();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, a.attstorage::text, a.attcompression::text \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         WHERE (c.relname, a.attname) IN (('articles','raw'), ('articles','body_text'), \
         ('articles','body_html'), ('processed_sources','raw'), ('attachments','content')) ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let got: Vec<String> = columns.iter().map(|(t, c, s, z)| format!("{t}.{c}:{s}{z}")).collect();
    assert_eq!(
        got,
        [
            "articles.body_html:xl",
            "articles.body_text:xl",
            "articles.raw:xl",
            "attachments.content:e",
            "processed_sources.raw:xl"
        ]
    );
    let (method, stored, original): (Option<String>, i32, Vec<u8>) = sqlx::query_as(
        "SELECT pg_column_compression(raw), pg_column_size(raw), raw FROM articles WHERE source_id = 'test:long'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(method.as_deref(), Some("lz4"));
    assert!((stored as usize) < raw.len() / 4, "{stored} bytes stored for {}", raw.len());
    assert_eq!(original, raw);
}
