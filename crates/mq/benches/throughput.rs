//! Throughput of deskmail-mq against bare lapin on the local RabbitMQ (its own vhost):
//! 8 KiB persistent messages into a quorum queue; publish with pipelined confirms (same window),
//! consume with prefetch 256 and multiple-acks every 64. Run: `cargo bench -p deskmail-mq`.
//! Env: `DESKMAIL_BENCH_MESSAGES` (default 20000), `DESKMAIL_BENCH_RUNS` (default 5).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use deskmail_mq::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use deskmail_mq::lapin::types::{FieldTable, ShortString};
use deskmail_mq::lapin::{BasicProperties, Confirmation, Connection};
use deskmail_mq::topology::routing_keys;
use deskmail_mq::{
    AmqpConfig, Consumer, ConsumerOptions, Disposition, OutgoingMessage, Publisher, Topology, connect,
};
use deskmail_testkit::rabbit::Vhost;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const SIZE: usize = 8 * 1024;
const WINDOW: usize = 512;
const PREFETCH: u16 = 256;
const ACK_EVERY: u64 = 64;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = env_usize("DESKMAIL_BENCH_MESSAGES", 20_000);
    let runs = env_usize("DESKMAIL_BENCH_RUNS", 5);
    let vhost = Vhost::create("mq_bench")?;
    let cfg = AmqpConfig { url: vhost.amqp_url_parsed()?, prefix: "bench".into(), ..AmqpConfig::default() };
    // A high delivery limit: consumers stopped mid-queue return their prefetch (+1 each time).
    let topo = Topology::from_config(&cfg)?.with_delivery_limit(1000);
    let conn = connect(&cfg, "bench").await?;
    topo.declare(&conn.create_channel().await?).await?;
    let payload = Bytes::from(vec![b'm'; SIZE]);

    // Warm-up, not measured: connections, the queue's Raft log, both code paths.
    for bare in [false, true] {
        let conn = connect(&cfg, "bench-warmup").await?;
        let warm = (n / 10).max(100);
        if bare {
            publish_bare(&conn, &topo, &payload, warm, usize::MAX).await?;
            consume_bare(&conn, &topo, warm).await?;
        } else {
            publish_crate(&conn, &topo, &payload, warm, usize::MAX).await?;
            consume_crate(&conn, &topo, warm).await?;
        }
        let _ = conn.close(200, "ok".into()).await;
    }

    // rows: publish crate, publish bare, consume crate, consume bare; (msgs/s, client CPU µs/msg).
    let mut rows: [Vec<(f64, f64)>; 4] = Default::default();
    for run in 0..runs {
        // Alternate who goes first, and drain the queue after each publish, so neither side
        // meets a fuller queue or a warmer broker.
        let order = if run % 2 == 0 { [false, true] } else { [true, false] };
        for bare in order {
            let conn = connect(&cfg, "bench-publish").await?;
            let cpu = cpu_micros();
            let rate = if bare {
                publish_bare(&conn, &topo, &payload, n, run).await?
            } else {
                publish_crate(&conn, &topo, &payload, n, run).await?
            };
            rows[usize::from(bare)].push((rate, (cpu_micros() - cpu) / n as f64));
            // lapin refuses to close a connection while a dropped channel is still closing.
            let _ = conn.close(200, "ok".into()).await;

            let conn = connect(&cfg, "bench-consume").await?;
            let cpu = cpu_micros();
            let rate = if bare {
                consume_bare(&conn, &topo, n).await?
            } else {
                consume_crate(&conn, &topo, n).await?
            };
            rows[2 + usize::from(bare)].push((rate, (cpu_micros() - cpu) / n as f64));
            let _ = conn.close(200, "ok".into()).await;
        }
        let r = |i: usize| rows[i][run];
        println!(
            "run {}: publish crate {:>6.0}/s {:>5.1}µs  bare {:>6.0}/s {:>5.1}µs | consume crate {:>6.0}/s {:>5.1}µs  bare {:>6.0}/s {:>5.1}µs",
            run + 1,
            r(0).0,
            r(0).1,
            r(1).0,
            r(1).1,
            r(2).0,
            r(2).1,
            r(3).0,
            r(3).1
        );
    }
    let med: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (median(r.iter().map(|x| x.0).collect()), median(r.iter().map(|x| x.1).collect())))
        .collect();
    println!();
    println!(
        "deskmail-mq vs bare lapin: {n} x {} KiB persistent messages, quorum queue, median of {runs} runs",
        SIZE / 1024
    );
    println!(
        "{:<32} {:>11} {:>11} {:>10}   {:>14} {:>13}",
        "", "crate msg/s", "bare msg/s", "crate/bare", "crate CPU µs/msg", "bare CPU µs/msg"
    );
    for (label, c, b) in [
        (format!("publish, {WINDOW} confirms in flight"), med[0], med[1]),
        (format!("consume, prefetch {PREFETCH}, ack x{ACK_EVERY}"), med[2], med[3]),
    ] {
        println!(
            "{label:<32} {:>11.0} {:>11.0} {:>9.1}%   {:>16.1} {:>15.1}",
            c.0,
            b.0,
            100.0 * c.0 / b.0,
            c.1,
            b.1
        );
    }
    println!("(client CPU = this process's user+system time, all threads; the broker shares the machine)");
    Ok(())
}

