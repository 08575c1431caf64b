//! Test connection and send-test against the test kit's real Dovecot and Postfix.

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;

use crate::harness::*;

fn outbound(port: u16, security: pb::Security, password: &str) -> pb::OutboundSettings {
    pb::OutboundSettings {
        host: "127.0.0.1".into(),
        port: u32::from(port),
        security: security as i32,
        auth: pb::AuthMethod::Password as i32,
        username: "support@desk.test".into(),
        password: password.into(),
        from_address: "support@desk.test".into(),
        allow_invalid_certs: true,
        ..Default::default()
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn test_one(c: &tonic::transport::Channel, mailbox: pb::Mailbox) -> pb::TestResult {
    let reply = mailboxes(c.clone(), ADMIN)
        .test_connection(pb::TestConnectionRequest {
            id: String::new(),
            mailbox: Some(mailbox),
            direction: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.results.len(), 1);
    reply.results.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_tests_report_the_design_reasons() {
    let stack = MailStack::builder().user("support@desk.test", "support-pass").start().unwrap();
    stack.deliver("support@desk.test", b"Subject: one\r\n\r\nhi\r\n").unwrap();
    let configd = Configd::start(Db::Sqlite).await;
    let c = configd.channel().await;
    let q = queues(c.clone(), ADMIN)
        .create_queue(pb::CreateQueueRequest {
            queue: Some(pb::Queue { name: "Q".into(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner();

    // A stored mailbox, tested by name, with its stored password.
    let mut stored = imap_mailbox("support", &q.id, stack.imaps_port(), "support-pass");
    stored.outbound = Some(outbound(stack.submission_port(), pb::Security::Starttls, "support-pass"));
    mailboxes(c.clone(), ADMIN)
        .create_mailbox(pb::CreateMailboxRequest { mailbox: Some(stored) })
        .await
        .unwrap();
    let reply = mailboxes(c.clone(), ADMIN)
        .test_connection(pb::TestConnectionRequest { id: "support".into(), mailbox: None, direction: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.results.len(), 2, "{reply:?}");
    for r in &reply.results {
        assert!(r.ok, "{r:?}");
    }
    assert_eq!(reply.results[0].message_count, 1);

    let ok = test_one(&c, imap_mailbox("x", &q.id, stack.imaps_port(), "support-pass")).await;
    assert!(ok.ok, "{ok:?}");
    let wrong = test_one(&c, imap_mailbox("x", &q.id, stack.imaps_port(), "wrong-pass")).await;
    assert_eq!(wrong.reason, pb::StatusReason::AuthFailed as i32, "{wrong:?}");
    assert!(!wrong.message.contains("wrong-pass"));
    let closed = test_one(&c, imap_mailbox("x", &q.id, closed_port(), "support-pass")).await;
    assert_eq!(closed.reason, pb::StatusReason::ConnectFailed as i32, "{closed:?}");
    let plain = test_one(&c, imap_mailbox("x", &q.id, stack.imap_port(), "support-pass")).await;
    assert_eq!(plain.reason, pb::StatusReason::TlsFailed as i32, "TLS asked on the plain port: {plain:?}");

    let smtp = |port, security, pw: &str| pb::Mailbox {
        name: "o".into(),
        outbound: Some(outbound(port, security, pw)),
        ..Default::default()
    };
    assert!(test_one(&c, smtp(stack.smtps_port(), pb::Security::Tls, "support-pass")).await.ok);
    let r = test_one(&c, smtp(stack.smtps_port(), pb::Security::Tls, "nope")).await;
    assert_eq!(r.reason, pb::StatusReason::AuthFailed as i32, "{r:?}");
    let r = test_one(&c, smtp(closed_port(), pb::Security::Tls, "support-pass")).await;
    assert_eq!(r.reason, pb::StatusReason::ConnectFailed as i32, "{r:?}");
    let r = test_one(&c, smtp(stack.smtp_port(), pb::Security::Tls, "support-pass")).await;
    assert_eq!(r.reason, pb::StatusReason::TlsFailed as i32, "{r:?}");

    // Send a test mail through the stored box; it arrives.
    let sent = mailboxes(c.clone(), ADMIN)
        .send_test_email(pb::SendTestEmailRequest {
            id: "support".into(),
            to: "support@desk.test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(sent.ok, "{sent:?}");
    for _ in 0..100 {
        if stack.message_count("support@desk.test", "INBOX").unwrap() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stack.message_count("support@desk.test", "INBOX").unwrap(), 2);
    configd.stop().await;
}

/// A token endpoint for one test: answers every request with `body` and `status`.
/// (An OAuth2 provider cannot run here; the mail servers it guards are the real Dovecot and
/// Postfix, which accept the access token as XOAUTH2.)
async fn token_endpoint(status: &'static str, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = socket.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    format!("http://{addr}/token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_boxes_refresh_their_token_and_log_in_with_xoauth2() {
    let stack = MailStack::builder().user("support@desk.test", "support-pass").start().unwrap();
    let configd = Configd::start(Db::Sqlite).await;
    let c = configd.channel().await;
    let q = queues(c.clone(), ADMIN)
        .create_queue(pb::CreateQueueRequest {
            queue: Some(pb::Queue { name: "Q".into(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner();
    // The kit's Dovecot takes the user's password as its XOAUTH2 bearer token.
    let good = token_endpoint(
        "200 OK",
        r#"{"access_token":"support-pass","token_type":"Bearer","expires_in":3600}"#,
    )
    .await;
    let revoked = token_endpoint(
        "400 Bad Request",
        r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
    )
    .await;
    let oauth_box = |token_url: &str| {
        let mut m = imap_mailbox("oauth", &q.id, stack.imaps_port(), "");
        let i = m.inbound.as_mut().unwrap();
        i.auth = pb::AuthMethod::Oauth2 as i32;
        i.oauth2 = Some(pb::OAuth2 {
            client_id: "deskmail".into(),
            client_secret: "app-secret".into(),
            refresh_token: "refresh-1".into(),
            token_url: token_url.into(),
            ..Default::default()
        });
        m
    };
    let ok = test_one(&c, oauth_box(&good)).await;
    assert!(ok.ok, "{ok:?}");
    let expired = test_one(&c, oauth_box(&revoked)).await;
    assert_eq!(expired.reason, pb::StatusReason::TokenExpired as i32, "{expired:?}");
    assert!(expired.message.contains("invalid_grant"), "{expired:?}");
    assert!(!expired.message.contains("refresh-1") && !expired.message.contains("app-secret"));
    configd.stop().await;
}
