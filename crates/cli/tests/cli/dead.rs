//! `deskmailctl dead list|show|replay` against the real broker (a vhost per test), with dead
//! letters made the way the daemons make them, and the real sender for the test.

use std::time::{Duration, Instant};

use deskmail_mq::lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use deskmail_mq::lapin::types::{AMQPValue, FieldTable};
use deskmail_mq::lapin::{BasicProperties, Channel, Connection};
use deskmail_mq::topology::ERROR_HEADER;
use deskmail_mq::{AmqpConfig, Consumer, ConsumerOptions, OutgoingMessage, Publisher, Topology};
use deskmail_runtime::CancellationToken;
use deskmail_testkit::rabbit::Vhost;
use serde_json::{Value, json};

use super::{Run, run_env};

/// A vhost with the deskmail topology declared, and a connection to it.
struct Broker {
    vhost: Vhost,
    conn: Connection,
    topology: Topology,
    publisher: Publisher,
}

impl Broker {
    async fn new(name: &str) -> Self {
        let vhost = Vhost::create(name).unwrap();
        let amqp = AmqpConfig { url: vhost.amqp_url_parsed().unwrap(), ..AmqpConfig::default() };
        let (conn, topology) =
            deskmail_mq::connect_and_declare(&amqp, "test", &CancellationToken::new()).await.unwrap();
        let publisher = Publisher::new(&conn).await.unwrap();
        Self { vhost, conn, topology, publisher }
    }

    /// `deskmailctl ARGS` pointed at this vhost.
    async fn ctl(&self, args: &[&str]) -> Run {
        ctl_at(&self.vhost.amqp_url(), args).await
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ctl(&all).await.success();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
    }

    async fn channel(&self) -> Channel {
        self.conn.create_channel().await.unwrap()
    }

    /// Ready messages of `queue` now (passive declare: exact, unlike management statistics).
    async fn count(&self, queue: &str) -> u32 {
        let ch = self.channel().await;
        let opts = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let n = ch.queue_declare(queue.into(), opts, FieldTable::default()).await.unwrap().message_count();
        let _ = ch.close(200, "ok".into()).await;
        n
    }

    /// Takes the next message of `queue` for good.
    async fn take(&self, queue: &str) -> (BasicProperties, Vec<u8>) {
        let ch = self.channel().await;
        let got = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap();
        let _ = ch.close(200, "ok".into()).await;
        let d = got.unwrap_or_else(|| panic!("{queue} is empty")).delivery;
        (d.properties, d.data)
    }

    /// Publishes jobs as an integrator does, then dead-letters each through
    /// `Consumer::dead_letter` as the sender does, with reason `reason <n>`.
    async fn dead_jobs(&self, ids: &[String]) {
        for id in ids {
            let job = json!({"job_id": id, "to": ["c@client.test"], "subject": "s", "text": "t",
                             "attachments": [{"filename": "a.bin", "content_base64": "QUJDRA=="}]});
            let msg = OutgoingMessage::new(
                self.topology.outbound_exchange(),
                "mail.send",
                serde_json::to_vec(&job).unwrap(),
            )
            .content_type("application/json")
            .message_id(id.as_str())
            .header("x-deskmail-retries", 3i64)
            .header("x-deskmail-last-error", "451 busy");
            self.publisher.publish_confirmed(msg).await.unwrap();
        }
        let opts = ConsumerOptions::new(self.topology.outbound_queue(), self.topology.outbound_dead_letter())
            .prefetch(1);
        let mut consumer = Consumer::new(&self.conn, opts).await.unwrap();
        for (n, id) in ids.iter().enumerate() {
            let d = consumer.next_delivery().await.unwrap().unwrap();
            assert_eq!(d.message_id(), Some(id.as_str()));
            consumer.dead_letter(&d, &format!("reason {n}")).await.unwrap();
        }
        consumer.close().await.unwrap();
    }

