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
