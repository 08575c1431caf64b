//! A whole deskmail deployment as separate processes, configured through configd's gRPC API
//! like an admin does: configd (SQLite), fetcher, router (PostgreSQL), sender (SQLite sent
//! log), a private Dovecot + Postfix, and a RabbitMQ vhost of its own.
//!
//! Mail domains: desk.test (the service desk: support@, contract@), client.test (the
//! customer), other.test (another company's desk: helpdesk@).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;
use deskmail_testkit::pg::Database;
use deskmail_testkit::process::DaemonProcess;
use deskmail_testkit::rabbit::Vhost;
use deskmail_testkit_configd::{ADMIN, Admin, DAEMON};
use sqlx::Row;

use crate::system::bin_dir;

pub const SUPPORT: &str = "support@desk.test";
pub const CONTRACT: &str = "contract@desk.test";
pub const CUSTOMER: &str = "customer@client.test";
pub const HELPDESK: &str = "helpdesk@other.test";
/// Who a header injection would add as a recipient.
pub const VICTIM: &str = "victim@client.test";
pub const PASSWORD: &str = "e2e-pass";
pub const PREFIX: &str = "deskmail";

/// The four daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Daemon {
    Configd,
    Fetcher,
    Router,
    Sender,
}

impl Daemon {
    pub const ALL: [Daemon; 4] = [Daemon::Configd, Daemon::Fetcher, Daemon::Router, Daemon::Sender];
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Configd => "configd",
            Daemon::Fetcher => "fetcher",
            Daemon::Router => "router",
            Daemon::Sender => "sender",
        }
    }
}

pub struct Desk {
    pub stack: MailStack,
    pub vhost: Vhost,
    pub db: Database,
    pub dir: tempfile::TempDir,
    pub configd_port: u16,
    pub metrics_ports: BTreeMap<Daemon, u16>,
    procs: BTreeMap<Daemon, DaemonProcess>,
    pub queue_support: String,
    pub auto_reply_limit: u32,
}

fn free_port() -> u16 {
    deskmail_testkit_configd::free_port()
}

impl Desk {
    /// Starts everything and configures: queue Support (auto-reply) fed by mailbox `support`
    /// (IMAPS in, submission out; the system's default box), mailbox `contract-box`
    /// (outbound only) used by contract Gold of company Client (client.test), system address
    /// support@desk.test, and an auto-reply limit of `auto_reply_limit` per sender and day.
    pub async fn start(auto_reply_limit: u32) -> Desk {
        Desk::start_with(auto_reply_limit, true, true).await
    }

    /// [`Desk::start`] with the Support queue's auto-reply on or off, and with or without the
    /// fetcher (the pipeline benchmark fills the mailbox first, then starts it).
    pub async fn start_with(auto_reply_limit: u32, auto_reply: bool, fetcher: bool) -> Desk {
        Desk::build(auto_reply_limit, auto_reply, fetcher, Vhost::create("e2e").unwrap()).await
    }

    /// [`Desk::start`] on a RabbitMQ node of its own, which the test can stop, kill and start
    /// (`desk.vhost.broker()`).
    pub async fn start_on_private_broker(auto_reply_limit: u32) -> Desk {
        Desk::build(auto_reply_limit, true, true, Vhost::create_private("e2e").await.unwrap()).await
    }

