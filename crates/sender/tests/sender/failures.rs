//! Postfix answering 450 (retried, delivered once the answer is 250), 550 (dead at once with
//! the text), and a box whose server is down (status ERROR, then ACTIVE when it is back).

use std::time::Duration;

use deskmail_proto::v1 as pb;
use serde_json::json;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);
const TEMPFAIL: &str = "tempfail@client.test";
const REJECT: &str = "reject@client.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_450_is_retried_until_250_and_a_550_is_dead_at_once_with_the_text() {
    let mut h = Harness::new("sender-4xx5xx", &[(TEMPFAIL, "tempfail-pass")]).await;
    h.stack.set_recipient_answer(TEMPFAIL, "450 4.2.0 try again later").unwrap();
    h.stack.set_recipient_answer(REJECT, "550 5.1.1 no such user").unwrap();
    let b = h.create_box("relay", password_box(&h.stack, pb::Security::Tls)).await;
    h.set_default_box(&b.id).await;
    let running = h.start_sender("[retry]\ndelays = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]\n").await;

    h.publish(&json!({"job_id": "reject-1", "to": [REJECT], "subject": "s", "text": "t"})).await;
    let (id, reason, body) = h.next_dead(T).await;
    assert_eq!(id, "reject-1");
    assert!(reason.contains("550 5.1.1") && reason.contains("no such user"), "{reason}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["job_id"],
        "reject-1",
        "the job itself is kept"
    );
    let e = h.event_for("reject-1", T).await;
    assert_eq!(e["event"], "mail.failed");
    assert!(e["smtp_reply"].as_str().unwrap().starts_with("550 5.1.1"), "{e}");
    // A 550 is the recipient's problem, not the box's.
    assert_ne!(
        h.status(&b.id).await.and_then(|v| v.status).map(|s| s.state),
        Some(pb::MailboxState::Error as i32)
    );

    h.publish(&json!({"job_id": "tempfail-1", "to": [TEMPFAIL], "subject": "later", "text": "t"})).await;
    // Wait until Postfix has said 450 at least once, then let it through.
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(h.stack.postfix_log_path())
        .unwrap_or_default()
        .contains("450 4.2.0 <tempfail@client.test>")
    {
        assert!(std::time::Instant::now() < deadline, "no 450 seen\n{}", h.stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stack.clear_recipient_answer(TEMPFAIL).unwrap();
    let e = h.event_for("tempfail-1", T).await;
    assert_eq!(e["event"], "mail.sent", "{e}");
    assert!(e["retries"].as_u64().unwrap() >= 1, "{e}");
    h.wait_for_mail(TEMPFAIL, 1, T).await;
    running.stop().await;
    assert_eq!(h.fetch_all(TEMPFAIL, "tempfail-pass").await.len(), 1, "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_box_that_keeps_failing_is_error_until_it_works_again() {
    let mut h = Harness::new("sender-boxdown", &[]).await;
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    h.set_default_box(&b.id).await;
    h.stack.stop_postfix().unwrap();
    let running = h.start_sender(FAST_RETRIES).await;
    h.publish(&json!({"job_id": "down-1", "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    let s = h.wait_status(&b.id, pb::MailboxState::Error, T).await;
    assert_eq!(s.reason, pb::StatusReason::ConnectFailed as i32, "{s:?}");
    h.stack.start_postfix().unwrap();
    let e = h.event_for("down-1", T).await;
    assert_eq!(e["event"], "mail.sent", "{e}");
    assert!(e["retries"].as_u64().unwrap() >= 1, "{e}");
    h.wait_status(&b.id, pb::MailboxState::Active, T).await;
    running.stop().await;
    h.wait_for_mail(CUSTOMER, 1, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn temporary_failures_end_dead_after_the_last_retry_queue() {
    let mut h = Harness::new("sender-giveup", &[(TEMPFAIL, "tempfail-pass")]).await;
    h.stack.set_recipient_answer(TEMPFAIL, "451 4.3.0 still busy").unwrap();
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    let running = h.start_sender("[retry]\ndelays = [\"1s\", \"2s\"]\n").await;
    let started = std::time::Instant::now();
    h.publish(
        &json!({"job_id": "busy-1", "mailbox_id": b.id, "to": [TEMPFAIL], "subject": "s", "text": "t"}),
    )
    .await;
    let (id, reason, _) = h.next_dead(T).await;
    assert_eq!(id, "busy-1");
    assert!(reason.contains("gave up after 2 retries") && reason.contains("451 4.3.0"), "{reason}");
    assert!(started.elapsed() >= Duration::from_secs(3), "waited 1s then 2s: {:?}", started.elapsed());
    let e = h.event_for("busy-1", T).await;
    assert_eq!((e["event"].as_str(), e["retries"].as_u64()), (Some("mail.failed"), Some(2)), "{e}");
    running.stop().await;
}