    /// A job the broker dead-letters itself (rejected without requeue: `x-death`, no
    /// `x-deskmail-error`).
    async fn rejected_job(&self, id: &str) {
        let msg = OutgoingMessage::new(
            self.topology.outbound_exchange(),
            "mail.send",
            format!("{{\"job_id\":\"{id}\"}}"),
        )
        .content_type("application/json")
        .message_id(id);
        let dead = self.topology.outbound_dead_queue();
        let before = self.count(&dead).await;
        self.publisher.publish_confirmed(msg).await.unwrap();
        let ch = self.channel().await;
        let got =
            ch.basic_get(self.topology.outbound_queue().as_str().into(), BasicGetOptions { no_ack: false });
        let d = got.await.unwrap().unwrap().delivery;
        ch.basic_nack(d.delivery_tag, BasicNackOptions { multiple: false, requeue: false }).await.unwrap();
        let _ = ch.close(200, "ok".into()).await;
        wait_for(|| async { self.count(&dead).await > before }, "x-death").await;
    }

    /// A raw mail dead-lettered as the router does (its own copy with the reason).
    async fn dead_mail(&self, source_id: &str) {
        let raw = "From: customer@client.test\r\nTo: support@desk.test\r\nSubject: Printer on fire\r\n\r\nThe body is private.\r\n";
        let dead = self.topology.inbound_dead_letter();
        let msg = OutgoingMessage::new(dead.exchange, dead.routing_key, raw.as_bytes().to_vec())
            .content_type("message/rfc822")
            .message_id(source_id)
            .header(ERROR_HEADER, "mail too large for the tickets database")
            .header("x-mailbox-id", "box-1")
            .header("x-fetched-at", "2026-11-29T10:00:00Z");
        self.publisher.publish_confirmed(msg).await.unwrap();
    }
}

async fn ctl_at(url: &str, args: &[&str]) -> Run {
    run_env(None, args, None, &[("DESKMAILCTL_AMQP__URL", url)]).await
}

async fn wait_for<F, Fut>(mut check: F, what: &str)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|r| r["message_id"].as_str().unwrap_or("-").to_owned()).collect()
}

