//! A 1,000-mail mailbox drained completely, with a `kill -9` of the fetcher in the middle and
//! a restart: every mail on the queue at least once, none missing.

use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;

use crate::harness::{Env, INBOUND, by_id, mail};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_mails_drained_across_a_kill_9() {
    let user = "support@desk.test";
    let stack = MailStack::builder().user(user, "pw").start().unwrap();
    let mut env = Env::new().await;
    let n = 1000;
    let mails: Vec<Vec<u8>> = (0..n).map(|i| mail(user, &format!("mail {i}"))).collect();
    stack.deliver_many(user, &mails).unwrap();
    let mb = env.mailbox(&stack, user, "pw", pb::Protocol::Imap, pb::Security::None, |_| {}).await;
    let mut first = env.fetcher("first", "max_messages_per_poll = 200").await;
    env.wait_count(INBOUND, 150, Duration::from_secs(30)).await;
    first.kill().unwrap();
    let at_kill = env.count(INBOUND).await as usize;
    assert!(at_kill < n, "killed before the end of the drain ({at_kill})");
    // Released by nobody: the lease runs out (5 s) and the new process takes the box.
    let mut second = env.fetcher("second", "max_messages_per_poll = 200").await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut got = Vec::new();
    loop {
        got.extend(env.take(INBOUND).await);
        if by_id(&got).len() >= n && stack.message_count(user, "INBOX").unwrap() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} after the restart:\n{}",
            by_id(&got).len(),
            second.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids = by_id(&got);
    assert_eq!(ids.len(), n);
    for i in 0..n {
        assert!(
            got.iter().any(|g| String::from_utf8_lossy(&g.body).contains(&format!("Subject: mail {i}\r\n"))),
            "mail {i} missing"
        );
    }
    assert!(ids.keys().all(|k| k.starts_with(&format!("imap:{}:", mb.id))));
    second.terminate(Duration::from_secs(20)).unwrap();
}
