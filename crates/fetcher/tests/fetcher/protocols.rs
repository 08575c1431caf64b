//! IMAP and POP3 over none, STARTTLS and TLS, in delete and keep mode: what reaches the
//! queue, with which properties, and what stays on the server.

use std::time::Duration;

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;

use crate::harness::{Env, INBOUND, by_id, mail, message_of, state};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imap_and_pop3_over_every_security_in_both_modes() {
    let cases = [
        ("imap-none@desk.test", pb::Protocol::Imap, pb::Security::None, false),
        ("imap-starttls@desk.test", pb::Protocol::Imap, pb::Security::Starttls, true),
        ("imap-tls@desk.test", pb::Protocol::Imap, pb::Security::Tls, false),
        ("pop3-none@desk.test", pb::Protocol::Pop3, pb::Security::None, true),
        ("pop3-starttls@desk.test", pb::Protocol::Pop3, pb::Security::Starttls, false),
        ("pop3-tls@desk.test", pb::Protocol::Pop3, pb::Security::Tls, true),
    ];
    let mut builder = MailStack::builder();
    for (user, ..) in &cases {
        builder = builder.user(user, "pw-secret-1");
    }
    let stack = builder.start().unwrap();
    let mut env = Env::new().await;
    let mut boxes = Vec::new();
    for (user, proto, security, keep) in cases {
        stack.deliver(user, &mail(user, &format!("first for {user}"))).unwrap();
        stack.deliver(user, &mail(user, &format!("second for {user}"))).unwrap();
        let mb = env.mailbox(&stack, user, "pw-secret-1", proto, security, |i| i.keep_on_server = keep).await;
        boxes.push((user, proto, keep, mb));
    }
    let mut fetcher = env.fetcher("f", "").await;
    env.wait_count(INBOUND, 12, Duration::from_secs(30)).await;
    for (user, _, _, mb) in &boxes {
        let s = env
            .wait_status(&mb.id, Duration::from_secs(10), |s| state(s).0 == pb::MailboxState::Active)
            .await;
        assert!(s.reporter.starts_with("deskmail-fetcher@"), "{user}: {s:?}");
    }
    // Another poll (interval 5 s; IMAP uses IDLE): keep mode must not publish again.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let got = env.take(INBOUND).await;
    assert_eq!(got.len(), 12, "{:?}", by_id(&got));
    assert!(by_id(&got).values().all(|n| *n == 1), "{:?}", by_id(&got));
    for (user, proto, keep, mb) in &boxes {
        let mine: Vec<_> = got.iter().filter(|g| g.headers.get("x-mailbox-id") == Some(&mb.id)).collect();
        assert_eq!(mine.len(), 2, "{user}");
        for g in &mine {
            let prefix = match proto {
                pb::Protocol::Pop3 => format!("pop3:{}:", mb.id),
                _ => format!("imap:{}:", mb.id),
            };
            assert!(g.message_id.starts_with(&prefix), "{user}: {}", g.message_id);
            assert_eq!(g.content_type, "message/rfc822");
            assert!(g.headers.contains_key("x-fetched-at"), "{:?}", g.headers);
            let body = String::from_utf8_lossy(&g.body);
            assert!(body.contains(&format!("for {user}")), "{user}: {body}");
            assert!(body.contains("\r\n"), "raw RFC 5322 bytes with CRLF");
        }
        let left = stack.message_count(user, "INBOX").unwrap();
        assert_eq!(left, if *keep { 2 } else { 0 }, "{user} keep={keep}");
    }
    // IMAP keep mode marks the mails \Seen.
    let maildir = stack.maildir("imap-starttls@desk.test").unwrap();
    let seen = std::fs::read_dir(maildir.join("cur"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(":2,S"))
        .count();
    assert_eq!(seen, 2, "both mails flagged \\Seen");
    // A mail arriving later is fetched once too, in both modes.
    for (user, ..) in &boxes {
        stack.deliver(user, &mail(user, "third")).unwrap();
    }
    env.wait_count(INBOUND, 6, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = env.take(INBOUND).await;
    assert_eq!(got.len(), 6, "{:?}", by_id(&got));
    let log = fetcher.log().join("\n");
    assert!(!log.contains("pw-secret-1"), "password in the log");
    let status = fetcher.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{}", fetcher.log().join("\n"));
    let last = env.admin.status_of(&boxes[0].3.id, pb::Direction::Inbound).await.unwrap();
    assert!(message_of(&last).contains("fetched"), "{last:?}");
}