    async fn build(auto_reply_limit: u32, auto_reply: bool, fetcher: bool, vhost: Vhost) -> Desk {
        let stack = MailStack::builder()
            .user(SUPPORT, PASSWORD)
            .user(CONTRACT, PASSWORD)
            .user(CUSTOMER, PASSWORD)
            .user(HELPDESK, PASSWORD)
            .user(VICTIM, PASSWORD)
            .start()
            .unwrap();
        let db = Database::create("e2e").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("configd.key"), "11".repeat(32)).unwrap();
        let configd_port = free_port();
        let metrics_ports = Daemon::ALL.iter().map(|d| (*d, free_port())).collect();
        let mut desk = Desk {
            stack,
            vhost,
            db,
            dir,
            configd_port,
            metrics_ports,
            procs: BTreeMap::new(),
            queue_support: String::new(),
            auto_reply_limit,
        };
        desk.spawn(Daemon::Configd).await;
        desk.configure(auto_reply).await;
        for d in [Daemon::Router, Daemon::Sender] {
            desk.spawn(d).await;
        }
        if fetcher {
            desk.spawn(Daemon::Fetcher).await;
        }
        desk
    }

    fn config_path(&self, daemon: Daemon) -> PathBuf {
        self.dir.path().join(format!("{}.toml", daemon.name()))
    }

    fn write_config(&self, daemon: Daemon) -> PathBuf {
        let dir = self.dir.path().display();
        let metrics = self.metrics_ports[&daemon];
        let common = format!(
            "[log]\nformat = \"json\"\nlevel = \"info\"\n[metrics]\nport = {metrics}\n\
             [amqp]\nurl = {:?}\nprefix = \"{PREFIX}\"\n\
             [config_service]\nurl = \"http://127.0.0.1:{}\"\ntoken = \"{DAEMON}\"\nconnect_timeout = \"2s\"\n",
            self.vhost.amqp_url(),
            self.configd_port
        );
        let toml = match daemon {
            Daemon::Configd => format!(
                "[log]\nformat = \"json\"\nlevel = \"info\"\n[metrics]\nport = {metrics}\n\
                 [listen]\nport = {}\n[database]\nurl = \"sqlite://{dir}/configd.db?mode=rwc\"\n\
                 [secrets]\nkey_file = \"{dir}/configd.key\"\n\
                 [auth]\nadmin_token = \"{ADMIN}\"\ndaemon_token = \"{DAEMON}\"\n",
                self.configd_port
            ),
            Daemon::Fetcher => common,
            Daemon::Router => format!("{common}[database]\nurl = {:?}\n", self.db.url()),
            Daemon::Sender => {
                format!(
                    "{common}[sent_log]\nurl = \"sqlite://{dir}/sender.db?mode=rwc\"\n[retry]\ndelays = [\"1s\", \"2s\", \"5s\", \"10s\", \"20s\"]\n"
                )
            }
        };
        let path = self.config_path(daemon);
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Starts a daemon and waits until it says it is ready.
    pub async fn spawn(&mut self, daemon: Daemon) {
        let path = self.write_config(daemon);
        let bin = bin_dir().join(format!("deskmail-{}", daemon.name()));
        let mut p = DaemonProcess::spawn(&bin, &["--config", path.to_str().unwrap()], &[]).unwrap();
        let needle = if daemon == Daemon::Configd { "Listening." } else { "Ready." };
        if let Err(e) = p.wait_for_log(needle, Duration::from_secs(60)) {
            panic!("{} did not start: {e:#}\n{}", daemon.name(), p.log().join("\n"));
        }
        self.procs.insert(daemon, p);
    }

    /// `kill -9`.
    pub fn kill9(&mut self, daemon: Daemon) {
        if let Some(mut p) = self.procs.remove(&daemon) {
            p.kill().unwrap();
        }
    }

    /// SIGTERM and the exit status; the daemon's log on failure.
    pub fn terminate(&mut self, daemon: Daemon) {
        if let Some(mut p) = self.procs.remove(&daemon) {
            let status = p.terminate(Duration::from_secs(60)).unwrap();
            assert!(status.success(), "{} exited with {status}:\n{}", daemon.name(), p.log().join("\n"));
        }
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self, daemon: Daemon) -> Option<u32> {
        self.procs.get(&daemon).map(DaemonProcess::pid)
    }

    pub fn log(&self, daemon: Daemon) -> String {
        self.procs.get(&daemon).map(|p| p.log().join("\n")).unwrap_or_default()
    }

    pub async fn admin(&self) -> Admin {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.configd_port))
                .unwrap()
                .connect()
                .await
                .unwrap();
        Admin { channel, token: ADMIN }
    }

    async fn configure(&mut self, auto_reply: bool) {
        let admin = self.admin().await;
        let support = admin
            .create_queue(pb::Queue {
                name: "Support".into(),
                auto_reply,
                auto_reply_subject: "Received: {{subject}}".into(),
                auto_reply_body: "Dear {{customer_name}}, your ticket {{ticket_number}} is open.".into(),
                ..Default::default()
            })
            .await;
        self.queue_support = support.id.clone();
        let s = &self.stack;
        let outbound = |user: &str| pb::OutboundSettings {
            host: "127.0.0.1".into(),
            port: u32::from(s.submission_port()),
            security: pb::Security::Starttls as i32,
            auth: pb::AuthMethod::Password as i32,
            username: user.into(),
            password: PASSWORD.into(),
            from_address: user.into(),
            from_name: "Desk".into(),
            allow_invalid_certs: true,
            ..Default::default()
        };
        let support_box = admin
            .create_mailbox(pb::Mailbox {
                name: "support".into(),
                inbound: Some(pb::InboundSettings {
                    protocol: pb::Protocol::Imap as i32,
                    host: "127.0.0.1".into(),
                    port: u32::from(s.imaps_port()),
                    security: pb::Security::Tls as i32,
                    auth: pb::AuthMethod::Password as i32,
                    username: SUPPORT.into(),
                    password: PASSWORD.into(),
                    dispatch_mode: pb::DispatchMode::ByQueue as i32,
                    queue_id: support.id.clone(),
                    allow_invalid_certs: true,
                    poll_interval_seconds: 600,
                    ..Default::default()
                }),
                outbound: Some(outbound(SUPPORT)),
                ..Default::default()
            })
            .await;
        let contract_box = admin
            .create_mailbox(pb::Mailbox {
                name: "contract-box".into(),
                outbound: Some(outbound(CONTRACT)),
                ..Default::default()
            })
            .await;
        let company = admin
            .companies()
            .create_company(pb::CreateCompanyRequest {
                company: Some(pb::Company {
                    name: "Client".into(),
                    domains: vec!["client.test".into()],
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        admin
            .contracts()
            .create_contract(pb::CreateContractRequest {
                contract: Some(pb::Contract {
                    name: "Gold".into(),
                    company_id: company.id,
                    outbound_mailbox_id: contract_box.id,
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        admin
            .addresses()
            .create_system_address(pb::CreateSystemAddressRequest {
                system_address: Some(pb::SystemAddress {
                    address: SUPPORT.into(),
                    display_name: "Support".into(),
                    queue_id: support.id,
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        let mut settings =
            admin.settings().get_settings(pb::GetSettingsRequest {}).await.unwrap().into_inner();
        settings.default_outbound_mailbox_id = support_box.id;
        settings.auto_reply_limit_per_day = self.auto_reply_limit;
        admin
            .settings()
            .update_settings(pb::UpdateSettingsRequest {
                settings: Some(settings),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["default_outbound_mailbox_id".into(), "auto_reply_limit_per_day".into()],
                }),
            })
            .await
            .unwrap();
    }

    /// One mail through Postfix (port 25) with the test's Python client; its Message-ID.
    pub fn send(&self, from: &str, to: &str, subject: &str, in_reply_to: Option<&str>) -> String {
        let port = self.stack.smtp_port().to_string();
        let mut args = vec!["send", "127.0.0.1", port.as_str(), from, to, subject];
        if let Some(id) = in_reply_to {
            args.push(id);
        }
        python(&args).trim().to_owned()
    }

    /// Messages in a user's Maildir (new + cur), parsed headers only: (subject, from,
    /// message-id, auto-submitted, whole text).
    pub fn mailbox(&self, user: &str) -> Vec<Received> {
        let dir = self.stack.maildir(user).unwrap();
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
            for e in entries.flatten() {
                let Ok(raw) = std::fs::read(e.path()) else { continue };
                out.push(Received::parse(&raw));
            }
        }
        out
    }

    /// Waits until `user`'s Maildir holds a message `pred` accepts.
    pub async fn wait_mail(&self, user: &str, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(m) = self.mailbox(user).into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in {user}'s mailbox within 60 s\nsender:\n{}\nrouter:\n{}",
                self.log(Daemon::Sender),
                self.log(Daemon::Router)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn pg(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self.db.url()).await.unwrap()
    }

    /// (ticket number, articles on it) of the ticket holding an article with this subject.
    pub async fn ticket_with_subject(&self, subject: &str) -> Option<(String, i64)> {
        let pool = self.pg().await;
        let row = sqlx::query(
            "SELECT t.number, (SELECT count(*) FROM articles b WHERE b.ticket_id = t.id) AS n \
             FROM articles a JOIN tickets t ON t.id = a.ticket_id WHERE a.subject = $1",
        )
        .bind(subject)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten();
        pool.close().await;
        row.map(|r| (r.get("number"), r.get("n")))
    }

    pub async fn wait_ticket(&self, subject: &str, articles: i64) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((number, n)) = self.ticket_with_subject(subject).await
                && n >= articles
            {
                return number;
            }
            assert!(
                Instant::now() < deadline,
                "no ticket with {articles} article(s) for {subject:?} within 60 s\nfetcher:\n{}\nrouter:\n{}",
                self.log(Daemon::Fetcher),
                self.log(Daemon::Router)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Counts of a SQL query's single integer.
    pub async fn count(&self, sql: &'static str) -> i64 {
        let pool = self.pg().await;
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

/// A mail found in a Maildir.
#[derive(Debug, Clone)]
pub struct Received {
    pub subject: String,
    pub from: String,
    pub message_id: String,
    pub auto_submitted: String,
    /// The sender's `X-Deskmail-Job-Id` (empty on mail the sender did not send).
    pub job_id: String,
    pub text: String,
}

impl Received {
    fn parse(raw: &[u8]) -> Received {
        let text = String::from_utf8_lossy(raw).into_owned();
        let head = text.split("\r\n\r\n").next().unwrap_or_default().split("\n\n").next().unwrap_or_default();
        // Unfold continuation lines, then take the first of each header.
        let unfolded =
            head.replace("\r\n ", " ").replace("\r\n\t", " ").replace("\n ", " ").replace("\n\t", " ");
        let get = |name: &str| {
            unfolded
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
                .unwrap_or_default()
        };
        Received {
            subject: get("Subject"),
            from: get("From"),
            message_id: get("Message-ID"),
            auto_submitted: get("Auto-Submitted"),
            job_id: get("X-Deskmail-Job-Id"),
            text,
        }
    }
}

/// Runs tests/tests/e2e/py/mailer.py with `args`; its stdout; panics with stderr on failure.
pub fn python(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/mailer.py");
    let out = Command::new("python3").arg(&script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mailer.py {} failed: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
