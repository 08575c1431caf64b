//! Dev-only: a real configd, in-process, on a free port, on SQLite or on a PostgreSQL
//! database of its own, for the daemons' tests (and configd's own). Admin calls go through
//! [`Configd::admin`]; daemons under test are pointed at it with [`Configd::config_service_toml`].
//!
//! Panics on failure: it is only ever used by tests, where a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The admin bearer token every test configd accepts.
pub const ADMIN: &str = "admin-token-0123456789";
/// The daemon bearer token every test configd accepts.
pub const DAEMON: &str = "daemon-token-0123456789";

/// Which store the configd runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A running configd. Stops when dropped.
pub struct Configd {
    pub port: u16,
    pub sqlite_file: Option<std::path::PathBuf>,
    dir: tempfile::TempDir,
    db_url: String,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _pg: Option<deskmail_testkit::pg::Database>,
}

impl Configd {
    /// Starts one on a free port and waits until it answers.
    pub async fn start(db: Db) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "11".repeat(32)).unwrap();
        let port = free_port();
        let (db_url, pg, sqlite_file) = match db {
            Db::Sqlite => {
                let file = dir.path().join("configd.db");
                (format!("sqlite://{}?mode=rwc", file.display()), None, Some(file))
            }
            Db::Postgres => {
                let pg = deskmail_testkit::pg::Database::create("configd").await.unwrap();
                (pg.url().to_owned(), Some(pg), None)
            }
        };
        let mut me =
            Self { port, sqlite_file, dir, db_url, shutdown: CancellationToken::new(), task: None, _pg: pg };
        me.launch().await;
        me
    }

    async fn launch(&mut self) {
        let key = self.dir.path().join("key");
        let toml = format!(
            "[listen]\nport = {}\n[database]\nurl = {:?}\n[secrets]\nkey_file = {key:?}\n\
             [auth]\nadmin_token = {ADMIN:?}\ndaemon_token = {DAEMON:?}\n[log]\nlevel = \"warn\"\n",
            self.port, self.db_url
        );
        let file = self.dir.path().join("configd.toml");
        std::fs::write(&file, toml).unwrap();
        let config: deskmail_configd::Config = deskmail_config::load(Some(&file)).unwrap();
        self.shutdown = CancellationToken::new();
        let stop = self.shutdown.clone();
        self.task = Some(tokio::spawn(async move {
            if let Err(e) = deskmail_configd::run(config, stop).await {
                panic!("configd stopped: {e}");
            }
        }));
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("configd did not listen on port {} within 10 s", self.port);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A `[config_service]` section for a daemon's TOML config, with the daemon token.
    pub fn config_service_toml(&self) -> String {
        format!(
            "[config_service]\nurl = \"{}\"\ntoken = \"{DAEMON}\"\nconnect_timeout = \"2s\"\n",
            self.url()
        )
    }

    /// Stops serving (in-flight calls and Watch streams end) but keeps the store, so
    /// [`Configd::resume`] brings the same config back on the same port.
    pub async fn pause(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap();
        }
    }

    /// Serves again after [`Configd::pause`].
    pub async fn resume(&mut self) {
        self.launch().await;
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url()).unwrap().connect().await.unwrap()
    }

    /// Typed admin clients on a fresh channel.
    pub async fn admin(&self) -> Admin {
        Admin { channel: self.channel().await, token: ADMIN }
    }

    /// Typed clients with the daemon token.
    pub async fn daemon(&self) -> Admin {
        Admin { channel: self.channel().await, token: DAEMON }
    }

    pub async fn stop(mut self) {
        self.pause().await;
    }
}

impl Drop for Configd {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;

/// An interceptor adding `authorization: Bearer <token>`.
pub fn bearer(token: &'static str) -> Auth {
    Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        Ok(req)
    })
}

pub type With<T> = InterceptedService<Channel, T>;

/// Typed clients for every configd service, with one token.
#[derive(Clone)]
pub struct Admin {
    pub channel: Channel,
    pub token: &'static str,
}