fn header<'a>(p: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    p.headers().as_ref().and_then(|h| h.inner().get(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_stable_and_show_explains_a_dead_letter() {
    let b = Broker::new("cli-dead-list").await;
    // More than 32: the broker gives many unacked messages back in no particular order.
    let jobs: Vec<String> = (0..40).map(|n| format!("job-{n:02}")).collect();
    b.dead_jobs(&jobs).await;
    b.rejected_job("job-rejected").await;
    b.dead_mail("imap:support:1:7").await;
    let (inbound, outbound) = (b.topology.inbound_dead_queue(), b.topology.outbound_dead_queue());

    let first = b.json(&["dead", "list"]).await;
    let mut want = vec!["imap:support:1:7".to_owned()];
    want.extend(jobs.iter().cloned());
    want.push("job-rejected".into());
    assert_eq!(ids(&first), want, "inbound first, then outbound, oldest first");
    let second = b.json(&["dead", "list"]).await;
    assert_eq!(first, second, "listing twice shows the same");
    assert_eq!((b.count(&inbound).await, b.count(&outbound).await), (1, 41), "nothing taken");

    let rows = first.as_array().unwrap();
    assert_eq!(rows[1]["queue"], outbound.as_str());
    assert_eq!((rows[1]["position"].as_u64(), rows[1]["reason"].as_str()), (Some(1), Some("reason 0")));
    assert!(rows[1]["dead_at"].as_str().unwrap().ends_with('Z'), "{}", rows[1]);
    assert_eq!(rows[0]["reason"], "mail too large for the tickets database");
    let rejected = &rows[41];
    assert_eq!(rejected["position"].as_u64(), Some(41));
    assert_eq!(rejected["reason"], format!("broker: rejected in {}", b.topology.outbound_queue()));
    assert!(rejected["dead_at"].is_string(), "the time of the x-death record: {rejected}");

    let table = b.ctl(&["dead", "list", "--queue", "outbound", "--limit", "3"]).await.success();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "header and 3 rows:\n{table}");
    assert!(lines[0].starts_with("QUEUE") && lines[0].contains("REASON"), "{table}");
    assert!(
        lines[1].contains("job-00") && lines[1].contains("reason 0") && lines[3].contains("job-02"),
        "{table}"
    );

    let shown = b.json(&["dead", "show", "job-05"]).await;
    let s = &shown[0];
    assert_eq!(s["headers"]["x-deskmail-error"], "reason 5");
    assert_eq!(s["headers"]["x-deskmail-retries"], 3);
    assert_eq!(s["body"]["json"]["job_id"], "job-05");
    assert_eq!(s["body"]["json"]["attachments"][0]["content_base64"], "<8 base64 characters>");
    assert_eq!(
        s["replay_to"],
        json!({"exchange": b.topology.outbound_exchange(), "routing_key": "mail.send"})
    );
    let text = b.ctl(&["dead", "show", "job-rejected"]).await.success();
    assert!(text.contains("x-death (latest first):"), "{text}");
    assert!(text.contains(&format!("rejected from {}", b.topology.outbound_queue())), "{text}");
    assert!(text.contains("\"job_id\": \"job-rejected\""), "{text}");
    let mail = b.ctl(&["dead", "show", "imap:support:1:7"]).await.success();
    assert!(mail.contains("Subject: Printer on fire") && mail.contains("x-mailbox-id: box-1"), "{mail}");
    assert!(!mail.contains("The body is private"), "{mail}");
    for out in [&text, &mail, &table] {
        assert!(!out.contains("guest:guest"), "no password: {out}");
    }

    assert_eq!(ids(&b.json(&["dead", "list"]).await), want, "show moved nothing either");
    assert_eq!((b.count(&inbound).await, b.count(&outbound).await), (1, 41));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_puts_dead_letters_back_where_they_came_from() {
    let b = Broker::new("cli-dead-replay").await;
    let jobs: Vec<String> = (0..5).map(|n| format!("job-{n}")).collect();
    b.dead_jobs(&jobs).await;
    b.rejected_job("job-rejected").await;
    b.dead_mail("imap:support:1:7").await;
    let (outbound_dead, jobs_queue) = (b.topology.outbound_dead_queue(), b.topology.outbound_queue());

    let dry = b.json(&["dead", "replay", "job-2", "--dry-run"]).await;
    assert_eq!(dry[0]["result"], "would replay", "{dry}");
    assert_eq!(dry[0]["exchange"], b.topology.outbound_exchange());
    assert_eq!(
        (b.count(&outbound_dead).await, b.count(&jobs_queue).await),
        (6, 0),
        "dry run changes nothing"
    );

    let done = b.ctl(&["dead", "replay", "job-2"]).await.success();
    assert!(done.contains("job-2") && done.contains("replayed"), "{done}");
    assert_eq!((b.count(&outbound_dead).await, b.count(&jobs_queue).await), (5, 1));
    let (props, body) = b.take(&jobs_queue).await;
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("job-2"));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["job_id"], "job-2", "the job as it was");
    assert_eq!(header(&props, "x-deskmail-replayed"), Some(&AMQPValue::LongLongInt(1)));
    for gone in [ERROR_HEADER, "x-deskmail-dead-at", "x-deskmail-retries", "x-deskmail-last-error", "x-death"]
    {
        assert_eq!(header(&props, gone), None, "{gone} dropped");
    }
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        ids(&b.json(&["dead", "list", "--queue", "outbound"]).await),
        ["job-0", "job-1", "job-3", "job-4", "job-rejected"],
        "the others keep their order"
    );

    // What the broker dead-lettered goes back to the work exchange too, without its x-death.
    b.ctl(&["dead", "replay", "job-rejected", "--queue", "outbound"]).await.success();
    let (props, _) = b.take(&jobs_queue).await;
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("job-rejected"));
    assert_eq!(header(&props, "x-death"), None);

    let all = b.json(&["dead", "replay", "--all", "--queue", "inbound"]).await;
    assert_eq!(ids(&all), ["imap:support:1:7"]);
    assert_eq!(all[0]["routing_key"], "mail.raw");
    let (props, body) = b.take(&b.topology.inbound_queue()).await;
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("imap:support:1:7"));
    assert_eq!(props.content_type().as_ref().map(|s| s.as_str()), Some("message/rfc822"));
    assert!(
        matches!(header(&props, "x-mailbox-id"), Some(AMQPValue::LongString(s)) if s.as_bytes() == b"box-1")
    );
    assert!(body.ends_with(b"The body is private.\r\n"));
    assert_eq!(b.count(&b.topology.inbound_dead_queue()).await, 0);

    let replayed_twice = b.ctl(&["dead", "replay", "job-2"]).await;
    assert_eq!(replayed_twice.code, 1, "{replayed_twice:#?}");
    assert!(
        replayed_twice.stderr.contains("no dead letter with message id \"job-2\""),
        "{replayed_twice:#?}"
    );
    assert_eq!(b.count(&outbound_dead).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_errors_name_what_is_wrong() {
    // Broker unreachable: the URL is shown, its password is not.
    let r = run_env(
        None,
        &["dead", "list"],
        None,
        &[
            ("DESKMAILCTL_AMQP__URL", "amqp://ops:s3cret@127.0.0.1:1/%2f"),
            ("DESKMAILCTL_AMQP__CONNECT_TIMEOUT", "1s"),
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("cannot reach RabbitMQ") && r.stderr.contains("127.0.0.1:1"), "{r:#?}");
    assert!(!r.stderr.contains("s3cret") && r.stderr.contains("ops:***@"), "{r:#?}");

    // An invalid [amqp] section is a config error (78), like the rest of the CLI config.
    let r = run_env(None, &["dead", "list"], None, &[("DESKMAILCTL_AMQP__URL", "http://mq.example/")]).await;
    assert_eq!(r.code, 78, "{r:#?}");
    assert!(r.stderr.contains("amqp.url"), "{r:#?}");

    // A vhost without the deskmail topology: the missing queue is named.
    let empty = Vhost::create("cli-dead-empty").unwrap();
    let r = ctl_at(&empty.amqp_url(), &["dead", "list", "--queue", "outbound"]).await;
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("queue deskmail.outbound.dead does not exist"), "{r:#?}");
    assert!(!r.stderr.contains("guest:guest"), "{r:#?}");

    let b = Broker::new("cli-dead-errors").await;
    let r = b.ctl(&["dead", "show", "no-such-job"]).await;
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("no dead letter with message id \"no-such-job\""), "{r:#?}");
    let r = b.ctl(&["dead", "list", "--queue", "deskmail.outbound.jobs"]).await;
    assert_eq!(r.code, 2, "a work queue is refused: {r:#?}");
    let r = b.ctl(&["dead", "replay"]).await;
    assert_eq!(r.code, 2, "a message id or --all: {r:#?}");
    let r = b.ctl(&["dead", "list"]).await;
    assert_eq!(r.success(), "No dead letters.\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_another_queue_follows_x_death_and_keeps_what_it_cannot_deliver() {
    let b = Broker::new("cli-dead-custom").await;
    let ch = b.channel().await;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    ch.queue_declare("custom.dead".into(), durable, quorum.clone()).await.unwrap();
    let mut work = quorum.clone();
    work.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    work.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString("custom.dead".into()));
    ch.queue_declare("custom.work".into(), durable, work.clone()).await.unwrap();
    // Published to the default exchange, rejected: dead-lettered with x-death (exchange "",
    // routing key custom.work).
    let msg = OutgoingMessage::new("", "custom.work", &b"payload"[..]).message_id("m-1");
    b.publisher.publish_confirmed(msg).await.unwrap();
    let d = ch.basic_get("custom.work".into(), BasicGetOptions { no_ack: false }).await.unwrap().unwrap();
    ch.basic_nack(d.delivery.delivery_tag, BasicNackOptions { multiple: false, requeue: false })
        .await
        .unwrap();
    wait_for(|| async { b.count("custom.dead").await == 1 }, "dead-lettered to custom.dead").await;

    // Where it came from is gone: the replay fails and the message stays.
    ch.queue_delete("custom.work".into(), Default::default()).await.unwrap();
    let r = b.ctl(&["dead", "replay", "m-1", "--queue", "custom.dead"]).await;
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stdout.contains("failed, left in place"), "{r:#?}");
    assert_eq!(b.count("custom.dead").await, 1, "nothing lost");

    ch.queue_declare("custom.work".into(), durable, work).await.unwrap();
    let done = b.json(&["dead", "replay", "m-1", "--queue", "custom.dead"]).await;
    assert_eq!(
        (done[0]["exchange"].as_str(), done[0]["routing_key"].as_str()),
        (Some(""), Some("custom.work"))
    );
    assert_eq!(done[0]["result"], "replayed");
    assert_eq!((b.count("custom.dead").await, b.count("custom.work").await), (0, 1));
    let (props, body) = b.take("custom.work").await;
    assert_eq!(body, b"payload");
    assert_eq!(header(&props, "x-death"), None);
    assert_eq!(header(&props, "x-deskmail-replayed"), Some(&AMQPValue::LongLongInt(1)));
}
