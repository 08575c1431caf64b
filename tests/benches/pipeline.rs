//! The whole pipeline under load (issue 8), every daemon a release build in its own process,
//! the broker, PostgreSQL, Dovecot and Postfix on the same machine:
//!
//! 1. **Inbound**: `PIPELINE_MAILS` (default 10,000) realistic mails of mixed sizes
//!    (deskmail-testkit's samples) placed in the support mailbox, then the fetcher started;
//!    timed until the last ticket is committed in PostgreSQL. Mails/s.
//! 2. **Latency with IDLE**: with the system idle on IDLE, `PIPELINE_LATENCY_MAILS` (default
//!    1,000) mails delivered at `PIPELINE_LATENCY_RATE`/s (default 200) through LMTP, each
//!    stamped with its delivery time; mail-to-ticket latency = the article's commit time
//!    minus that stamp. p50 / p99.
//! 3. **Outbound**: `PIPELINE_JOBS` (default 5,000) jobs published with confirms, timed
//!    until the sender has sent the last one (its `mail.sent` events) and until the last one
//!    is in the recipient's Dovecot mailbox.
//! 4. **Ceiling**: the broker alone for the same message sizes: publish with confirms
//!    (window 256) while consuming with acks, no work.
//!
//! Prints peak RSS (VmHWM) of each daemon. Run with `make bench` (which builds the release
//! binaries first) or `cargo build --release --bins && cargo bench -p deskmail-e2e --bench
//! pipeline`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deskmail_e2e::desk::{CUSTOMER, Daemon, Desk, PREFIX, SUPPORT};
use deskmail_mq::lapin::BasicProperties;
use deskmail_mq::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use deskmail_mq::lapin::types::{AMQPValue, FieldTable};
use deskmail_testkit::samples::SampleGen;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_us() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()).unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn wait_articles(desk: &Desk, n: i64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = desk.count("SELECT count(*) FROM articles").await;
        if got >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{got} of {n} articles after {within:?}\n{}",
            desk.log(Daemon::Router)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The broker alone: publish `sizes` with confirms (window 256) while consuming with acks.
async fn broker_ceiling(desk: &Desk, sizes: &[usize]) -> f64 {
    let amqp = deskmail_mq::AmqpConfig { url: desk.vhost.amqp_url_parsed().unwrap(), ..Default::default() };
    let conn = deskmail_mq::connect(&amqp, "bench-ceiling").await.unwrap();
    let pub_ch = conn.create_channel().await.unwrap();
    let sub_ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    pub_ch
        .queue_declare(
            "bench.ceiling".into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            args,
        )
        .await
        .unwrap();
    pub_ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    sub_ch.basic_qos(256, BasicQosOptions::default()).await.unwrap();
    let mut consumer = sub_ch
        .basic_consume(
            "bench.ceiling".into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let n = sizes.len();
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
            got += 1;
        }
    });
    let mut pending = std::collections::VecDeque::new();
    for &size in sizes {
        let body = vec![b'x'; size];
        let confirm = pub_ch
            .basic_publish(
                "".into(),
                "bench.ceiling".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        pending.push_back(confirm);
        if pending.len() >= 256 {
            pending.pop_front().unwrap().await.unwrap();
        }
    }
    for c in pending {
        c.await.unwrap();
    }
    consume.await.unwrap();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = conn.close(200, "done".into()).await;
    rate
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let mails = env("PIPELINE_MAILS", 10_000);
    let latency_mails = env("PIPELINE_LATENCY_MAILS", 1_000);
    let latency_rate = env("PIPELINE_LATENCY_RATE", 200);
    let jobs = env("PIPELINE_JOBS", 5_000);
    println!("pipeline: {mails} mails, {latency_mails} latency mails at {latency_rate}/s, {jobs} jobs");

    let mut desk = Desk::start_with(0, false, false).await;

    // 1. Inbound throughput.
    let samples = SampleGen::new(2026).to(SUPPORT).mails(mails);
    let sizes: Vec<usize> = samples.iter().map(|s| s.raw.len()).collect();
    let total_bytes: usize = sizes.iter().sum();
    desk.stack.deliver_many(SUPPORT, samples.iter().map(|s| s.raw.clone())).unwrap();
    drop(samples);
    let start = Instant::now();
    desk.spawn(Daemon::Fetcher).await;
    wait_articles(&desk, mails as i64, Duration::from_secs(1800)).await;
    let elapsed = start.elapsed();
    let inbound_rate = mails as f64 / elapsed.as_secs_f64();
    println!(
        "inbound:  {mails} mails ({:.1} MiB, mean {:.1} KiB) -> tickets in {:.2} s: {inbound_rate:.0} mails/s",
        total_bytes as f64 / 1048576.0,
        total_bytes as f64 / mails as f64 / 1024.0,
        elapsed.as_secs_f64()
    );

    // 2. Latency on IDLE at a steady rate.
    let mut samples_gen = SampleGen::new(7).to(SUPPORT);
    let base = desk.count("SELECT count(*) FROM articles").await;
    let interval = Duration::from_secs_f64(1.0 / latency_rate.max(1) as f64);
    let mut next = Instant::now();
    let feed_start = Instant::now();
    for i in 0..latency_mails {
        let sample = samples_gen.mail();
        let stamp = format!("X-Bench-Sent-Us: {}\r\n", now_us());
        let mut raw = stamp.into_bytes();
        raw.extend_from_slice(&sample.raw);
        desk.stack.deliver(SUPPORT, &raw).unwrap();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let fed_rate = latency_mails as f64 / feed_start.elapsed().as_secs_f64();
    wait_articles(&desk, base + latency_mails as i64, Duration::from_secs(600)).await;
    let pool = desk.pg().await;
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT created_at, substring(raw from 1 for 4096) FROM articles \
         WHERE position(convert_to('X-Bench-Sent-Us', 'UTF8') in substring(raw from 1 for 4096)) > 0",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    pool.close().await;
    let mut lat: Vec<f64> = rows
        .iter()
        .filter_map(|(created, raw)| {
            let head = String::from_utf8_lossy(raw).into_owned();
            let sent: i64 =
                head.split("X-Bench-Sent-Us: ").nth(1)?.split(['\r', '\n']).next()?.trim().parse().ok()?;
            Some((created - sent) as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "latency:  {} mails delivered at {fed_rate:.0}/s (asked {latency_rate}/s) on IDLE: mail-to-ticket p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );

    // 3. Outbound: jobs through the support box to the customer's mailbox.
    let amqp = deskmail_mq::AmqpConfig { url: desk.vhost.amqp_url_parsed().unwrap(), ..Default::default() };
    let (conn, topology) =
        deskmail_mq::connect_and_declare(&amqp, "bench", &CancellationToken::new()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("bench.sent".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        "bench.sent".into(),
        topology.events_exchange().as_str().into(),
        "mail.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let text = "x".repeat(8 * 1024 - 400);
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..jobs {
        let job = serde_json::json!({"job_id": format!("bench-{i}"), "to": [CUSTOMER], "subject": format!("bench {i}"), "text": text});
        let confirm = ch
            .basic_publish(
                format!("{PREFIX}.outbound").as_str().into(),
                "mail.send".into(),
                BasicPublishOptions::default(),
                job.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2).with_message_id(format!("bench-{i}").into()),
            )
            .await
            .unwrap();
        pending.push_back(confirm);
        if pending.len() >= 256 {
            pending.pop_front().unwrap().await.unwrap();
        }
    }
    for c in pending {
        c.await.unwrap();
    }
    let mut events = ch
        .basic_consume(
            "bench.sent".into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut sent = 0;
    while sent < jobs {
        let d = tokio::time::timeout(Duration::from_secs(120), events.next())
            .await
            .expect("mail.sent events stopped")
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        if d.routing_key.as_str() == "mail.sent" {
            sent += 1;
        }
    }
    let sent_time = start.elapsed();
    loop {
        if desk.stack.message_count(CUSTOMER, "INBOX").unwrap_or(0) >= jobs {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1800), "jobs not delivered in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered_time = start.elapsed();
    println!(
        "outbound: {jobs} jobs of 8 KiB: sent (SMTP accepted) in {:.2} s = {:.0} jobs/s; in the recipient's mailbox in {:.2} s = {:.0} jobs/s",
        sent_time.as_secs_f64(),
        jobs as f64 / sent_time.as_secs_f64(),
        delivered_time.as_secs_f64(),
        jobs as f64 / delivered_time.as_secs_f64()
    );
    // Postfix's own ceiling for the same mails: its benchmark client smtp-source, 8 sessions
    // on the plain SMTP port (no TLS, no AUTH: an upper bound for the sender's STARTTLS +
    // AUTH submission), until they are in the recipient's mailbox.
    let before = desk.stack.message_count(CUSTOMER, "INBOX").unwrap_or(0);
    let start = Instant::now();
    let out = std::process::Command::new("smtp-source")
        .args(["-s", "8", "-l", "8192", "-m", &jobs.to_string(), "-f", SUPPORT, "-t", CUSTOMER])
        .arg(format!("127.0.0.1:{}", desk.stack.smtp_port()))
        .output()
        .expect("smtp-source (Debian's postfix package)");
    assert!(out.status.success(), "smtp-source: {}", String::from_utf8_lossy(&out.stderr));
    let accepted = start.elapsed();
    while desk.stack.message_count(CUSTOMER, "INBOX").unwrap_or(0) < before + jobs {
        assert!(start.elapsed() < Duration::from_secs(1800), "smtp-source's mails not delivered in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = start.elapsed();
    println!(
        "postfix:  smtp-source, {jobs} mails of 8 KiB, 8 sessions: accepted in {:.2} s = {:.0}/s; in the mailbox in {:.2} s = {:.0}/s (sender = {:.2}x / {:.2}x of it)",
        accepted.as_secs_f64(),
        jobs as f64 / accepted.as_secs_f64(),
        delivered.as_secs_f64(),
        jobs as f64 / delivered.as_secs_f64(),
        accepted.as_secs_f64() / sent_time.as_secs_f64(),
        delivered.as_secs_f64() / delivered_time.as_secs_f64()
    );
    let _ = conn.close(200, "done".into()).await;

    for d in Daemon::ALL {
        if let Some(pid) = desk.pid(d) {
            println!(
                "peak RSS: deskmail-{:<8} {:.1} MiB",
                d.name(),
                deskmail_testkit::process::status_kib(pid, "VmHWM:")
                    .map_or(f64::NAN, |kb| kb as f64 / 1024.0)
            );
        }
    }

    // 4. The broker's own ceiling for the same sizes.
    let ceiling = broker_ceiling(&desk, &sizes).await;
    println!(
        "ceiling:  the broker alone, same {} sizes, publish+confirm while consume+ack: {ceiling:.0} msgs/s; deskmail inbound = {:.2}x of it",
        sizes.len(),
        inbound_rate / ceiling
    );
    for d in [Daemon::Fetcher, Daemon::Router, Daemon::Sender, Daemon::Configd] {
        desk.terminate(d);
    }
}
