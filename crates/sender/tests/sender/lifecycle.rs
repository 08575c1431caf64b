//! The sender as an operator runs it: starts, waits for configd, declares the topology,
//! logs, and on SIGTERM lets the sends in flight finish (nothing lost, nothing twice).

use std::path::Path;
use std::time::{Duration, Instant};

use deskmail_mq::OutgoingMessage;
use deskmail_testkit::process::DaemonProcess;
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_batch_finishes_sends_in_flight_and_loses_nothing() {
    const JOBS: usize = 300;
    let h = Harness::new("sender-sigterm", &[]).await;
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    h.set_default_box(&b.id).await;
    let msgs = (0..JOBS).map(|i| {
        let id = format!("term-{i:03}");
        let body = serde_json::to_vec(&json!({"job_id": id, "to": [CUSTOMER], "subject": "s", "text": "t"}))
            .unwrap();
        OutgoingMessage::new(h.topology.outbound_exchange(), "mail.send", body).message_id(id)
    });
    assert!(h.publisher.publish_all(msgs).await.into_iter().all(|r| r.is_ok()));
    let config = h.write_config("");
    let mut p = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-sender")),
        &["--config", config.to_str().unwrap(), "--log-format", "json"],
        &[],
    )
    .unwrap();
    let ready = p.wait_for_log("Ready.", Duration::from_secs(30)).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(parsed["level"], "INFO");
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.stack.message_count(CUSTOMER, "INBOX").unwrap() < 30 {
        assert!(Instant::now() < deadline, "no mail flowing\n{}", p.log().join("\n"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = p.terminate(Duration::from_secs(30)).unwrap();
    let log = p.log().join("\n");
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("Stopped."), "{log}");
    assert!(!log.contains("guest:guest") && !log.contains("daemon-token"), "secrets in the log:\n{log}");

    // Every job is either sent (and acked) or back in the queue; after a restart all are sent once.
    let running = h.start_sender("").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    loop {
        let n = h.stack.message_count(CUSTOMER, "INBOX").unwrap();
        if n >= JOBS && n == last {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of {JOBS}");
        last = n;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    running.stop().await;
    let ids: Vec<String> =
        h.fetch_all(CUSTOMER, CUSTOMER_PW).await.iter().filter_map(|m| job_id_of(m)).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (JOBS, JOBS), "a graceful stop sends nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waits_for_configd_before_consuming() {
    let mut h = Harness::new("sender-wait", &[]).await;
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    h.set_default_box(&b.id).await;
    h.configd.pause().await;
    let running = h.start_sender("").await;
    h.publish(&json!({"job_id": "w-1", "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.stack.message_count(CUSTOMER, "INBOX").unwrap(), 0, "nothing before the config arrives");
    h.configd.resume().await;
    assert_eq!(h.event_for("w-1", Duration::from_secs(30)).await["event"], "mail.sent");
    running.stop().await;
}
