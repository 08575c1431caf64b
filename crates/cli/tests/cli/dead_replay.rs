//! Issue 7: "`deskmailctl dead replay` puts a dead-lettered job back and it is delivered after
//! the box is fixed", with the real sender, Postfix and Dovecot.

use std::time::{Duration, Instant};

use deskmail_mailconn::{Credentials, Security, ServerEndpoint, TlsPolicy, imap};
use deskmail_mq::lapin::options::QueueDeclareOptions;
use deskmail_mq::lapin::types::FieldTable;
use deskmail_mq::{AmqpConfig, OutgoingMessage, Publisher};
use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use deskmail_testkit::mail::MailStack;
use deskmail_testkit::rabbit::Vhost;
use deskmail_testkit_configd::{Configd, Db};
use futures::StreamExt;
use serde_json::{Value, json};

use super::run_env;

const CUSTOMER: &str = "customer@client.test";
const CUSTOMER_PW: &str = "customer-pass";
const SUPPORT: &str = "support@desk.test";
const T: Duration = Duration::from_secs(60);

/// Every message in `user`'s INBOX, read over IMAPS (certificate checked against the kit's CA).
async fn fetch_all(stack: &MailStack, user: &str, password: &str) -> Vec<Vec<u8>> {
    let ep = ServerEndpoint::new("127.0.0.1", stack.imaps_port(), Security::Tls)
        .with_tls(TlsPolicy::with_extra_ca(stack.ca_pem()));
    let mut s =
        imap::login(imap::connect(&ep).await.unwrap(), &Credentials::password(user, password)).await.unwrap();
    let mailbox = s.select("INBOX").await.unwrap();
    let mut out = Vec::new();
    if mailbox.exists > 0 {
        let mut stream = s.fetch("1:*", "RFC822").await.unwrap();
        while let Some(m) = stream.next().await {
            if let Some(body) = m.unwrap().body() {
                out.push(body.to_vec());
            }
        }
    }
    let _ = s.logout().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_lettered_job_is_delivered_once_after_the_box_is_fixed_and_it_is_replayed() {
    let stack =
        MailStack::builder().user(SUPPORT, "support-pass").user(CUSTOMER, CUSTOMER_PW).start().unwrap();
    let vhost = Vhost::create("cli-replay-sender").unwrap();
    let configd = Configd::start(Db::Sqlite).await;
    let amqp = AmqpConfig { url: vhost.amqp_url_parsed().unwrap(), ..AmqpConfig::default() };
    let (conn, topology) =
        deskmail_mq::connect_and_declare(&amqp, "test", &CancellationToken::new()).await.unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();

    // The box's server refuses the recipient for good: the job is dead-lettered.
    stack.set_recipient_answer(CUSTOMER, "550 5.1.1 no such user").unwrap();
    let outbound = pb::OutboundSettings {
        host: "127.0.0.1".into(),
        port: u32::from(stack.smtp_port()),
        security: pb::Security::None as i32,
        auth: pb::AuthMethod::None as i32,
        from_address: SUPPORT.into(),
        ..Default::default()
    };
    let relay = configd
        .admin()
        .await
        .create_mailbox(pb::Mailbox { name: "relay".into(), outbound: Some(outbound), ..Default::default() })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "shutdown_grace = \"10s\"\n[amqp]\nurl = \"{}\"\n{}[sent_log]\nurl = \"sqlite://{}?mode=rwc\"\n[log]\nlevel = \"warn\"\n",
        vhost.amqp_url(),
        configd.config_service_toml(),
        dir.path().join("sent.db").display()
    );
    let path = dir.path().join("sender.toml");
    std::fs::write(&path, toml).unwrap();
    let config: deskmail_sender::Config = deskmail_config::load(Some(&path)).unwrap();
    let shutdown = CancellationToken::new();
    let sender = tokio::spawn(deskmail_sender::run(config, shutdown.clone()));

    let job = json!({"job_id": "replay-1", "mailbox_id": relay.id, "to": [CUSTOMER],
                     "subject": "Your ticket", "text": "We fixed it."});
    let msg =
        OutgoingMessage::new(topology.outbound_exchange(), "mail.send", serde_json::to_vec(&job).unwrap())
            .content_type("application/json")
            .message_id("replay-1");
    publisher.publish_confirmed(msg).await.unwrap();

    let url = vhost.amqp_url();
    let env = [("DESKMAILCTL_AMQP__URL", url.as_str())];
    let deadline = Instant::now() + T;
    let dead = loop {
        let r = run_env(None, &["dead", "list", "--queue", "outbound", "-o", "json"], None, &env).await;
        let list: Value = serde_json::from_str(&r.success()).unwrap();
        if !list.as_array().unwrap().is_empty() {
            break list;
        }
        assert!(Instant::now() < deadline, "the job was not dead-lettered\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(dead[0]["message_id"], "replay-1", "{dead}");
    assert!(dead[0]["reason"].as_str().unwrap().contains("550 5.1.1"), "{dead}");
    assert!(dead[0]["dead_at"].is_string(), "the sender stamps x-deskmail-dead-at: {dead}");
    assert_eq!(stack.message_count(CUSTOMER, "INBOX").unwrap(), 0);

    // Fix the box, replay.
    stack.clear_recipient_answer(CUSTOMER).unwrap();
    let r = run_env(None, &["dead", "replay", "replay-1"], None, &env).await.success();
    assert!(r.contains("replayed"), "{r}");

    let deadline = Instant::now() + T;
    while stack.message_count(CUSTOMER, "INBOX").unwrap() < 1 {
        assert!(Instant::now() < deadline, "the replayed job was not delivered\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), sender).await.unwrap().unwrap().unwrap();

    let mails = fetch_all(&stack, CUSTOMER, CUSTOMER_PW).await;
    assert_eq!(mails.len(), 1, "delivered exactly once");
    let text = String::from_utf8_lossy(&mails[0]);
    assert!(text.contains("Subject: Your ticket") && text.contains("We fixed it."), "{text}");
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    for q in [topology.outbound_dead_queue(), topology.outbound_queue()] {
        let n = ch
            .queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count();
        assert_eq!(n, 0, "{q} is empty");
    }
    let left = run_env(None, &["dead", "list"], None, &env).await.success();
    assert_eq!(left, "No dead letters.\n");
}
