//! IDLE: with a poll interval of 10 minutes, a mail delivered through Postfix is on the queue
//! within 2 s, also while configd is away (the fetcher goes on with its last config).

use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;

use crate::harness::{Env, INBOUND, mail, smtp_send, state};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_brings_a_new_mail_within_two_seconds() {
    let user = "support@desk.test";
    let stack = MailStack::builder().user(user, "pw").start().unwrap();
    let mut env = Env::new().await;
    let mb = env
        .mailbox(&stack, user, "pw", pb::Protocol::Imap, pb::Security::Starttls, |i| {
            i.poll_interval_seconds = 600
        })
        .await;
    let mut fetcher = env.fetcher("f", "").await;
    env.wait_status(&mb.id, Duration::from_secs(15), |s| state(s).0 == pb::MailboxState::Active).await;
    for round in 0..3 {
        if round == 2 {
            env.configd.pause().await;
        }
        // Give the task a moment to enter IDLE after its poll.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        smtp_send(stack.smtp_port(), user, &mail(user, &format!("idle {round}")));
        env.wait_count(INBOUND, 1, Duration::from_secs(10)).await;
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(2), "round {round}: on the queue after {took:?}");
        let got = env.take(INBOUND).await;
        assert_eq!(got.len(), 1);
        assert!(String::from_utf8_lossy(&got[0].body).contains(&format!("Subject: idle {round}")));
    }
    env.configd.resume().await;
    assert!(fetcher.terminate(Duration::from_secs(20)).unwrap().success());
}
