//! The daemons' side of configd against a real, in-process configd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use deskmail_configclient::{ConfigClient, ConfigWatcher};
use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use deskmail_testkit_configd::{Configd, DAEMON, Db};

fn client_for(configd: &Configd, token: &str) -> ConfigClient {
    let toml = format!("url = \"{}\"\ntoken = \"{token}\"\nconnect_timeout = \"2s\"\n", configd.url());
    let config: deskmail_config::ConfigServiceConfig = toml::from_str(&toml).unwrap();
    ConfigClient::new(&config).unwrap()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_changes_and_keeps_the_last_config_while_configd_is_away() {
    let mut configd = Configd::start(Db::Sqlite).await;
    let shutdown = CancellationToken::new();
    let watcher = ConfigWatcher::spawn(client_for(&configd, DAEMON), shutdown.clone());
    let first = watcher.first_snapshot(&shutdown).await.unwrap();
    assert!(watcher.is_connected());

    let admin = configd.admin().await;
    let queue = admin.create_queue(pb::Queue { name: "Support".into(), ..Default::default() }).await;
    wait_until("the new queue", || {
        watcher.current().is_some_and(|s| s.queues.iter().any(|q| q.id == queue.id))
    })
    .await;
    assert!(watcher.current().unwrap().revision > first.revision);

    configd.pause().await;
    wait_until("disconnect", || !watcher.is_connected()).await;
    // The last config stays in use.
    assert!(watcher.current().unwrap().queues.iter().any(|q| q.id == queue.id));

    configd.resume().await;
    wait_until("reconnect", || watcher.is_connected()).await;
    let admin = configd.admin().await;
    let second = admin.create_queue(pb::Queue { name: "Sales".into(), ..Default::default() }).await;
    wait_until("a change after the reconnect", || {
        watcher.current().is_some_and(|s| s.queues.iter().any(|q| q.id == second.id))
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_leases_and_rotated_refresh_tokens() {
    let configd = Configd::start(Db::Sqlite).await;
    let client = client_for(&configd, DAEMON);
    let admin = configd.admin().await;
    let queue = admin.create_queue(pb::Queue { name: "Support".into(), ..Default::default() }).await;
    let mut mailbox = deskmail_testkit_configd::imap_mailbox("support", &queue.id, 993, "");
    let inbound = mailbox.inbound.as_mut().unwrap();
    inbound.auth = pb::AuthMethod::Oauth2 as i32;
    inbound.oauth2 = Some(pb::OAuth2 {
        client_id: "deskmail".into(),
        client_secret: "s3cret".into(),
        refresh_token: "first-refresh-token".into(),
        token_url: "http://127.0.0.1:9/token".into(),
        ..Default::default()
    });
    let mailbox = admin.create_mailbox(mailbox).await;

    client
        .report_status(pb::ReportStatusRequest {
            mailbox_id: mailbox.id.clone(),
            direction: pb::Direction::Inbound as i32,
            state: pb::MailboxState::Error as i32,
            reason: pb::StatusReason::AuthFailed as i32,
            message: "NO [AUTHENTICATIONFAILED] Authentication failed.".into(),
            messages: 0,
            reporter: "test".into(),
        })
        .await
        .unwrap();
    let status = admin.status_of(&mailbox.id, pb::Direction::Inbound).await.unwrap();
    assert_eq!(status.status.unwrap().reason, pb::StatusReason::AuthFailed as i32);

    let leases = client.acquire_leases("holder-a", Duration::from_secs(30), 0).await.unwrap();
    assert_eq!(leases.iter().map(|l| l.mailbox_id.as_str()).collect::<Vec<_>>(), [mailbox.id.as_str()]);
    assert!(client.acquire_leases("holder-b", Duration::from_secs(30), 0).await.unwrap().is_empty());
    client.release_leases("holder-a", vec![]).await.unwrap();
    assert_eq!(client.acquire_leases("holder-b", Duration::from_secs(30), 0).await.unwrap().len(), 1);

    client.store_refresh_token(&mailbox.id, pb::Direction::Inbound, "rotated-refresh-token").await.unwrap();
    let mut stored = String::new();
    for _ in 0..100 {
        let snap = client.get_snapshot().await.unwrap();
        let m = snap.mailboxes.iter().find(|m| m.id == mailbox.id).unwrap();
        stored = m.inbound.as_ref().unwrap().oauth2.as_ref().unwrap().refresh_token.clone();
        if stored == "rotated-refresh-token" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored, "rotated-refresh-token");
    // Admins still never read it.
    let read =
        admin.mailboxes().get_mailbox(pb::GetRequest { id: mailbox.id.clone() }).await.unwrap().into_inner();
    let oauth = read.inbound.unwrap().oauth2.unwrap();
    assert!(oauth.refresh_token.is_empty() && oauth.has_refresh_token);

    let refused = client.store_refresh_token(&mailbox.id, pb::Direction::Unspecified, "x").await.unwrap_err();
    assert!(refused.to_string().contains("direction"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_named() {
    let configd = Configd::start(Db::Sqlite).await;
    let client = client_for(&configd, "not-the-daemon-token");
    let err = client.get_snapshot().await.unwrap_err();
    assert!(!err.is_unavailable());
    assert!(err.to_string().contains("Unauthenticated"), "{err}");
    assert!(!err.to_string().contains("not-the-daemon-token"), "{err}");
}
