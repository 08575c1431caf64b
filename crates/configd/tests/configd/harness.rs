//! An in-process configd on a free port, on SQLite or on a PostgreSQL database of its own.

use std::time::Duration;

use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const ADMIN: &str = "admin-token-0123456789";
pub const DAEMON: &str = "daemon-token-0123456789";

#[derive(Debug, Clone, Copy)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct Configd {
    pub port: u16,
    _dir: tempfile::TempDir,
    pub sqlite_file: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _pg: Option<deskmail_testkit::pg::Database>,
}

impl Configd {
    pub async fn start(db: Db) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "11".repeat(32)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (url, pg, sqlite_file) = match db {
            Db::Sqlite => {
                let file = dir.path().join("configd.db");
                (format!("sqlite://{}?mode=rwc", file.display()), None, Some(file))
            }
            Db::Postgres => {
                let pg = deskmail_testkit::pg::Database::create("configd").await.unwrap();
                (pg.url().to_owned(), Some(pg), None)
            }
        };
        let toml = format!(
            "[listen]\nport = {port}\n[database]\nurl = {url:?}\n[secrets]\nkey_file = {key:?}\n\
             [auth]\nadmin_token = {ADMIN:?}\ndaemon_token = {DAEMON:?}\n[log]\nlevel = \"warn\"\n"
        );
        let file = dir.path().join("configd.toml");
        std::fs::write(&file, toml).unwrap();
        let config: deskmail_configd::Config = deskmail_config::load(Some(&file)).unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = deskmail_configd::run(config, stop).await {
                panic!("configd stopped: {e}");
            }
        });
        // Ready when it answers.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self { port, _dir: dir, sqlite_file, shutdown, task: Some(task), _pg: pg }
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap();
        }
    }
}

impl Drop for Configd {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;

pub fn bearer(token: &'static str) -> Auth {
    Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        Ok(req)
    })
}

pub type With<T> = InterceptedService<Channel, T>;

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

/// Generates one test per store from `async fn NAME(db: Db)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::harness::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::harness::Db::Postgres).await })*
        }
    };
}
