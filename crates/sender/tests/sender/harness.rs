//! A sender under test with everything it talks to.

use std::path::Path;
use std::time::{Duration, Instant};

use deskmail_mailconn::{Credentials, Security, ServerEndpoint, TlsPolicy, imap};
use deskmail_mq::lapin::options::{QueueBindOptions, QueueDeclareOptions};
use deskmail_mq::lapin::types::FieldTable;
use deskmail_mq::{AmqpConfig, Consumer, ConsumerOptions, Delivery, OutgoingMessage, Publisher, Topology};
use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use deskmail_testkit::mail::MailStack;
use deskmail_testkit::rabbit::Vhost;
use deskmail_testkit_configd::{Configd, Db};
use futures::StreamExt;
use serde_json::Value;

pub const SUPPORT: &str = "support@desk.test";
pub const SUPPORT_PW: &str = "support-pass";
pub const CUSTOMER: &str = "customer@client.test";
pub const CUSTOMER_PW: &str = "customer-pass";

/// RabbitMQ vhost, configd, mail stack and a temp dir, plus a publisher and listeners.
pub struct Harness {
    pub vhost: Vhost,
    pub configd: Configd,
    pub stack: MailStack,
    pub dir: tempfile::TempDir,
    pub topology: Topology,
    /// Kept open: the publisher and listeners use it.
    _conn: deskmail_mq::lapin::Connection,
    pub publisher: Publisher,
    events: Option<Consumer>,
    dead: Option<Consumer>,
    /// Events read while looking for another job's.
    pending: Vec<Value>,
}

/// A sender running in this process.
pub struct Running {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), deskmail_sender::SenderError>>,
}

impl Running {
    /// SIGTERM's equivalent; waits for a clean stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.unwrap().unwrap().unwrap();
    }
}

/// Retry delays short enough for tests (one queue per delay).
pub const FAST_RETRIES: &str = "[retry]\ndelays = [\"1s\", \"1s\", \"1s\"]\n";

impl Harness {
    /// Everything, with the stack's users plus `extra_users`.
    pub async fn new(name: &str, extra_users: &[(&str, &str)]) -> Self {
        Self::build(name, extra_users, false, false).await
    }

    /// Like [`Harness::new`], on a RabbitMQ node of its own that the test can stop and start
    /// (`h.vhost.broker()`).
    pub async fn with_private_broker(name: &str) -> Self {
        Self::build(name, &[], false, true).await
    }

    /// Same, and the mail stack checks XOAUTH2 tokens against a stand-in IdP (`stack.idp()`).
    pub async fn with_oauth2_idp(name: &str) -> Self {
        Self::build(name, &[], true, false).await
    }

