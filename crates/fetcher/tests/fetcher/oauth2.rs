//! XOAUTH2 against Dovecot's oauth2 passdb and the test kit's IdP: login, refresh after
//! expiry with the rotated refresh token stored at configd, and a revoked refresh token
//! reported as token_expired.

use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;

use crate::harness::{Env, INBOUND, mail, message_of, state};

async fn stored_refresh_token(env: &Env, mailbox_id: &str) -> String {
    let snapshot = env
        .configd
        .daemon()
        .await
        .watch()
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mb = snapshot.mailboxes.into_iter().find(|m| m.id == mailbox_id).unwrap();
    mb.inbound.unwrap().oauth2.unwrap().refresh_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xoauth2_logs_in_refreshes_after_expiry_and_reports_a_revoked_token() {
    let imap_user = "oauth-imap@desk.test";
    let pop_user = "oauth-pop@desk.test";
    let stack = MailStack::builder()
        .user(imap_user, "password-not-a-token")
        .user(pop_user, "password-not-a-token")
        .oauth2_idp()
        .start()
        .unwrap();
    let idp = stack.idp().unwrap();
    idp.set_ttl(2).unwrap();
    let mut env = Env::new().await;
    let oauth = |refresh: &str| pb::OAuth2 {
        client_id: "deskmail-test".into(),
        client_secret: "client-secret".into(),
        refresh_token: refresh.into(),
        token_url: idp.token_url(),
        scopes: vec!["https://mail.google.com/".into()],
        ..Default::default()
    };
    let imap_grant = idp.issue(imap_user, 2).unwrap();
    let pop_grant = idp.issue(pop_user, 2).unwrap();
    let with_oauth = |r: String| {
        move |i: &mut pb::InboundSettings| {
            i.auth = pb::AuthMethod::Oauth2 as i32;
            i.password.clear();
            i.oauth2 = Some(oauth(&r));
        }
    };
    stack.deliver(imap_user, &mail(imap_user, "imap one")).unwrap();
    stack.deliver(pop_user, &mail(pop_user, "pop one")).unwrap();
    let imap_box = env
        .mailbox(
            &stack,
            imap_user,
            "",
            pb::Protocol::Imap,
            pb::Security::Tls,
            with_oauth(imap_grant.refresh_token.clone()),
        )
        .await;
    let pop_box = env
        .mailbox(
            &stack,
            pop_user,
            "",
            pb::Protocol::Pop3,
            pb::Security::Tls,
            with_oauth(pop_grant.refresh_token.clone()),
        )
        .await;
    let revoked = env
        .mailbox(
            &stack,
            pop_user,
            "",
            pb::Protocol::Pop3,
            pb::Security::None,
            with_oauth("rt-revoked-long-ago".into()),
        )
        .await;
    let mut fetcher = env.fetcher("f", "").await;
    env.wait_count(INBOUND, 2, Duration::from_secs(20)).await;
    for b in [&imap_box, &pop_box] {
        env.wait_status(&b.id, Duration::from_secs(10), |s| state(s).0 == pb::MailboxState::Active).await;
    }
    // The IdP rotates refresh tokens: the fetcher stored the new one at configd.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_refresh_token(&env, &pop_box.id).await == pop_grant.refresh_token {
        assert!(Instant::now() < deadline, "rotated refresh token never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(stored_refresh_token(&env, &imap_box.id).await, imap_grant.refresh_token);

    // Access tokens live 2 s. POP3 logs in anew every poll (5 s), IMAP after a server restart.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stack.restart_dovecot().unwrap();
    stack.deliver(imap_user, &mail(imap_user, "imap two")).unwrap();
    stack.deliver(pop_user, &mail(pop_user, "pop two")).unwrap();
    env.wait_count(INBOUND, 4, Duration::from_secs(20)).await;
    let (_, token_requests) = idp.stats().unwrap();
    assert!(token_requests >= 4, "refreshed after expiry: {token_requests} token requests");

    let s = env
        .wait_status(&revoked.id, Duration::from_secs(10), |s| state(s).0 == pb::MailboxState::Error)
        .await;
    assert_eq!(state(&s).1, pb::StatusReason::TokenExpired, "{s:?}");
    assert!(message_of(&s).contains("invalid_grant"), "{s:?}");
    let log = fetcher.log().join("\n");
    for secret in [
        imap_grant.refresh_token.as_str(),
        &imap_grant.access_token,
        &pop_grant.refresh_token,
        "client-secret",
    ] {
        assert!(!log.contains(secret), "a secret in the log");
    }
    assert!(fetcher.terminate(Duration::from_secs(20)).unwrap().success());
}
