//! What every fetcher test needs: a configd of its own (in-process, PostgreSQL), a RabbitMQ vhost,
//! a queue in configd, fetcher processes with a written config, and helpers to read the
//! inbound queue and the mailbox status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deskmail_mq::lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use deskmail_mq::lapin::types::{AMQPValue, FieldTable};
use deskmail_mq::lapin::{Channel, Connection, ConnectionProperties};
use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;
use deskmail_testkit::process::DaemonProcess;
use deskmail_testkit::rabbit::Vhost;
use deskmail_testkit_configd::{Admin, Configd, Db};

pub const INBOUND: &str = "deskmail.inbound.raw";

/// A message taken from a queue.
#[derive(Debug, Clone)]
pub struct Got {
    pub message_id: String,
    pub content_type: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

pub struct Env {
    pub configd: Configd,
    pub admin: Admin,
    pub vhost: Vhost,
    pub queue_id: String,
    pub dir: tempfile::TempDir,
    conn: Option<Connection>,
}

impl Env {
    pub async fn new() -> Self {
        Self::on(Vhost::create("fetcher").unwrap()).await
    }

    /// Like [`Env::new`], on a RabbitMQ node of its own that the test can stop and start
    /// (`env.vhost.broker()`).
    pub async fn with_private_broker() -> Self {
        Self::on(Vhost::create_private("fetcher").await.unwrap()).await
    }

    async fn on(vhost: Vhost) -> Self {
        // PostgreSQL: configd's SQLite store answers "database is locked" under the
        // concurrent status reports and lease renewals of these tests.
        let configd = Configd::start(Db::Postgres).await;
        let admin = configd.admin().await;
        let queue =
            admin.create_queue(pb::Queue { name: deskmail_testkit::unique("q"), ..Default::default() }).await;
        Self { configd, admin, vhost, queue_id: queue.id, dir: tempfile::tempdir().unwrap(), conn: None }
    }