/// User + system CPU time of this process so far, in µs (Linux `/proc/self/stat`).
fn cpu_micros() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // After the comm field: state is 0, utime 11, stime 12 (clock ticks, 100 Hz on Linux).
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) * 10_000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

async fn publish_crate(
    conn: &Connection,
    topo: &Topology,
    payload: &Bytes,
    n: usize,
    run: usize,
) -> Result<f64> {
    let publisher = Publisher::new(conn).await?.with_window(WINDOW);
    let exchange = topo.inbound_exchange();
    let started = Instant::now();
    let msgs = (0..n).map(|i| {
        OutgoingMessage::new(exchange.clone(), routing_keys::MAIL_RAW, payload.clone())
            .message_id(format!("c:{run}:{i}"))
            .content_type("message/rfc822")
    });
    let results = publisher.publish_all(msgs).await;
    let elapsed = started.elapsed();
    ensure!(
        results.iter().all(Result::is_ok),
        "crate publish failed: {:?}",
        results.iter().find(|r| r.is_err())
    );
    Ok(rate(n, elapsed))
}

async fn publish_bare(
    conn: &Connection,
    topo: &Topology,
    payload: &Bytes,
    n: usize,
    run: usize,
) -> Result<f64> {
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = topo.inbound_exchange();
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let mut inflight = VecDeque::with_capacity(WINDOW);
    let check = |c: Confirmation| -> Result<()> {
        ensure!(matches!(c, Confirmation::Ack(None)), "bare publish not confirmed: {c:?}");
        Ok(())
    };
    let started = Instant::now();
    for i in 0..n {
        if inflight.len() >= WINDOW {
            check(inflight.pop_front().unwrap().await?)?;
        }
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(format!("b:{run}:{i}")))
            .with_content_type("message/rfc822".into());
        let confirm = channel
            .basic_publish(exchange.as_str().into(), routing_keys::MAIL_RAW.into(), options, payload, props)
            .await?;
        inflight.push_back(confirm);
    }
    while let Some(c) = inflight.pop_front() {
        check(c.await?)?;
    }
    let elapsed = started.elapsed();
    channel.close(200, "ok".into()).await.context("closing the bare publish channel")?;
    Ok(rate(n, elapsed))
}

async fn consume_crate(conn: &Connection, topo: &Topology, n: usize) -> Result<f64> {
    let started = Instant::now();
    let opts = ConsumerOptions::new(topo.inbound_queue(), topo.inbound_dead_letter())
        .prefetch(PREFETCH)
        .ack_batch(ACK_EVERY as usize);
    let consumer = Consumer::new(conn, opts).await?;
    let token = CancellationToken::new();
    let stop = token.clone();
    let mut count = 0usize;
    let report = consumer
        .run(
            move |d| {
                count += 1;
                assert_eq!(d.body().len(), SIZE);
                if count == n {
                    stop.cancel();
                }
                async { Disposition::Ack }
            },
            token,
            Duration::from_secs(5),
        )
        .await?;
    let elapsed = started.elapsed();
    ensure!(report.acked == n as u64, "crate consumed {report:?}");
    Ok(rate(n, elapsed))
}

async fn consume_bare(conn: &Connection, topo: &Topology, n: usize) -> Result<f64> {
    let started = Instant::now();
    let channel = conn.create_channel().await?;
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            topo.inbound_queue().as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut count = 0u64;
    let mut bytes = 0usize;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        count += 1;
        bytes += delivery.data.len();
        if count.is_multiple_of(ACK_EVERY) || count == n as u64 {
            delivery.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        if count == n as u64 {
            break;
        }
    }
    channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await.context("bare basic.cancel")?;
    channel.close(200, "ok".into()).await.context("closing the bare consume channel")?;
    let elapsed = started.elapsed();
    ensure!(count == n as u64 && bytes == n * SIZE, "bare consumed {count}");
    Ok(rate(n, elapsed))
}
