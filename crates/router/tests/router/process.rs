//! deskmail-router run as its own process: start, SIGTERM, and `kill -9` while mail flows.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use deskmail_mq::OutgoingMessage;
use deskmail_testkit::process::DaemonProcess;
use sea_orm::{EntityTrait, PaginatorTrait};

use crate::harness::{Db, Env, mail};
use crate::on_both_stores;

on_both_stores!(kill_9_while_mail_flows_then_restart_gives_exactly_one_article_each);

/// SIGTERM mid-flow: the batch in flight is committed and acked, the rest goes back to the
/// queue: every mail is exactly one article or back in the queue, never both, never neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_flow_leaves_each_mail_an_article_or_queued() {
    let mut env = Env::new(Db::Sqlite).await;
    // Small batches, so the stop comes mid-flow and not after the last batch.
    env.extra_toml = "batch_size = 50".into();
    let inbox = env.ids.inbox.clone();
    let total: u64 = 1000;
    let messages: Vec<OutgoingMessage> = (0..total)
        .map(|i| {
            let raw = mail(
                "c@cust.test",
                "support@desk.test",
                &format!("mail {i}"),
                &format!("t{i}@cust.test"),
                "",
                "body",
            );
            OutgoingMessage::new(env.topology.inbound_exchange(), "mail.raw", raw)
                .message_id(format!("test:t:{i}"))
                .header("x-mailbox-id", inbox.as_str())
        })
        .collect();
    assert!(env.publisher.publish_all(messages).await.iter().all(Result::is_ok));
    let mut router = spawn(&env);
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while deskmail_router::store::entity::processed::Entity::find().count(store.connection()).await.unwrap()
        < 100
    {
        assert!(Instant::now() < deadline, "{}", router.log().join("\n"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = router.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{}", router.log().join("\n"));
    let articles = env.count_articles().await;
    let ch = env.conn.create_channel().await.unwrap();
    let queued = ch
        .queue_declare(
            env.topology.inbound_queue().as_str().into(),
            deskmail_mq::lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            deskmail_mq::lapin::types::FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert!(articles < total, "stopped mid-flow");
    assert_eq!(articles + u64::from(queued), total, "{articles} articles + {queued} queued");
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_deskmail-router"))
}

fn spawn(env: &Env) -> DaemonProcess {
    let config = env.config_file();
    DaemonProcess::spawn(
        binary(),
        &["--config", config.to_str().unwrap()],
        &[("DESKMAIL_LOG__LEVEL", "info")],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_waits_for_config_and_stops_on_sigterm() {
    let env = Env::new(Db::Sqlite).await;
    let mut router = spawn(&env);
    router.wait_for_log("Ready.", Duration::from_secs(30)).unwrap();
    router.wait_for_log("Consuming.", Duration::from_secs(30)).unwrap();
    let status = router.terminate(Duration::from_secs(15)).unwrap();
    let log = router.log().join("\n");
    assert!(status.success(), "{log}");
    assert!(log.contains("Stopped."), "{log}");
    assert!(!log.contains("guest:guest"), "{log}");
    assert!(!log.contains(deskmail_testkit_configd::DAEMON), "the configd token is never logged");
}

async fn kill_9_while_mail_flows_then_restart_gives_exactly_one_article_each(db: Db) {
    let mut env = Env::new(db).await;
    env.extra_toml = "batch_size = 100".into();
    let inbox = env.ids.inbox.clone();
    let total: u64 = 2000;
    let messages = (0..total).map(|i| {
        let headers =
            if i % 4 == 3 { format!("In-Reply-To: <k{}@cust.test>\r\n", i - 1) } else { String::new() };
        let raw = mail(
            &format!("c{}@cust.test", i % 97),
            "support@desk.test",
            &format!("mail {i}"),
            &format!("k{i}@cust.test"),
            &headers,
            "body",
        );
        OutgoingMessage::new(env.topology.inbound_exchange(), "mail.raw", raw)
            .message_id(format!("test:k:{i}"))
            .header("x-mailbox-id", inbox.as_str())
    });
    let published = env.publisher.publish_all(messages.collect::<Vec<_>>()).await;
    assert!(published.iter().all(Result::is_ok));

    let mut router = spawn(&env);
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = deskmail_router::store::entity::processed::Entity::find()
            .count(store.connection())
            .await
            .unwrap();
        if n >= total / 4 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} processed:\n{}", router.log().join("\n"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    router.kill().unwrap();
    let after_kill = env.count_articles().await;
    assert!(after_kill < total, "killed mid-flow ({after_kill} of {total} done)");

    let mut router = spawn(&env);
    env.wait_processed(total).await;
    let status = router.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{}", router.log().join("\n"));
    assert_eq!(env.count_articles().await, total);
    let tickets = env.tickets().await;
    let numbers: HashSet<&str> = tickets.iter().map(|t| t.number.as_str()).collect();
    assert_eq!(numbers.len(), tickets.len());
    // Every created ticket's event went out at least once.
    let events = env.events().await;
    let created: HashSet<String> = events
        .iter()
        .filter(|e| e["event"] == "ticket.created")
        .map(|e| e["ticket_number"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created.len(), tickets.len(), "a ticket.created event for every ticket");
}
