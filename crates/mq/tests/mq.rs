//! deskmail-mq against the real local RabbitMQ, one vhost per test. Fails (never skips) when the
//! broker is unreachable: run `make services`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use deskmail_mq::lapin::Connection;
use deskmail_mq::lapin::options::{BasicGetOptions, QueueDeclareOptions};
use deskmail_mq::lapin::types::FieldTable;
use deskmail_mq::topology::{ERROR_HEADER, routing_keys};
use deskmail_mq::{
    AmqpConfig, Consumer, ConsumerOptions, Disposition, MqError, OutgoingMessage, Publisher, Topology,
    connect,
};
use deskmail_testkit::rabbit::Vhost;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "t";

/// Fields drop in order: the connection closes before the vhost is deleted.
struct Env {
    conn: Connection,
    topo: Topology,
    cfg: AmqpConfig,
    vhost: Vhost,
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A fresh vhost with the topology declared (retry delay 1 s so TTL tests are quick).
async fn env(name: &str) -> Result<Env> {
    init_tracing();
    let vhost = Vhost::create(name)?;
    let cfg = AmqpConfig { url: vhost.amqp_url_parsed()?, prefix: PREFIX.into(), ..AmqpConfig::default() };
    assert!(cfg.validate().is_empty());
    let conn = connect(&cfg, name).await?;
    let topo = Topology::from_config(&cfg)?.with_retry_delays(&[Duration::from_secs(1)])?;
    topo.declare(&conn.create_channel().await?).await?;
    Ok(Env { conn, topo, cfg, vhost })
}

fn msg(topo: &Topology, id: &str, body: impl Into<bytes::Bytes>) -> OutgoingMessage {
    OutgoingMessage::new(topo.inbound_exchange(), routing_keys::MAIL_RAW, body)
        .message_id(id)
        .content_type("message/rfc822")
        .header("x-mailbox-id", "mb-1")
}

/// Ready messages right now (passive declare on a throwaway channel: exact, no stats lag).
async fn ready(conn: &Connection, queue: &str) -> Result<u32> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(q.message_count())
}

