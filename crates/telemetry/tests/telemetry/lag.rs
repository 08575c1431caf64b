//! The consumer-lag gauge against the real RabbitMQ: a queue of the design's topology in a
//! vhost of its own, with messages in it, scraped over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deskmail_mq::lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicQosOptions, QueueDeclareOptions,
};
use deskmail_mq::lapin::types::FieldTable;
use deskmail_mq::topology::routing_keys;
use deskmail_mq::{AmqpConfig, OutgoingMessage, Publisher, Topology, connect};
use deskmail_telemetry::queue::{self, CONSUMERS, MESSAGES_READY, SAMPLE_ERRORS_TOTAL};
use deskmail_telemetry::{Telemetry, rabbitmq};
use deskmail_testkit::rabbit::Vhost;
use deskmail_testkit::unique;
use tokio_util::sync::CancellationToken;

use crate::http::{get, parse, value, wait_for_value};

const WAIT: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(100);

#[tokio::test]
async fn gauge_follows_the_ready_messages_of_the_consumed_queue() {
    crate::init_tracing();
    let vhost = Vhost::create("telemetry-lag").unwrap();
    let cfg =
        AmqpConfig { url: vhost.amqp_url_parsed().unwrap(), prefix: "lag1".into(), ..AmqpConfig::default() };
    let conn = connect(&cfg, "telemetry-lag").await.unwrap();
    let topo = Topology::from_config(&cfg).unwrap();
    topo.declare(&conn.create_channel().await.unwrap()).await.unwrap();
    let queue_name = topo.inbound_queue();

    let publisher = Publisher::new(&conn).await.unwrap();
    for i in 0..5 {
        let msg = OutgoingMessage::new(topo.inbound_exchange(), routing_keys::MAIL_RAW, format!("mail {i}"));
        publisher.publish_confirmed(msg).await.unwrap();
    }

    let shutdown = CancellationToken::new();
    let telemetry =
        Telemetry::start(&crate::config_on_free_port(), "deskmail-test", &shutdown).await.unwrap();
    let addr = telemetry.local_addr().unwrap();

    // One sample, directly: exact numbers from the broker.
    let depth = queue::sample(&conn.create_channel().await.unwrap(), &queue_name).await.unwrap();
    assert_eq!((depth.messages_ready, depth.consumers), (5, 0));

    let lag_stop = CancellationToken::new();
    let task =
        queue::spawn_consumer_lag(conn.create_channel().await.unwrap(), &queue_name, EVERY, lag_stop.clone());
    let labels = [("queue", queue_name.as_str())];
    wait_for_value(addr, MESSAGES_READY, &labels, 5.0, WAIT).await.unwrap();
    wait_for_value(addr, CONSUMERS, &labels, 0.0, WAIT).await.unwrap();

    // Two taken off the queue: the gauge follows.
    let getter = conn.create_channel().await.unwrap();
    for _ in 0..2 {
        let got =
            getter.basic_get(queue_name.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap();
        assert!(got.is_some());
    }
    wait_for_value(addr, MESSAGES_READY, &labels, 3.0, WAIT).await.unwrap();

    // A consumer with prefetch 1 holds one unacked: ready counts only what waits.
    let consumer_ch = conn.create_channel().await.unwrap();
    consumer_ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let _consumer = consumer_ch
        .basic_consume(
            queue_name.as_str().into(),
            "lag-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    wait_for_value(addr, CONSUMERS, &labels, 1.0, WAIT).await.unwrap();
    wait_for_value(addr, MESSAGES_READY, &labels, 2.0, WAIT).await.unwrap();

    lag_stop.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let _ = conn.close(200, "done".into()).await;
    telemetry.stop().await;
}

#[tokio::test]
async fn sampling_on_a_connection_survives_a_missing_queue_and_resumes() {
    crate::init_tracing();
    let vhost = Vhost::create("telemetry-lag-reopen").unwrap();
    let cfg = AmqpConfig { url: vhost.amqp_url_parsed().unwrap(), ..AmqpConfig::default() };
    let conn = Arc::new(connect(&cfg, "telemetry-lag-reopen").await.unwrap());
    let queue_name = unique("lagq");

    let shutdown = CancellationToken::new();
    let telemetry =
        Telemetry::start(&crate::config_on_free_port(), "deskmail-test", &shutdown).await.unwrap();
    let addr = telemetry.local_addr().unwrap();
    let lag_stop = CancellationToken::new();
    let task = queue::spawn_consumer_lag_on(conn.clone(), &queue_name, EVERY, lag_stop.clone());

    // The queue does not exist yet: each sample fails (404 closes the channel) and is counted.
    let labels = [("queue", queue_name.as_str())];
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = parse(&get(addr, "/metrics").await.unwrap().body).unwrap();
        if value(&samples, SAMPLE_ERRORS_TOTAL, &labels).unwrap_or(0.0) >= 3.0 {
            assert_eq!(value(&samples, MESSAGES_READY, &labels), None, "no depth for a missing queue");
            break;
        }
        assert!(Instant::now() < deadline, "sample errors not counted");
        tokio::time::sleep(EVERY).await;
    }

    // Once the queue exists and holds two messages, sampling resumes on a new channel.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(queue_name.as_str().into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    for i in 0..2 {
        publisher
            .publish_confirmed(OutgoingMessage::new("", queue_name.as_str(), format!("m{i}")))
            .await
            .unwrap();
    }
    wait_for_value(addr, MESSAGES_READY, &labels, 2.0, WAIT).await.unwrap();

    lag_stop.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let _ = conn.close(200, "done".into()).await;
    telemetry.stop().await;
}

/// The `rabbitmq` readiness check follows the connection: ready while connected, `/readyz`
/// 503 with the reason once the broker closes it.
#[tokio::test]
async fn rabbitmq_check_turns_unready_when_the_broker_closes_the_connection() {
    crate::init_tracing();
    let vhost = Vhost::create("telemetry-ready").unwrap();
    let cfg = AmqpConfig { url: vhost.amqp_url_parsed().unwrap(), ..AmqpConfig::default() };
    let conn = Arc::new(connect(&cfg, "telemetry-ready").await.unwrap());

    let shutdown = CancellationToken::new();
    let telemetry =
        Telemetry::start(&crate::config_on_free_port(), "deskmail-test", &shutdown).await.unwrap();
    let addr = telemetry.local_addr().unwrap();
    let flag = telemetry.readiness().register("rabbitmq");
    let check_stop = CancellationToken::new();
    let task = rabbitmq::spawn_connection_check(conn.clone(), flag, EVERY, check_stop.clone());

    wait_for_readyz(addr, 200, "rabbitmq: ready\n").await;
    // The management API lists a connection a few seconds after it opens; close it there.
    let deadline = Instant::now() + Duration::from_secs(20);
    while vhost.close_connections("telemetry test").await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the broker never listed the connection");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for_readyz(addr, 503, "rabbitmq: not ready: connection closed").await;

    check_stop.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    telemetry.stop().await;
}

async fn wait_for_readyz(addr: std::net::SocketAddr, status: u16, line: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = get(addr, "/readyz").await.unwrap();
        if answer.status == status && answer.body.contains(line) {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never gave {status} with {line:?}: {answer:?}");
        tokio::time::sleep(EVERY).await;
    }
}
