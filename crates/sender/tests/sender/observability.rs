//! The sender's telemetry wired in: `/metrics` counts what was done, `/readyz` follows the
//! broker (unready naming `rabbitmq` while it is away, ready again after an in-process
//! reconnect, and work flows again), and the binary tells systemd READY and STOPPING and
//! logs JSON lines carrying the job id of the job they belong to.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use deskmail_testkit::metric_value;
use deskmail_testkit::process::DaemonProcess;
use deskmail_testkit_configd::free_port;
use serde_json::json;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);
const TEMPFAIL: &str = "tempfail@client.test";
const REJECT: &str = "reject@client.test";

async fn get(port: u16, path: &str) -> (u16, String) {
    deskmail_testkit::http_get(port, path).await.unwrap()
}

/// Polls `path` until `pred` holds for its answer.
async fn wait_http(port: u16, path: &str, what: &str, pred: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + T;
    loop {
        // The listener may not be up yet: the sender starts it first thing, in its own task.
        let (code, body) = deskmail_testkit::http_get(port, path).await.unwrap_or((0, String::new()));
        if pred(code, &body) {
            return (code, body);
        }
        assert!(Instant::now() < deadline, "{path} never {what}: {code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn value(metrics: &str, name: &str, labels: &str) -> f64 {
    metric_value(metrics, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_was_done() {
    let mut h = Harness::new("sender-metrics", &[(TEMPFAIL, "tempfail-pass")]).await;
    h.stack.set_recipient_answer(TEMPFAIL, "450 4.2.0 try again later").unwrap();
    h.stack.set_recipient_answer(REJECT, "550 5.1.1 no such user").unwrap();
    let good = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    // A box whose server is not there: connect_failed.
    let down_port = free_port();
    let down = h
        .create_box(
            "down",
            pb::OutboundSettings { port: u32::from(down_port), ..plain_box(&h.stack, SUPPORT) },
        )
        .await;
    h.set_default_box(&good.id).await;
    let port = free_port();
    let running = h.start_sender(&format!("[retry]\ndelays = [\"1s\"]\n[metrics]\nport = {port}\n")).await;
    wait_http(port, "/readyz", "ready", |c, b| c == 200 && b.contains("rabbitmq: ready")).await;

    for i in 0..3 {
        h.publish(&json!({"job_id": format!("ok-{i}"), "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    }
    h.publish(&json!({"job_id": "rejected", "to": [REJECT], "subject": "s", "text": "t"})).await;
    h.publish_raw(b"{not json".to_vec(), "garbled").await;
    h.publish(&json!({"job_id": "tempfail", "to": [TEMPFAIL], "subject": "s", "text": "t"})).await;
    h.publish(
        &json!({"job_id": "down", "mailbox_id": down.id, "to": [CUSTOMER], "subject": "s", "text": "t"}),
    )
    .await;
    for id in ["ok-0", "ok-1", "ok-2"] {
        assert_eq!(h.event_for(id, T).await["event"], "mail.sent");
    }
    // Each failure ends in the dead-letter queue: rejected at once, the rest after one retry.
    let mut dead = Vec::new();
    for _ in 0..4 {
        dead.push(h.next_dead(T).await.0);
    }
    dead.sort();
    assert_eq!(dead, ["down", "garbled", "rejected", "tempfail"]);

    let (code, m) = wait_http(port, "/metrics", "counted every dead letter", |c, body| {
        c == 200
            && metric_value(body, "deskmail_sender_jobs_dead_lettered_total", "reason=\"retries_exhausted\"")
                == Some(2.0)
    })
    .await;
    assert_eq!(code, 200);
    let (g, d) = (format!("box=\"{}\"", good.id), format!("box=\"{}\"", down.id));
    assert_eq!(value(&m, "deskmail_sender_jobs_sent_total", &g), 3.0);
    assert_eq!(value(&m, "deskmail_sender_jobs_sent_total", &d), 0.0);
    assert_eq!(value(&m, "deskmail_sender_jobs_retried_total", &g), 1.0);
    assert_eq!(value(&m, "deskmail_sender_jobs_retried_total", &d), 1.0);
    let dl = "deskmail_sender_jobs_dead_lettered_total";
    assert_eq!(value(&m, dl, "reason=\"rejected\""), 1.0);
    assert_eq!(value(&m, dl, "reason=\"invalid_job\""), 1.0);
    assert_eq!(value(&m, dl, "reason=\"no_box\""), 0.0);
    assert_eq!(value(&m, dl, "reason=\"retries_exhausted\""), 2.0);
    let errors = "deskmail_sender_box_errors_total";
    assert_eq!(value(&m, errors, &format!("{d},reason=\"connect_failed\"")), 2.0);
    assert_eq!(value(&m, errors, &format!("{g},reason=\"connect_failed\"")), 0.0);
    // Three 250s and the 450 and 550 answers are SMTP transactions of the good box.
    assert_eq!(value(&m, "deskmail_sender_send_duration_seconds_count", &g), 3.0 + 2.0 + 1.0);
    assert!(m.contains("deskmail_sender_send_duration_seconds_bucket{"), "a real histogram:\n{m}");
    let lag = format!("queue=\"{}\"", h.topology.outbound_queue());
    let (_, m) = wait_http(port, "/metrics", "sampled the consumer lag", |_, body| {
        metric_value(body, "deskmail_queue_consumers", &lag) == Some(1.0)
    })
    .await;
    assert_eq!(value(&m, "deskmail_queue_messages_ready", &lag), 0.0);
    assert_eq!(value(&m, "deskmail_build_info", "daemon=\"deskmail-sender\",version=\"0.1.0\""), 1.0);
    running.stop().await;
}

/// `/readyz` goes 503 naming `rabbitmq` when the broker (a node of the test's own) stops
/// mid-flow and 200 when it is started again; the jobs in flight are delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_follows_the_broker_and_work_resumes_after_a_reconnect() {
    const JOBS: usize = 200;
    let mut h = Harness::with_private_broker("sender-readyz").await;
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    h.set_default_box(&b.id).await;
    let port = free_port();
    let running = h.start_sender(&format!("[metrics]\nport = {port}\n")).await;
    let (_, body) =
        wait_http(port, "/readyz", "ready", |c, b| c == 200 && b.contains("rabbitmq: ready")).await;
    for check in ["configd: ready", "database: ready", "rabbitmq: ready"] {
        assert!(body.contains(check), "{body}");
    }
    assert_eq!(get(port, "/healthz").await.0, 200);
    let msgs = (0..JOBS).map(|i| {
        let id = format!("flow-{i:03}");
        let body = serde_json::to_vec(&json!({"job_id": id, "to": [CUSTOMER], "subject": "s", "text": "t"}))
            .unwrap();
        deskmail_mq::OutgoingMessage::new(h.topology.outbound_exchange(), "mail.send", body).message_id(id)
    });
    assert!(h.publisher.publish_all(msgs).await.into_iter().all(|r| r.is_ok()));
    let deadline = Instant::now() + T;
    while h.stack.message_count(CUSTOMER, "INBOX").unwrap() < 20 {
        assert!(Instant::now() < deadline, "no mail flowing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The broker stops mid-flow: unready, naming rabbitmq; the process keeps running on the
    // other checks.
    let broker = h.vhost.broker().unwrap().clone();
    broker.stop().await.unwrap();
    let (code, body) =
        wait_http(port, "/readyz", "unready", |c, b| c == 503 && b.contains("rabbitmq: not ready")).await;
    assert_eq!(code, 503);
    assert!(body.contains("configd: ready") && body.contains("database: ready"), "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(port, "/healthz").await.0, 200, "alive while the broker is away");
    assert!(!running.task.is_finished(), "the sender must not exit when the broker goes away");

    broker.start().await.unwrap();
    let (_, body) =
        wait_http(port, "/readyz", "ready again", |c, b| c == 200 && b.contains("rabbitmq: ready")).await;
    assert!(body.contains("rabbitmq: ready"), "{body}");
    // The stop closed the test's own connection too: publish new work on a new one.
    h.reconnect().await;
    h.publish(&json!({"job_id": "after", "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    assert_eq!(h.event_for("after", T).await["event"], "mail.sent");
    h.wait_for_mail(CUSTOMER, JOBS + 1, T).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await;
    let ids: Vec<String> =
        h.fetch_all(CUSTOMER, CUSTOMER_PW).await.iter().filter_map(|m| job_id_of(m)).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    // Nothing lost, and nothing twice: the jobs whose deliveries died with the connection come
    // back, and the sent-jobs log knows those that were sent.
    assert_eq!((ids.len(), unique.len()), (JOBS + 1, JOBS + 1));
}

/// The binary under a systemd-like notify socket: READY=1 once it consumes, STOPPING=1 on
/// SIGTERM; with `--log-format json` the lines logged while a job is handled carry its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_notifies_systemd_and_logs_the_job_id() {
    let h = Harness::new("sender-notify", &[]).await;
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    h.set_default_box(&b.id).await;
    let socket_path = h.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(T)).unwrap();
    let config = h.write_config("");
    let mut p = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-sender")),
        &["--config", config.to_str().unwrap(), "--log-format", "json"],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("RUST_LOG", "info,deskmail_sender=debug")],
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no READY: {e}\n{}", p.log().join("\n")));
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    assert!(p.log().iter().any(|l| l.contains("Ready.")), "READY only once it consumes");
    h.publish(&json!({"job_id": "traced-1", "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    let line = p.wait_for_log("\"Sent.\"", T).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["span"]["job_id"], "traced-1", "{line}");
    p.signal("TERM").unwrap();
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert!(p.wait(T).unwrap().success(), "{}", p.log().join("\n"));
}
