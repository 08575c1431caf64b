//! A mail over the box's size limit is not fetched whole, stays on the server (IMAP: in the
//! deskmail-oversized folder), and is reported in the status and as an event.

use std::time::Duration;

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;

use crate::harness::{Env, INBOUND, mail, message_of, state};

fn big(to: &str, bytes: usize) -> Vec<u8> {
    let mut m = format!("From: customer@client.test\r\nTo: {to}\r\nSubject: big one\r\n\r\n").into_bytes();
    let line = "x".repeat(76) + "\r\n";
    while m.len() < bytes {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_mails_stay_on_the_server_and_are_reported() {
    let imap_user = "imap@desk.test";
    let pop_user = "pop@desk.test";
    let stack = MailStack::builder().user(imap_user, "pw").user(pop_user, "pw").start().unwrap();
    let mut env = Env::new().await;
    let limit = 100_000;
    for user in [imap_user, pop_user] {
        stack.deliver(user, &mail(user, "small")).unwrap();
        stack.deliver(user, &big(user, 300_000)).unwrap();
    }
    let events = env.bind_events("mailbox.status").await;
    let imap_box = env
        .mailbox(&stack, imap_user, "pw", pb::Protocol::Imap, pb::Security::Tls, |i| {
            i.max_message_size = limit
        })
        .await;
    let pop_box = env
        .mailbox(&stack, pop_user, "pw", pb::Protocol::Pop3, pb::Security::Tls, |i| {
            i.max_message_size = limit
        })
        .await;
    let mut fetcher = env.fetcher("f", "").await;
    env.wait_count(INBOUND, 2, Duration::from_secs(20)).await;
    for b in [&imap_box, &pop_box] {
        let s = env
            .wait_status(&b.id, Duration::from_secs(10), |s| {
                state(s).0 == pb::MailboxState::Active && message_of(s).contains("over the size limit")
            })
            .await;
        assert!(message_of(&s).contains("over the 100000-byte limit"), "{s:?}");
    }
    let imap_msg = message_of(&env.admin.status_of(&imap_box.id, pb::Direction::Inbound).await.unwrap());
    assert!(
        imap_msg.contains(&format!("imap:{}:", imap_box.id)) && imap_msg.contains("deskmail-oversized"),
        "{imap_msg}"
    );
    let got = env.take(INBOUND).await;
    assert_eq!(got.len(), 2, "only the small mails");
    assert!(got.iter().all(|g| g.body.len() < 1000));
    assert_eq!(stack.message_count(imap_user, "INBOX").unwrap(), 0);
    assert_eq!(stack.message_count(imap_user, "deskmail-oversized").unwrap(), 1);
    assert_eq!(stack.message_count(pop_user, "INBOX").unwrap(), 1, "POP3 leaves it where it is");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let evs: Vec<serde_json::Value> =
        env.take(&events).await.iter().map(|g| serde_json::from_slice(&g.body).unwrap()).collect();
    assert!(
        evs.iter().any(|e| e["event"] == "mail.oversized"
            && e["mailbox_id"] == pop_box.id.as_str()
            && e["size"].as_u64() > Some(limit)),
        "{evs:?}"
    );
    assert!(
        evs.iter().any(|e| e["mailbox_id"] == imap_box.id.as_str() && e["moved_to"] == "deskmail-oversized"),
        "{evs:?}"
    );
    assert_eq!(evs.len(), 2, "one event per oversized mail, not one per poll: {evs:?}");
    fetcher.terminate(Duration::from_secs(20)).unwrap();
}
