//! Every kind of malformed job is dead-lettered with a reason a person understands, and a
//! `mail.failed` event; nothing is dropped.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_jobs_are_dead_lettered_with_a_readable_reason() {
    let mut h = Harness::new("sender-malformed", &[]).await;
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    let running = h.start_sender("").await;
    let good =
        |id: &str| json!({"job_id": id, "mailbox_id": b.id, "to": [CUSTOMER], "subject": "s", "text": "t"});
    let with = |id: &str, key: &str, value: serde_json::Value| {
        let mut j = good(id);
        j[key] = value;
        j
    };
    let without = |id: &str, key: &str| {
        let mut j = good(id);
        j.as_object_mut().unwrap().remove(key);
        j
    };
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        ("bad-json".into(), b"{\"job_id\": \"bad-json\", ".to_vec(), "not valid JSON"),
        ("not-an-object".into(), b"[1, 2]".to_vec(), "outbound job shape"),
        (
            "unknown-field".into(),
            serde_json::to_vec(&with("unknown-field", "colour", json!("red"))).unwrap(),
            "unknown field `colour`",
        ),
        (
            "no-job-id".into(),
            serde_json::to_vec(&with("no-job-id", "job_id", json!(""))).unwrap(),
            "job_id: is missing",
        ),
        (
            "bad-address".into(),
            serde_json::to_vec(&with("bad-address", "to", json!(["not-an-address"]))).unwrap(),
            "to[0]: \"not-an-address\" is not an email address",
        ),
        ("no-recipient".into(), serde_json::to_vec(&without("no-recipient", "to")).unwrap(), "no recipient"),
        ("no-body".into(), serde_json::to_vec(&without("no-body", "text")).unwrap(), "no body"),
        (
            "unknown-box".into(),
            serde_json::to_vec(&with("unknown-box", "mailbox_id", json!("nope"))).unwrap(),
            "unknown mailbox \"nope\"",
        ),
        (
            "unknown-contract".into(),
            serde_json::to_vec(&{
                let mut j = without("unknown-contract", "mailbox_id");
                j["contract"] = json!("Platinum");
                j
            })
            .unwrap(),
            "unknown contract \"Platinum\"",
        ),
        (
            "injection".into(),
            serde_json::to_vec(&with("injection", "subject", json!("Hi\r\nBcc: victim@client.test")))
                .unwrap(),
            "subject: contains a line break",
        ),
        (
            "header-injection".into(),
            serde_json::to_vec(&with(
                "header-injection",
                "headers",
                json!({"X-A": "1\nBcc: victim@client.test"}),
            ))
            .unwrap(),
            "header injection",
        ),
        (
            "structural-header".into(),
            serde_json::to_vec(&with("structural-header", "headers", json!({"From": "boss@desk.test"})))
                .unwrap(),
            "\"From\" cannot be set through headers",
        ),
        (
            "bad-base64".into(),
            serde_json::to_vec(&with(
                "bad-base64",
                "attachments",
                json!([{"filename": "a.pdf", "content_base64": "***"}]),
            ))
            .unwrap(),
            "attachments[0] (\"a.pdf\"): content_base64 is not standard base64",
        ),
        (
            "foreign-from".into(),
            serde_json::to_vec(&with("foreign-from", "from", json!("ceo@elsewhere.test"))).unwrap(),
            "ceo@elsewhere.test may not be used with box \"relay\"",
        ),
        (
            "bad-type".into(),
            serde_json::to_vec(&with("bad-type", "read_receipt", json!("yes"))).unwrap(),
            "invalid type",
        ),
    ];
    for (id, body, _) in &cases {
        h.publish_raw(body.clone(), id).await;
    }
    let mut dead = std::collections::HashMap::new();
    for _ in &cases {
        let (id, reason, body) = h.next_dead(T).await;
        let original = cases
            .iter()
            .find(|c| c.0 == id)
            .unwrap_or_else(|| panic!("unexpected dead letter {id}: {reason}"));
        assert_eq!(body, original.1, "{id}: the dead letter keeps the job as published");
        dead.insert(id, reason);
    }
    for (id, _, want) in &cases {
        let reason = &dead[id];
        assert!(reason.contains(want), "{id}: {reason:?} should say {want:?}");
    }
    // A good job after all of them still goes out.
    h.publish(&good("fine")).await;
    assert_eq!(h.event_for("fine", T).await["event"], "mail.sent");
    running.stop().await;
    h.wait_for_mail(CUSTOMER, 1, T).await;
    assert_eq!(h.stack.message_count(CUSTOMER, "INBOX").unwrap(), 1);
    assert_eq!(h.vhost.wait_queue_message_count("deskmail.outbound.dead", 0, T).await.unwrap(), Some(0));
}