    async fn build(name: &str, extra_users: &[(&str, &str)], idp: bool, private_broker: bool) -> Self {
        let mut builder = MailStack::builder().user(SUPPORT, SUPPORT_PW).user(CUSTOMER, CUSTOMER_PW);
        for (u, p) in extra_users {
            builder = builder.user(u, p);
        }
        if idp {
            builder = builder.oauth2_idp();
        }
        init_logs();
        let stack = builder.start().unwrap();
        let vhost = if private_broker {
            Vhost::create_private(name).await.unwrap()
        } else {
            Vhost::create(name).unwrap()
        };
        let configd = Configd::start(Db::Sqlite).await;
        let amqp = AmqpConfig { url: vhost.amqp_url_parsed().unwrap(), ..AmqpConfig::default() };
        let shutdown = CancellationToken::new();
        let (conn, topology) = deskmail_mq::connect_and_declare(&amqp, "test", &shutdown).await.unwrap();
        let publisher = Publisher::new(&conn).await.unwrap();
        // Listen to every event from the start.
        let ch = conn.create_channel().await.unwrap();
        let q = "test.events";
        let args = {
            let mut a = FieldTable::default();
            a.insert(
                "x-queue-type".into(),
                deskmail_mq::lapin::types::AMQPValue::LongString("quorum".into()),
            );
            a
        };
        ch.queue_declare(q.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await
            .unwrap();
        ch.queue_bind(
            q.into(),
            topology.events_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = ch.close(200, "ok".into()).await;
        let events =
            Consumer::new(&conn, ConsumerOptions::new(q, topology.outbound_dead_letter())).await.unwrap();
        let dead = Consumer::new(
            &conn,
            ConsumerOptions::new(topology.outbound_dead_queue(), topology.outbound_dead_letter()),
        )
        .await
        .unwrap();
        Self {
            vhost,
            configd,
            stack,
            dir: tempfile::tempdir().unwrap(),
            topology,
            _conn: conn,
            publisher,
            events: Some(events),
            dead: Some(dead),
            pending: Vec::new(),
        }
    }

    /// The sender's TOML: this vhost, this configd, a SQLite sent log in the temp dir, `extra`.
    pub fn toml(&self, extra: &str) -> String {
        format!(
            "shutdown_grace = \"10s\"\n{extra}\n[amqp]\nurl = \"{}\"\n{}[sent_log]\nurl = \"sqlite://{}?mode=rwc\"\n[log]\nlevel = \"info\"\n",
            self.vhost.amqp_url(),
            self.configd.config_service_toml(),
            self.dir.path().join("sent.db").display()
        )
    }

    /// Writes the TOML to `sender.toml` in the temp dir and returns its path.
    pub fn write_config(&self, extra: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("sender.toml");
        std::fs::write(&path, self.toml(extra)).unwrap();
        path
    }

    /// Starts the sender in this process with `extra` config.
    pub async fn start_sender(&self, extra: &str) -> Running {
        let path = self.write_config(extra);
        let config: deskmail_sender::Config = deskmail_config::load(Some(&path)).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(deskmail_sender::run(config, shutdown.clone()));
        Running { shutdown, task }
    }

    /// A new connection for the publisher and the listeners, after [`Vhost::block`] closed
    /// the old one.
    pub async fn reconnect(&mut self) {
        let amqp = AmqpConfig { url: self.vhost.amqp_url_parsed().unwrap(), ..AmqpConfig::default() };
        let conn = deskmail_mq::connect(&amqp, "test").await.unwrap();
        self.publisher = Publisher::new(&conn).await.unwrap();
        let dl = self.topology.outbound_dead_letter();
        self.events =
            Some(Consumer::new(&conn, ConsumerOptions::new("test.events", dl.clone())).await.unwrap());
        self.dead = Some(
            Consumer::new(&conn, ConsumerOptions::new(self.topology.outbound_dead_queue(), dl))
                .await
                .unwrap(),
        );
        self._conn = conn;
    }

    /// Publishes a job as an integrator would (persistent, confirmed, message_id = job_id).
    pub async fn publish(&self, job: &Value) {
        let id = job["job_id"].as_str().unwrap_or("no-id").to_owned();
        self.publish_raw(serde_json::to_vec(job).unwrap(), &id).await;
    }

    /// Publishes any bytes as a job.
    pub async fn publish_raw(&self, body: Vec<u8>, message_id: &str) {
        let msg = OutgoingMessage::new(self.topology.outbound_exchange(), "mail.send", body)
            .content_type("application/json")
            .message_id(message_id);
        self.publisher.publish_confirmed(msg).await.unwrap();
    }

    /// The next event on `<prefix>.events`.
    pub async fn next_event(&mut self, within: Duration) -> Value {
        let c = self.events.as_mut().unwrap();
        let d = next(c, within, "event").await;
        c.acker().ack(d.delivery_tag()).await.unwrap();
        serde_json::from_slice(d.body()).unwrap()
    }

    /// The next event for `job_id` (others are kept for later calls).
    pub async fn event_for(&mut self, job_id: &str, within: Duration) -> Value {
        if let Some(i) = self.pending.iter().position(|e| e["job_id"] == job_id) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.next_event(left).await;
            if e["job_id"] == job_id {
                return e;
            }
            self.pending.push(e);
        }
    }

    /// The next dead-lettered job: (message_id, x-deskmail-error, body).
    pub async fn next_dead(&mut self, within: Duration) -> (String, String, Vec<u8>) {
        let c = self.dead.as_mut().unwrap();
        let d = next(c, within, "dead letter").await;
        c.acker().ack(d.delivery_tag()).await.unwrap();
        (
            d.message_id().unwrap_or("").to_owned(),
            d.header_str("x-deskmail-error").unwrap_or("").to_owned(),
            d.body().to_vec(),
        )
    }

    /// Creates an outbound-only box on the kit's Postfix.
    pub async fn create_box(&self, name: &str, outbound: pb::OutboundSettings) -> pb::Mailbox {
        self.configd
            .admin()
            .await
            .create_mailbox(pb::Mailbox { name: name.into(), outbound: Some(outbound), ..Default::default() })
            .await
    }

    /// Sets `settings.default_outbound_mailbox_id` (and the ticket hook when given).
    pub async fn set_default_box(&self, id: &str) {
        let mut settings = self.configd.admin().await.settings();
        settings
            .update_settings(pb::UpdateSettingsRequest {
                settings: Some(pb::Settings { default_outbound_mailbox_id: id.into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["default_outbound_mailbox_id".into()],
                }),
            })
            .await
            .unwrap();
    }

    /// Waits until `user`'s INBOX holds `n` messages.
    pub async fn wait_for_mail(&self, user: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let have = self.stack.message_count(user, "INBOX").unwrap();
            if have >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{user} has {have} of {n} mails after {within:?}\n{}",
                self.stack.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every message in `user`'s INBOX, read over IMAPS (certificate checked against the kit's CA).
    pub async fn fetch_all(&self, user: &str, password: &str) -> Vec<Vec<u8>> {
        let ep = ServerEndpoint::new("127.0.0.1", self.stack.imaps_port(), Security::Tls)
            .with_tls(TlsPolicy::with_extra_ca(self.stack.ca_pem()));
        let mut s = imap::login(imap::connect(&ep).await.unwrap(), &Credentials::password(user, password))
            .await
            .unwrap();
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

    /// A status view of a box from configd.
    pub async fn status(&self, mailbox_id: &str) -> Option<pb::MailboxStatusView> {
        self.configd.admin().await.status_of(mailbox_id, pb::Direction::Outbound).await
    }

    /// Polls configd until the box's status is `state`.
    pub async fn wait_status(
        &self,
        mailbox_id: &str,
        state: pb::MailboxState,
        within: Duration,
    ) -> pb::MailboxStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.status(mailbox_id).await
                && let Some(s) = v.status
                && s.state == state as i32
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "box {mailbox_id} never reached {state:?}: {:?}",
                self.status(mailbox_id).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn next(c: &mut Consumer, within: Duration, what: &str) -> Delivery {
    match tokio::time::timeout(within, c.next_delivery()).await {
        Ok(Some(Ok(d))) => d,
        Ok(other) => panic!("{what}: consumer ended: {other:?}"),
        Err(_) => panic!("no {what} within {within:?}"),
    }
}

/// A box on the kit's plain SMTP port without login (mail to local domains only).
pub fn plain_box(stack: &MailStack, from: &str) -> pb::OutboundSettings {
    pb::OutboundSettings {
        host: "127.0.0.1".into(),
        port: u32::from(stack.smtp_port()),
        security: pb::Security::None as i32,
        auth: pb::AuthMethod::None as i32,
        from_address: from.into(),
        ..Default::default()
    }
}

/// A box on submission (STARTTLS) or SMTPS (TLS) logging in as support@desk.test.
pub fn password_box(stack: &MailStack, security: pb::Security) -> pb::OutboundSettings {
    let port = if security == pb::Security::Tls { stack.smtps_port() } else { stack.submission_port() };
    pb::OutboundSettings {
        host: "127.0.0.1".into(),
        port: u32::from(port),
        security: security as i32,
        auth: pb::AuthMethod::Password as i32,
        username: SUPPORT.into(),
        password: SUPPORT_PW.into(),
        from_address: SUPPORT.into(),
        allow_invalid_certs: true,
        ..Default::default()
    }
}

/// Parses a raw mail.
pub fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default().parse(raw).unwrap()
}

/// The job id header of a raw mail.
pub fn job_id_of(raw: &[u8]) -> Option<String> {
    parse(raw).header_raw("X-Deskmail-Job-Id").map(|v| v.trim().to_owned())
}

/// Path of this crate, for scripts.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The sender's logs in the test output (shown for failed tests).
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,deskmail_sender=debug,lapin=warn,sea_orm=warn,sqlx=warn",
            ))
            .with_test_writer()
            .try_init();
    });
}

/// A header value decoded as a mail reader would (RFC 2047 encoded words).
pub fn decoded(raw_value: &str) -> String {
    let mail = format!("Subject: {}\r\n\r\n", raw_value.trim());
    parse(mail.as_bytes()).subject().unwrap_or_default().to_owned()
}
