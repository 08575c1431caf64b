//! Guard: the sender's sends over one SMTP connection do not stall on Nagle's algorithm
//! (lettre's own transport waits ~40 ms per mail for a delayed ACK; see mailconn's docs).

use std::time::Duration;

use deskmail_mq::OutgoingMessage;
use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::{SinkMode, SmtpSink};
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_mails_over_one_connection_without_the_nagle_stall() {
    const N: usize = 300;
    let mut h = Harness::new("sender-nagle", &[]).await;
    let sink = SmtpSink::start(SinkMode::Accept).unwrap();
    let b = h
        .create_box(
            "sink",
            pb::OutboundSettings {
                host: "127.0.0.1".into(),
                port: u32::from(sink.port()),
                security: pb::Security::None as i32,
                auth: pb::AuthMethod::None as i32,
                from_address: SUPPORT.into(),
                ..Default::default()
            },
        )
        .await;
    let text = "y".repeat(8 * 1024);
    let msgs = (0..N).map(|i| {
        let id = format!("nagle-{i}");
        let body = serde_json::to_vec(
            &json!({"job_id": id, "mailbox_id": b.id, "to": ["x@client.test"], "subject": "s", "text": text}),
        )
        .unwrap();
        OutgoingMessage::new(h.topology.outbound_exchange(), "mail.send", body).message_id(id)
    });
    assert!(h.publisher.publish_all(msgs).await.into_iter().all(|r| r.is_ok()));
    let running = h.start_sender("[smtp]\npool_max_per_box = 1\n").await;
    let (mut first, mut last) = (u64::MAX, 0);
    for _ in 0..N {
        let e = h.next_event(Duration::from_secs(60)).await;
        assert_eq!(e["event"], "mail.sent", "{e}");
        let t = e["time_ms"].as_u64().unwrap();
        (first, last) = (first.min(t), last.max(t));
    }
    running.stop().await;
    let took = Duration::from_millis(last - first);
    // With the stall, each mail costs >= 40 ms: >= 12 s for 300 on one connection.
    assert!(
        took < Duration::from_secs(6),
        "{N} mails over one connection took {took:?}: Nagle stall is back?"
    );
}
