//! Fetch leases: two fetchers split the mailboxes, never share one, and take over.

use std::collections::HashSet;

use deskmail_proto::v1 as pb;

use crate::harness::*;

async fn two_holders_split_twenty_mailboxes(db: Db) {
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let q = queues(c.clone(), ADMIN)
        .create_queue(pb::CreateQueueRequest {
            queue: Some(pb::Queue { name: "Q".into(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut mbx = mailboxes(c.clone(), ADMIN);
    for n in 0..20 {
        mbx.create_mailbox(pb::CreateMailboxRequest {
            mailbox: Some(imap_mailbox(&format!("m{n}"), &q.id, 993, "pw")),
        })
        .await
        .unwrap();
    }
    let mut l = leases(c.clone(), DAEMON);
    let acquire =
        |holder: &'static str| pb::AcquireLeasesRequest { holder: holder.into(), ttl_seconds: 5, max: 0 };
    let a1: HashSet<String> = l
        .acquire_leases(acquire("a"))
        .await
        .unwrap()
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.mailbox_id)
        .collect();
    assert_eq!(a1.len(), 20, "alone, a fetcher takes every box");
    let b1: HashSet<String> = l
        .acquire_leases(acquire("b"))
        .await
        .unwrap()
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.mailbox_id)
        .collect();
    assert!(b1.is_empty(), "all held by a: {b1:?}");
    // a renews and gives back what is above its share; b then takes it.
    let a2: HashSet<String> = l
        .acquire_leases(acquire("a"))
        .await
        .unwrap()
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.mailbox_id)
        .collect();
    let b2: HashSet<String> = l
        .acquire_leases(acquire("b"))
        .await
        .unwrap()
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.mailbox_id)
        .collect();
    assert_eq!((a2.len(), b2.len()), (10, 10));
    assert!(a2.is_disjoint(&b2), "never the same box twice");
    // a dies: after its leases expire (ttl 5 s), b takes them all.
    tokio::time::sleep(std::time::Duration::from_millis(5200)).await;
    let b3: HashSet<String> = l
        .acquire_leases(acquire("b"))
        .await
        .unwrap()
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.mailbox_id)
        .collect();
    assert_eq!(b3.len(), 20);
    l.release_leases(pb::ReleaseLeasesRequest { holder: "b".into(), mailbox_ids: vec![] }).await.unwrap();
    let a4 = l.acquire_leases(acquire("a")).await.unwrap().into_inner().leases;
    assert_eq!(a4.len(), 20, "released leases are free at once");
    let err = l
        .acquire_leases(pb::AcquireLeasesRequest { holder: String::new(), ttl_seconds: 1, max: 0 })
        .await
        .unwrap_err();
    assert_eq!(violations(&err).len(), 1);
    configd.stop().await;
}

crate::on_both_stores!(two_holders_split_twenty_mailboxes);