impl Admin {
    pub fn mailboxes(&self) -> pb::mailbox_service_client::MailboxServiceClient<With<Auth>> {
        mailboxes(self.channel.clone(), self.token)
    }
    pub fn queues(&self) -> pb::queue_service_client::QueueServiceClient<With<Auth>> {
        queues(self.channel.clone(), self.token)
    }
    pub fn addresses(&self) -> pb::system_address_service_client::SystemAddressServiceClient<With<Auth>> {
        pb::system_address_service_client::SystemAddressServiceClient::with_interceptor(
            self.channel.clone(),
            bearer(self.token),
        )
    }
    pub fn companies(&self) -> pb::company_service_client::CompanyServiceClient<With<Auth>> {
        companies(self.channel.clone(), self.token)
    }
    pub fn contracts(&self) -> pb::contract_service_client::ContractServiceClient<With<Auth>> {
        pb::contract_service_client::ContractServiceClient::with_interceptor(
            self.channel.clone(),
            bearer(self.token),
        )
    }
    pub fn filters(&self) -> pb::filter_service_client::FilterServiceClient<With<Auth>> {
        pb::filter_service_client::FilterServiceClient::with_interceptor(
            self.channel.clone(),
            bearer(self.token),
        )
    }
    pub fn settings(&self) -> pb::settings_service_client::SettingsServiceClient<With<Auth>> {
        pb::settings_service_client::SettingsServiceClient::with_interceptor(
            self.channel.clone(),
            bearer(self.token),
        )
    }
    pub fn status(&self) -> pb::status_service_client::StatusServiceClient<With<Auth>> {
        pb::status_service_client::StatusServiceClient::with_interceptor(
            self.channel.clone(),
            bearer(self.token),
        )
    }
    pub fn watch(&self) -> pb::config_watch_client::ConfigWatchClient<With<Auth>> {
        watch(self.channel.clone(), self.token)
    }
    pub fn leases(&self) -> pb::lease_service_client::LeaseServiceClient<With<Auth>> {
        leases(self.channel.clone(), self.token)
    }

    /// Creates a queue and returns it.
    pub async fn create_queue(&self, queue: pb::Queue) -> pb::Queue {
        self.queues().create_queue(pb::CreateQueueRequest { queue: Some(queue) }).await.unwrap().into_inner()
    }

    /// Creates a mailbox and returns it (secrets blanked, as admins read it).
    pub async fn create_mailbox(&self, mailbox: pb::Mailbox) -> pb::Mailbox {
        self.mailboxes()
            .create_mailbox(pb::CreateMailboxRequest { mailbox: Some(mailbox) })
            .await
            .unwrap()
            .into_inner()
    }

    /// The status of one mailbox in one direction, or `None` when nothing was reported yet.
    pub async fn status_of(
        &self,
        mailbox_id: &str,
        direction: pb::Direction,
    ) -> Option<pb::MailboxStatusView> {
        let all = self.status().list_status(pb::ListRequest::default()).await.unwrap().into_inner().statuses;
        all.into_iter().find(|s| s.mailbox_id == mailbox_id && s.direction == direction as i32)
    }
}

pub fn mailboxes(
    c: Channel,
    token: &'static str,
) -> pb::mailbox_service_client::MailboxServiceClient<With<Auth>> {
    pb::mailbox_service_client::MailboxServiceClient::with_interceptor(c, bearer(token))
}
pub fn queues(c: Channel, token: &'static str) -> pb::queue_service_client::QueueServiceClient<With<Auth>> {
    pb::queue_service_client::QueueServiceClient::with_interceptor(c, bearer(token))
}
pub fn companies(
    c: Channel,
    token: &'static str,
) -> pb::company_service_client::CompanyServiceClient<With<Auth>> {
    pb::company_service_client::CompanyServiceClient::with_interceptor(c, bearer(token))
}
pub fn watch(c: Channel, token: &'static str) -> pb::config_watch_client::ConfigWatchClient<With<Auth>> {
    pb::config_watch_client::ConfigWatchClient::with_interceptor(c, bearer(token))
}
pub fn leases(c: Channel, token: &'static str) -> pb::lease_service_client::LeaseServiceClient<With<Auth>> {
    pb::lease_service_client::LeaseServiceClient::with_interceptor(c, bearer(token))
}

/// The field violations of an INVALID_ARGUMENT status.
pub fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| (v.field, v.description)).collect())
        .unwrap_or_default()
}

/// An IMAPS inbound mailbox on 127.0.0.1 (self-signed test certificates allowed).
pub fn imap_mailbox(name: &str, queue_id: &str, port: u16, password: &str) -> pb::Mailbox {
    pb::Mailbox {
        name: name.to_owned(),
        inbound: Some(pb::InboundSettings {
            protocol: pb::Protocol::Imap as i32,
            host: "127.0.0.1".into(),
            port: u32::from(port),
            security: pb::Security::Tls as i32,
            auth: pb::AuthMethod::Password as i32,
            username: "support@desk.test".into(),
            password: password.into(),
            dispatch_mode: pb::DispatchMode::ByQueue as i32,
            queue_id: queue_id.into(),
            allow_invalid_certs: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}