    /// Writes a fetcher config with `fetch` as the body of its `[fetch]` section.
    pub fn config_file(&self, name: &str, fetch: &str) -> PathBuf {
        let toml = format!(
            "shutdown_grace = \"10s\"\n[log]\nlevel = \"info,deskmail_fetcher=debug\"\n\
             [amqp]\nurl = \"{}\"\n{}\n[fetch]\nlease_ttl = \"5s\"\nretry_initial = \"300ms\"\n\
             retry_max = \"3s\"\ncommand_timeout = \"10s\"\n{fetch}\n",
            self.vhost.amqp_url(),
            self.configd.config_service_toml()
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Starts a fetcher process and waits for `Ready.`.
    pub async fn fetcher(&self, name: &str, fetch: &str) -> DaemonProcess {
        let path = self.config_file(name, fetch);
        let mut p = DaemonProcess::spawn(bin(), &["--config", path.to_str().unwrap()], &[]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.log().iter().any(|l| l.contains("Ready.")) {
            assert!(Instant::now() < deadline, "fetcher not ready:\n{}", p.log().join("\n"));
            if let Ok(Some(status)) = p.wait(Duration::ZERO).map(Some) {
                panic!("fetcher exited ({status}):\n{}", p.log().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    async fn channel(&mut self) -> Channel {
        if self.conn.as_ref().is_none_or(|c| !c.status().connected()) {
            self.conn = Some(
                Connection::connect(&self.vhost.amqp_url(), ConnectionProperties::default()).await.unwrap(),
            );
        }
        self.conn.as_ref().unwrap().create_channel().await.unwrap()
    }

    /// Messages in `queue` now (passive declare: exact).
    pub async fn count(&mut self, queue: &str) -> u32 {
        let ch = self.channel().await;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = ch.close(200, "done".into()).await;
        q.message_count()
    }

    /// Waits until `queue` holds at least `n` messages; returns how long it took.
    pub async fn wait_count(&mut self, queue: &str, n: u32, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let c = self.count(queue).await;
            if c >= n {
                return start.elapsed();
            }
            assert!(start.elapsed() < timeout, "{queue} holds {c} messages, not {n}, after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Takes every message now in `queue`.
    pub async fn take(&mut self, queue: &str) -> Vec<Got> {
        let ch = self.channel().await;
        let mut out = Vec::new();
        while let Some(m) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            let p = &m.delivery.properties;
            let mut headers = BTreeMap::new();
            if let Some(h) = p.headers() {
                for (k, v) in h.inner() {
                    let v = match v {
                        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => format!("{other:?}"),
                    };
                    headers.insert(k.to_string(), v);
                }
            }
            out.push(Got {
                message_id: p.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default(),
                content_type: p.content_type().as_ref().map(|s| s.to_string()).unwrap_or_default(),
                headers,
                body: m.delivery.data.clone(),
            });
        }
        let _ = ch.close(200, "done".into()).await;
        out
    }

    /// A queue bound to `<prefix>.events` for `routing_key`.
    pub async fn bind_events(&mut self, routing_key: &str) -> String {
        let ch = self.channel().await;
        // Declared as the daemons do (idempotent), so the binding can come first.
        deskmail_mq::Topology::new("deskmail").unwrap().declare(&ch).await.unwrap();
        let name = deskmail_testkit::unique("events");
        ch.queue_declare(name.as_str().into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            name.as_str().into(),
            "deskmail.events".into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = ch.close(200, "done".into()).await;
        name
    }

    /// Creates an inbound mailbox for `user` on `stack`.
    pub async fn mailbox(
        &self,
        stack: &MailStack,
        user: &str,
        password: &str,
        proto: pb::Protocol,
        security: pb::Security,
        edit: impl FnOnce(&mut pb::InboundSettings),
    ) -> pb::Mailbox {
        let port = match (proto, security) {
            (pb::Protocol::Pop3, pb::Security::Tls) => stack.pop3s_port(),
            (pb::Protocol::Pop3, _) => stack.pop3_port(),
            (_, pb::Security::Tls) => stack.imaps_port(),
            _ => stack.imap_port(),
        };
        let mut mb = deskmail_testkit_configd::imap_mailbox(
            &deskmail_testkit::unique("box"),
            &self.queue_id,
            port,
            password,
        );
        let inbound = mb.inbound.as_mut().unwrap();
        inbound.protocol = proto as i32;
        inbound.security = security as i32;
        inbound.username = user.to_owned();
        inbound.poll_interval_seconds = 5;
        edit(inbound);
        self.admin.create_mailbox(mb).await
    }

    /// Waits until the box's inbound status satisfies `pred`.
    pub async fn wait_status(
        &self,
        mailbox_id: &str,
        timeout: Duration,
        pred: impl Fn(&pb::MailboxStatusView) -> bool,
    ) -> pb::MailboxStatusView {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.admin.status_of(mailbox_id, pb::Direction::Inbound).await;
            if let Some(s) = &s
                && pred(s)
            {
                return s.clone();
            }
            assert!(Instant::now() < deadline, "status of {mailbox_id} never matched; last: {s:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn state(s: &pb::MailboxStatusView) -> (pb::MailboxState, pb::StatusReason) {
    let st = s.status.as_ref().unwrap();
    (
        pb::MailboxState::try_from(st.state).unwrap_or_default(),
        pb::StatusReason::try_from(st.reason).unwrap_or_default(),
    )
}

pub fn message_of(s: &pb::MailboxStatusView) -> String {
    s.status.as_ref().map(|st| st.message.clone()).unwrap_or_default()
}

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_deskmail-fetcher"))
}

/// A small mail with a recognisable subject.
pub fn mail(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: customer@client.test\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\n\r\nHello, {subject}.\r\n",
        deskmail_testkit::unique("m")
    )
    .into_bytes()
}

/// Sends one mail through Postfix's SMTP port (plain, local domain: no AUTH needed).
pub fn smtp_send(port: u16, to: &str, raw: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let expect = |code: &str, reader: &mut BufReader<std::net::TcpStream>| loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "SMTP wanted {code}, got {line:?}");
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    expect("220", &mut reader);
    for (cmd, code) in [
        ("EHLO test.local".to_owned(), "250"),
        ("MAIL FROM:<customer@client.test>".to_owned(), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        write!(w, "{cmd}\r\n").unwrap();
        expect(code, &mut reader);
    }
    w.write_all(raw).unwrap();
    w.write_all(b"\r\n.\r\n").unwrap();
    expect("250", &mut reader);
    w.write_all(b"QUIT\r\n").unwrap();
}

/// Distinct message ids and how many messages carried each.
pub fn by_id(got: &[Got]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for g in got {
        *m.entry(g.message_id.clone()).or_insert(0) += 1;
    }
    m
}