/// Polls [`ready`] until it equals `want` (requeues after a channel close take a moment).
async fn wait_ready(conn: &Connection, queue: &str, want: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = ready(conn, queue).await?;
        if n == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{queue}: {n} ready, want {want}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Consumes everything in `queue` with the manual API (batched `ack_up_to`), returning message
/// ids in arrival order; stops after `idle` without a delivery.
async fn drain_ids(conn: &Connection, env: &Env, queue: &str, idle: Duration) -> Result<Vec<String>> {
    let mut consumer =
        Consumer::new(conn, ConsumerOptions::new(queue, env.topo.inbound_dead_letter())).await?;
    let acker = consumer.acker();
    let mut ids = Vec::new();
    let mut unacked = None;
    while let Ok(Some(d)) = tokio::time::timeout(idle, consumer.next_delivery()).await {
        let d = d?;
        ids.push(d.message_id().context("message without id")?.to_owned());
        unacked = Some(d.delivery_tag());
        if ids.len() % 100 == 0 {
            acker.ack_up_to(d.delivery_tag()).await?;
            unacked = None;
        }
    }
    // Acking a tag twice is a channel error (406 unknown delivery tag).
    if let Some(tag) = unacked {
        acker.ack_up_to(tag).await?;
    }
    consumer.close().await?;
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_is_idempotent_quorum_and_retry_queues_come_back() -> Result<()> {
    let env = env("mq_topology").await?;
    let t = &env.topo;
    // Declared once by env(); twice more, on the same and on another channel.
    let ch = env.conn.create_channel().await?;
    t.declare(&ch).await?;
    t.declare(&ch).await?;
    t.declare(&env.conn.create_channel().await?).await?;

    assert_eq!(t.inbound_queue(), "t.inbound.raw");
    assert_eq!(t.outbound_queue(), "t.outbound.jobs");
    assert_eq!(t.retry_queues()[0].queue, "t.outbound.retry.1s");
    for q in t.queues() {
        let info = env.vhost.queue_info(&q.name).await?;
        assert_eq!(info["type"], "quorum", "{}", q.name);
        assert_eq!(info["durable"], true, "{}", q.name);
    }
    let jobs = env.vhost.queue_info(&t.outbound_queue()).await?;
    let args = &jobs["arguments"];
    assert_eq!(args["x-delivery-limit"], 20, "integer, not a string: {args}");
    assert_eq!(args["x-dead-letter-exchange"], "t.dead");
    assert_eq!(args["x-dead-letter-routing-key"], "outbound");
    assert_eq!(args["x-dead-letter-strategy"], "at-least-once");
    assert_eq!(args["x-overflow"], "reject-publish");
    let retry = env.vhost.queue_info("t.outbound.retry.1s").await?;
    assert_eq!(retry["arguments"]["x-message-ttl"], 1000);
    assert_eq!(retry["arguments"]["x-dead-letter-exchange"], "t.outbound");
    assert_eq!(retry["arguments"]["x-dead-letter-routing-key"], "mail.send");

    // Another delivery limit on the existing queues: refused, with queue name and broker text.
    let other = t.clone().with_delivery_limit(5);
    let err = other.declare(&env.conn.create_channel().await?).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MqError::Declare { kind: "queue", .. }), "{text}");
    assert!(text.contains("t.inbound.raw") && text.contains("inequivalent arg"), "{text}");
    assert!(!err.is_transient());

    // A job parked in the 1 s retry queue comes back to the jobs queue after its TTL.
    let publisher = Publisher::new(&env.conn).await?;
    let started = Instant::now();
    let job = OutgoingMessage::new(t.retry_exchange(), &t.retry_queues()[0].routing_key, &b"{}"[..])
        .message_id("job-1")
        .content_type("application/json");
    publisher.publish_confirmed(job).await?;
    let ch = env.conn.create_channel().await?;
    let back = loop {
        let got = ch.basic_get(t.outbound_queue().as_str().into(), BasicGetOptions { no_ack: true }).await?;
        if let Some(m) = got {
            break m;
        }
        ensure!(started.elapsed() < Duration::from_secs(15), "job never came back from the retry queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "came back after {waited:?}, before its TTL");
    assert_eq!(back.delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some("job-1"));
    assert_eq!(back.delivery.routing_key.as_str(), "mail.send");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_8k_messages_arrive_exactly_once() -> Result<()> {
    const N: usize = 10_000;
    let env = env("mq_bulk").await?;
    let publisher = Publisher::new(&env.conn).await?.with_window(env.cfg.publish_window);
    let body = bytes::Bytes::from(vec![b'x'; 8 * 1024]);
    let msgs = (0..N).map(|i| msg(&env.topo, &format!("src:{i}"), body.clone()));
    let results = publisher.publish_all(msgs).await;
    assert_eq!(results.len(), N);
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    wait_ready(&env.conn, &env.topo.inbound_queue(), N as u32).await?;

    let consumer = Consumer::new(
        &env.conn,
        ConsumerOptions::new(env.topo.inbound_queue(), env.topo.inbound_dead_letter()),
    )
    .await?;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let dups = Arc::new(AtomicUsize::new(0));
    let token = CancellationToken::new();
    let (seen2, dups2, token2) = (seen.clone(), dups.clone(), token.clone());
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        consumer.run(
            move |d| {
                let fresh = seen2.lock().unwrap().insert(d.message_id().unwrap().to_owned());
                if !fresh {
                    dups2.fetch_add(1, Ordering::Relaxed);
                }
                assert_eq!(d.body().len(), 8 * 1024);
                if seen2.lock().unwrap().len() == N {
                    token2.cancel();
                }
                async { Disposition::Ack }
            },
            token,
            Duration::from_secs(5),
        ),
    )
    .await??;
    assert_eq!(dups.load(Ordering::Relaxed), 0);
    assert_eq!(seen.lock().unwrap().len(), N);
    assert_eq!(report.acked, N as u64);
    assert_eq!(report.returned_unhandled, 0);
    // Everything acked: nothing ready now, nor after the channel's close would have requeued.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready(&env.conn, &env.topo.inbound_queue()).await?, 0);
    let left =
        env.vhost.wait_queue_message_count(&env.topo.inbound_queue(), 0, Duration::from_secs(15)).await?;
    assert_eq!(left, Some(0), "management API still counts messages (ready + unacked)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_and_missing_exchange_are_errors() -> Result<()> {
    let env = env("mq_unroutable").await?;
    let publisher = Publisher::new(&env.conn).await?;
    let nowhere =
        OutgoingMessage::new(env.topo.inbound_exchange(), "no.such.key", &b"x"[..]).message_id("u1");
    match publisher.publish_confirmed(nowhere).await {
        Err(MqError::Unroutable { exchange, routing_key, reply_text }) => {
            assert_eq!((exchange.as_str(), routing_key.as_str()), ("t.inbound", "no.such.key"));
            assert_eq!(reply_text, "NO_ROUTE");
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    // The channel survives a return: a routable publish still works.
    publisher.publish_confirmed(msg(&env.topo, "ok-1", &b"x"[..])).await?;

    let missing = OutgoingMessage::new("t.no-such-exchange", "k", &b"x"[..]);
    let err = publisher.publish_confirmed(missing).await.unwrap_err();
    assert!(matches!(err, MqError::Publish { .. }), "{err:?}");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    assert!(!err.is_transient(), "a missing exchange is not transient: {err}");
    // The broker closed the channel; after reopen the publisher works again.
    assert!(!publisher.is_open());
    assert!(publisher.publish_confirmed(msg(&env.topo, "lost", &b"x"[..])).await.is_err());
    publisher.reopen(&env.conn).await?;
    publisher.publish_confirmed(msg(&env.topo, "ok-2", &b"x"[..])).await?;
    let ids = drain_ids(&env.conn, &env, &env.topo.inbound_queue(), Duration::from_secs(1)).await?;
    assert_eq!(ids, ["ok-1", "ok-2"]);
    Ok(())
}

/// `publish_optional` (events nobody may listen to): an unroutable message is confirmed as
/// sent, and mixing such messages with mandatory ones in flight blames none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_publishes_may_be_unroutable() -> Result<()> {
    let env = env("mq_optional").await?;
    let publisher = Publisher::new(&env.conn).await?;
    let mut pending = Vec::new();
    for i in 0..50 {
        let event = OutgoingMessage::new(env.topo.events_exchange(), "ticket.created", &b"{}"[..]);
        pending.push(publisher.publish_optional(event.message_id(format!("e{i}"))).await?);
        pending.push(publisher.publish(msg(&env.topo, &format!("m{i}"), &b"x"[..])).await?);
    }
    for p in pending {
        p.await?;
    }
    let ids = drain_ids(&env.conn, &env, &env.topo.inbound_queue(), Duration::from_secs(1)).await?;
    assert_eq!(ids.len(), 50);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_loses_nothing_that_was_confirmed() -> Result<()> {
    let env = env("mq_fault").await?;
    let name = format!("fault-publisher-{}", uuid::Uuid::new_v4());
    let conn = connect(&env.cfg, &name).await?;
    // Wait until the management API lists the connection, so the close below is prompt.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !env.vhost.connections().await?.iter().any(|(_, cn)| *cn == name) {
        ensure!(Instant::now() < deadline, "connection {name} never showed up in the management API");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let publisher = Publisher::new(&conn).await?.with_window(256);
    let failed = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let body = bytes::Bytes::from(vec![b'y'; 1024]);
    let topo = env.topo.clone();
    let stop = failed.clone();
    let input = futures::stream::iter(0u64..)
        .take_while(move |_| futures::future::ready(!stop.load(Ordering::Relaxed)))
        .map(move |i| (i, msg(&topo, &format!("f:{i}"), body.clone())));
    let (confirmed2, failed2) = (confirmed.clone(), failed.clone());
    let publishing = tokio::spawn(async move {
        let mut errors = Vec::new();
        let mut results = std::pin::pin!(publisher.publish_stream(input));
        while let Some((i, r)) = results.next().await {
            match r {
                Ok(()) => confirmed2.lock().unwrap().push(format!("f:{i}")),
                Err(e) => {
                    failed2.store(true, Ordering::Relaxed);
                    errors.push(e);
                }
            }
        }
        errors
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while confirmed.lock().unwrap().len() < 2_000 {
        ensure!(Instant::now() < deadline, "publisher too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let closed = env.vhost.close_connection_named(&name, "fault test").await?;
    assert_eq!(closed, 1);
    let errors = tokio::time::timeout(Duration::from_secs(30), publishing).await??;
    assert!(!errors.is_empty(), "the publisher never noticed the closed connection");
    assert!(errors.iter().all(MqError::is_transient), "{:?}", errors.first());

    let confirmed: HashSet<String> = confirmed.lock().unwrap().drain(..).collect();
    let in_queue = drain_ids(&env.conn, &env, &env.topo.inbound_queue(), Duration::from_secs(2)).await?;
    let in_queue_set: HashSet<&str> = in_queue.iter().map(String::as_str).collect();
    assert_eq!(in_queue_set.len(), in_queue.len(), "duplicates in the queue");
    let missing: Vec<&String> = confirmed.iter().filter(|id| !in_queue_set.contains(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} confirmed messages are not in the queue, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    eprintln!(
        "confirmed {}, in queue {} (the rest were never confirmed), errors {}",
        confirmed.len(),
        in_queue.len(),
        errors.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_and_requeue_dispositions() -> Result<()> {
    let env = env("mq_dispositions").await?;
    let publisher = Publisher::new(&env.conn).await?;
    for id in ["good", "poison", "flaky"] {
        publisher.publish_confirmed(msg(&env.topo, id, format!("body of {id}"))).await?;
    }
    let consumer = Consumer::new(
        &env.conn,
        ConsumerOptions::new(env.topo.inbound_queue(), env.topo.inbound_dead_letter()),
    )
    .await?;
    let token = CancellationToken::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen2, token2) = (seen.clone(), token.clone());
    let report = consumer
        .run(
            move |d| {
                let id = d.message_id().unwrap_or_default().to_owned();
                seen2.lock().unwrap().push((id.clone(), d.redelivered(), d.delivery_count()));
                let disposition = match (id.as_str(), d.redelivered()) {
                    ("poison", _) => Disposition::DeadLetter { reason: "cannot parse: bad mail".into() },
                    ("flaky", false) => Disposition::Requeue,
                    ("flaky", true) => {
                        token2.cancel();
                        Disposition::Ack
                    }
                    _ => Disposition::Ack,
                };
                async move { disposition }
            },
            token,
            Duration::from_secs(5),
        )
        .await?;
    assert_eq!((report.acked, report.requeued, report.dead_lettered), (2, 1, 1), "{report:?}");
    let seen = seen.lock().unwrap().clone();
    let flaky: Vec<_> = seen.iter().filter(|(id, ..)| id == "flaky").collect();
    assert_eq!(flaky.len(), 2, "{seen:?}");
    assert_eq!((flaky[0].1, flaky[0].2), (false, 0));
    assert_eq!((flaky[1].1, flaky[1].2), (true, 1), "x-delivery-count after one requeue");
    wait_ready(&env.conn, &env.topo.inbound_queue(), 0).await?;

    let mut dead = Consumer::new(
        &env.conn,
        ConsumerOptions::new(env.topo.inbound_dead_queue(), env.topo.inbound_dead_letter()),
    )
    .await?;
    let d = tokio::time::timeout(Duration::from_secs(5), dead.next_delivery())
        .await?
        .context("no dead letter")??;
    assert_eq!(d.message_id(), Some("poison"));
    assert_eq!(d.header_str(ERROR_HEADER), Some("cannot parse: bad mail"));
    assert_eq!(d.header_str("x-mailbox-id"), Some("mb-1"), "original headers kept");
    assert_eq!(d.content_type(), Some("message/rfc822"));
    assert_eq!(d.body(), b"body of poison");
    assert_eq!(d.routing_key(), "inbound");
    dead.acker().ack(d.delivery_tag()).await?;
    dead.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_finishes_the_message_in_hand_and_leaves_the_rest() -> Result<()> {
    const TOTAL: u32 = 20;
    let env = env("mq_stop").await?;
    let publisher = Publisher::new(&env.conn).await?;
    let results =
        publisher.publish_all((0..TOTAL).map(|i| msg(&env.topo, &format!("s:{i}"), &b"x"[..]))).await;
    assert!(results.iter().all(Result::is_ok));
    let queue = env.topo.inbound_queue();

    // A slow handler is in the middle of its first message when the stop comes.
    let consumer =
        Consumer::new(&env.conn, ConsumerOptions::new(&queue, env.topo.inbound_dead_letter()).prefetch(10))
            .await?;
    let token = CancellationToken::new();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let finished = Arc::new(AtomicBool::new(false));
    let finished2 = finished.clone();
    let run = tokio::spawn(consumer.run(
        move |_d| {
            let (started_tx, finished) = (started_tx.clone(), finished2.clone());
            async move {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
                finished.store(true, Ordering::SeqCst);
                Disposition::Ack
            }
        },
        token.clone(),
        Duration::from_secs(10),
    ));
    started_rx.await?;
    token.cancel();
    let report = tokio::time::timeout(Duration::from_secs(20), run).await???;
    assert!(finished.load(Ordering::SeqCst), "the handler was interrupted");
    assert_eq!(report.acked, 1, "{report:?}");
    assert!(!report.abandoned);
    assert!(report.returned_unhandled <= 9, "{report:?}");
    wait_ready(&env.conn, &queue, TOTAL - 1).await?;

    // Grace too short: the handler is abandoned and its message goes back too.
    let consumer =
        Consumer::new(&env.conn, ConsumerOptions::new(&queue, env.topo.inbound_dead_letter()).prefetch(5))
            .await?;
    let token = CancellationToken::new();
    let token2 = token.clone();
    let report = consumer
        .run(
            move |_d| {
                token2.cancel();
                async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Disposition::Ack
                }
            },
            token,
            Duration::from_millis(200),
        )
        .await?;
    assert!(report.abandoned, "{report:?}");
    assert_eq!(report.acked, 0);
    wait_ready(&env.conn, &queue, TOTAL - 1).await?;
    Ok(())
}

#[tokio::test]
async fn connect_reports_an_unreachable_broker_without_the_password() -> Result<()> {
    let cfg = AmqpConfig {
        url: "amqp://guest:hunter2@127.0.0.1:1/%2f".parse()?,
        connect_timeout: Duration::from_millis(700),
        ..AmqpConfig::default()
    };
    let started = Instant::now();
    let err = connect(&cfg, "unreachable").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "overran the connect timeout");
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(err.is_transient());

    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let err = deskmail_mq::connect_until_cancelled(&cfg, "unreachable", &token).await.unwrap_err();
    assert!(matches!(err, MqError::Cancelled), "{err}");
    Ok(())
}

/// A real broker stop and a `kill -9` of the node (a private node, so the shared broker is
/// untouched): confirmed messages in the quorum queue survive both, connections are refused
/// while the node is down, and a new connection works once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_a_broker_stop_and_a_node_crash() -> Result<()> {
    init_tracing();
    const N: u32 = 300;
    let vhost = Vhost::create_private("mq_stop").await?;
    let broker = vhost.broker().context("a private vhost has its node")?.clone();
    let cfg = AmqpConfig { url: vhost.amqp_url_parsed()?, prefix: PREFIX.into(), ..AmqpConfig::default() };
    let topo = Topology::from_config(&cfg)?;
    let conn = connect(&cfg, "mq-stop").await?;
    topo.declare(&conn.create_channel().await?).await?;
    let publisher = Publisher::new(&conn).await?;
    for i in 0..N {
        publisher.publish_confirmed(msg(&topo, &format!("s{i}"), vec![b'x'; 2048])).await?;
    }
    assert_eq!(ready(&conn, &topo.inbound_queue()).await?, N);

    let took = broker.stop().await?;
    eprintln!("graceful stop took {took:?}");
    assert!(!broker.is_running());
    let refused = connect(&cfg, "mq-stop-down").await;
    assert!(refused.is_err(), "the stopped broker still accepts connections");
    assert!(conn.status().errored() || !conn.status().connected(), "the old connection is closed");
    let took = broker.start().await?;
    eprintln!("start took {took:?}");
    let conn = connect(&cfg, "mq-stop-again").await?;
    assert_eq!(ready(&conn, &topo.inbound_queue()).await?, N, "after a stop and start");
    drop(conn);

    broker.crash().await?;
    assert!(connect(&cfg, "mq-crash-down").await.is_err());
    broker.start().await?;
    let conn = connect(&cfg, "mq-crash-again").await?;
    assert_eq!(ready(&conn, &topo.inbound_queue()).await?, N, "after kill -9 and start");
    Ok(())
}
