//! Two fetchers over 20 mailboxes: the leases split them, each box is polled by one, and
//! when one fetcher is killed the other takes its boxes once their leases expire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;

use crate::harness::{Env, INBOUND, by_id, mail};

async fn reporters(env: &Env, ids: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for id in ids {
        if let Some(s) = env.admin.status_of(id, pb::Direction::Inbound).await {
            out.insert(id.clone(), s.reporter);
        }
    }
    out
}

fn pid_of(reporter: &str) -> Option<u32> {
    reporter.rsplit(':').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_fetchers_split_twenty_boxes_and_one_takes_over() {
    let users: Vec<String> = (0..20).map(|i| format!("box{i}@desk.test")).collect();
    let mut builder = MailStack::builder();
    for u in &users {
        builder = builder.user(u, "pw");
    }
    let stack = builder.start().unwrap();
    let mut env = Env::new().await;
    let mut ids = Vec::new();
    for u in &users {
        ids.push(env.mailbox(&stack, u, "pw", pb::Protocol::Imap, pb::Security::None, |_| {}).await.id);
    }
    let mut a = env.fetcher("a", "").await;
    let b = env.fetcher("b", "").await;
    let (pa, pb_) = (a.pid(), b.pid());
    // The fair share settles at 10 each (the first one gives back its excess on renewal).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = reporters(&env, &ids).await;
        let on_a = r.values().filter(|h| pid_of(h) == Some(pa)).count();
        let on_b = r.values().filter(|h| pid_of(h) == Some(pb_)).count();
        if on_a == 10 && on_b == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "split {on_a}/{on_b}: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the hand-over finish (a box given back stops at once), then one mail per box.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for u in &users {
        stack.deliver(u, &mail(u, "round one")).unwrap();
    }
    env.wait_count(INBOUND, 20, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = env.take(INBOUND).await;
    assert_eq!(got.len(), 20, "each box polled by exactly one fetcher: {:?}", by_id(&got));
    let per_box: BTreeMap<&str, usize> = got.iter().fold(BTreeMap::new(), |mut m, g| {
        *m.entry(g.headers["x-mailbox-id"].as_str()).or_insert(0) += 1;
        m
    });
    assert!(per_box.len() == 20 && per_box.values().all(|n| *n == 1), "{per_box:?}");

    // kill -9 one; the other takes its boxes within the lease TTL (5 s) plus a renewal.
    let killed_at = Instant::now();
    a.kill().unwrap();
    for u in &users {
        stack.deliver(u, &mail(u, "round two")).unwrap();
    }
    env.wait_count(INBOUND, 20, Duration::from_secs(15)).await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(9), "took over after {took:?}");
    // The status report follows the publish: give the last one a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = reporters(&env, &ids).await;
        if r.values().all(|h| pid_of(h) == Some(pb_)) {
            break;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(b);
}
