//! A router under test: a configd of its own (in-process, SQLite), a RabbitMQ vhost of its
//! own, a tickets store of its own (a SQLite file in a temp dir or a PostgreSQL database),
//! and the router running in-process (or as a process, see `process.rs`).

use std::time::{Duration, Instant};

use deskmail_config::DatabaseConfig;
use deskmail_mq::lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use deskmail_mq::lapin::types::FieldTable;
use deskmail_mq::{OutgoingMessage, Publisher, Topology};
use deskmail_proto::v1 as pb;
use deskmail_router::store::{Store, entity};
use deskmail_runtime::CancellationToken;
use deskmail_testkit::rabbit::Vhost;
pub use deskmail_testkit_configd::{Configd, Db};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

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

/// The tickets store of one test.
pub struct TicketsDb {
    pub url: String,
    _dir: tempfile::TempDir,
    pub pg: Option<deskmail_testkit::pg::Database>,
}

impl TicketsDb {
    pub async fn create(db: Db) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match db {
            Db::Sqlite => {
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("router.db").display());
                Self { url, _dir: dir, pg: None }
            }
            Db::Postgres => {
                let pg = deskmail_testkit::pg::Database::create("router").await.unwrap();
                Self { url: pg.url().to_owned(), _dir: dir, pg: Some(pg) }
            }
        }
    }
}

/// Ids of what the standard setup creates in configd.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    pub support: String,
    pub sales: String,
    pub billing: String,
    /// by recipient, fallback Support.
    pub inbox: String,
    /// by queue: Billing.
    pub billing_box: String,
    /// by recipient, trusted.
    pub trusted: String,
    pub acme: String,
}

pub struct Env {
    pub configd: Configd,
    pub vhost: Vhost,
    pub db: TicketsDb,
    pub topology: Topology,
    pub conn: deskmail_mq::lapin::Connection,
    pub publisher: Publisher,
    pub ids: Ids,
    pub dir: tempfile::TempDir,
    pub extra_toml: String,
    router: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    store: Option<Store>,
}

pub const EVENTS_QUEUE: &str = "test.events";

impl Env {
    /// Everything but the router.
    pub async fn new(db: Db) -> Self {
        Self::on(db, Vhost::create("router").unwrap()).await
    }

    /// Like [`Env::new`], on a RabbitMQ node of its own that the test can stop and start
    /// (`env.vhost.broker()`).
    pub async fn with_private_broker(db: Db) -> Self {
        Self::on(db, Vhost::create_private("router").await.unwrap()).await
    }

    async fn on(db: Db, vhost: Vhost) -> Self {
        let configd = Configd::start(Db::Sqlite).await;
        let db = TicketsDb::create(db).await;
        let amqp = deskmail_mq::AmqpConfig { url: vhost.amqp_url_parsed().unwrap(), ..Default::default() };
        let (conn, topology) =
            deskmail_mq::connect_and_declare(&amqp, "test", &CancellationToken::new()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(EVENTS_QUEUE.into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            EVENTS_QUEUE.into(),
            topology.events_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let publisher = Publisher::new(&conn).await.unwrap();
        let mut env = Self {
            configd,
            vhost,
            db,
            topology,
            conn,
            publisher,
            ids: Ids::default(),
            dir: tempfile::tempdir().unwrap(),
            extra_toml: String::new(),
            router: None,
            store: None,
        };
        env.setup().await;
        env
    }

    /// Queues Support (auto-reply), Sales, Billing; addresses support@, sales@ (+ alias
    /// help@ -> Support); mailboxes inbox (by recipient, fallback Support), billing-box (by
    /// queue Billing), trusted (by recipient, trusted); company Acme (acme.test).
    async fn setup(&mut self) {
        let admin = self.configd.admin().await;
        let queue = |name: &str, auto: bool| pb::Queue {
            name: name.into(),
            auto_reply: auto,
            auto_reply_subject: if auto { "Received: {{subject}}".into() } else { String::new() },
            auto_reply_body: if auto {
                "Dear {{customer_name}}, ticket {{ticket_number}} is open.".into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        self.ids.support = admin.create_queue(queue("Support", true)).await.id;
        self.ids.sales = admin.create_queue(queue("Sales", false)).await.id;
        self.ids.billing = admin.create_queue(queue("Billing", true)).await.id;
        for (address, q) in [
            ("support@desk.test", &self.ids.support),
            ("Sales@Desk.test", &self.ids.sales),
            ("help@desk.test", &self.ids.support),
        ] {
            admin
                .addresses()
                .create_system_address(pb::CreateSystemAddressRequest {
                    system_address: Some(pb::SystemAddress {
                        address: address.into(),
                        display_name: "Desk".into(),
                        queue_id: q.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap();
        }
        let mailbox = |name: &str, mode: pb::DispatchMode, queue: &str, trusted: bool| {
            let mut m = deskmail_testkit_configd::imap_mailbox(name, queue, 993, "pw");
            let inbound = m.inbound.as_mut().unwrap();
            inbound.dispatch_mode = mode as i32;
            inbound.trusted = trusted;
            if mode == pb::DispatchMode::ByRecipient {
                inbound.queue_id = String::new();
                inbound.fallback_queue_id = queue.into();
            }
            m
        };
        self.ids.inbox = admin
            .create_mailbox(mailbox("inbox", pb::DispatchMode::ByRecipient, &self.ids.support, false))
            .await
            .id;
        self.ids.billing_box = admin
            .create_mailbox(mailbox("billing-box", pb::DispatchMode::ByQueue, &self.ids.billing, false))
            .await
            .id;
        self.ids.trusted = admin
            .create_mailbox(mailbox("trusted", pb::DispatchMode::ByRecipient, &self.ids.support, true))
            .await
            .id;
        self.ids.acme = admin
            .companies()
            .create_company(pb::CreateCompanyRequest {
                company: Some(pb::Company {
                    name: "Acme".into(),
                    domains: vec!["acme.test".into()],
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
    }

    /// The router's TOML config.
    pub fn config_toml(&self) -> String {
        format!(
            "batch_wait = \"5ms\"\n{}\n[amqp]\nurl = \"{}\"\nprefetch = 256\n[database]\nurl = \"{}\"\n[log]\nlevel = \"warn\"\n{}",
            self.extra_toml,
            self.vhost.amqp_url(),
            self.db.url,
            self.configd.config_service_toml()
        )
    }

    pub fn config_file(&self) -> std::path::PathBuf {
        let path = self.dir.path().join(format!("router-{}.toml", deskmail_testkit::unique("cfg")));
        std::fs::write(&path, self.config_toml()).unwrap();
        path
    }

    pub fn config(&self) -> deskmail_router::Config {
        deskmail_config::load(Some(&self.config_file())).unwrap()
    }

    /// Starts the router in-process.
    /// Whether the in-process router is still running.
    pub fn router_running(&self) -> bool {
        self.router.as_ref().is_some_and(|(_, task)| !task.is_finished())
    }

    pub async fn start_router(&mut self) {
        let config = self.config();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = deskmail_router::run(config, token).await {
                panic!("router failed: {e}");
            }
        });
        self.router = Some((stop, task));
    }

    /// SIGTERM-like stop; waits for the router to finish.
    pub async fn stop_router(&mut self) {
        if let Some((stop, task)) = self.router.take() {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
        }
    }

    /// Sets settings fields in configd.
    pub async fn update_settings(&self, settings: pb::Settings, paths: &[&str]) {
        self.configd
            .admin()
            .await
            .settings()
            .update_settings(pb::UpdateSettingsRequest {
                settings: Some(settings),
                update_mask: Some(prost_types_mask(paths)),
            })
            .await
            .unwrap();
    }

    /// Publishes a raw mail the way the fetcher does.
    pub async fn publish(&self, source_id: &str, mailbox_id: &str, raw: &[u8]) {
        let m = OutgoingMessage::new(self.topology.inbound_exchange(), "mail.raw", raw.to_vec())
            .content_type("message/rfc822")
            .message_id(source_id)
            .header("x-mailbox-id", mailbox_id);
        self.publisher.publish_confirmed(m).await.unwrap();
    }

    pub async fn store(&mut self) -> Store {
        if self.store.is_none() {
            let cfg =
                DatabaseConfig { url: deskmail_config::Secret::new(self.db.url.clone()), max_connections: 2 };
            self.store = Some(Store::open(&cfg).await.unwrap());
        }
        self.store.clone().unwrap()
    }

    /// Waits until `n` source ids are in the processed log.
    pub async fn wait_processed(&mut self, n: u64) {
        let store = self.store().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let count = entity::processed::Entity::find().count(store.connection()).await.unwrap_or(0);
            if count >= n {
                return;
            }
            assert!(Instant::now() < deadline, "only {count} of {n} mails processed within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The article of a source id.
    pub async fn article(&mut self, source_id: &str) -> entity::article::Model {
        let store = self.store().await;
        entity::article::Entity::find()
            .filter(entity::article::Column::SourceId.eq(source_id))
            .one(store.connection())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no article for {source_id}"))
    }

    pub async fn ticket_of(&mut self, source_id: &str) -> entity::ticket::Model {
        let a = self.article(source_id).await;
        let store = self.store().await;
        entity::ticket::Entity::find_by_id(a.ticket_id).one(store.connection()).await.unwrap().unwrap()
    }

    pub async fn processed(&mut self, source_id: &str) -> entity::processed::Model {
        let store = self.store().await;
        entity::processed::Entity::find_by_id(source_id.to_owned())
            .one(store.connection())
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn count_articles(&mut self) -> u64 {
        let store = self.store().await;
        entity::article::Entity::find().count(store.connection()).await.unwrap()
    }

    pub async fn tickets(&mut self) -> Vec<entity::ticket::Model> {
        let store = self.store().await;
        entity::ticket::Entity::find()
            .order_by_asc(entity::ticket::Column::Number)
            .all(store.connection())
            .await
            .unwrap()
    }

    pub async fn attachments(&mut self, article_id: &str) -> Vec<entity::attachment::Model> {
        let store = self.store().await;
        entity::attachment::Entity::find()
            .filter(entity::attachment::Column::ArticleId.eq(article_id))
            .order_by_asc(entity::attachment::Column::Position)
            .all(store.connection())
            .await
            .unwrap()
    }

    /// Takes every message now in `queue` (basic.get until empty, acked).
    pub async fn drain(
        &self,
        queue: &str,
    ) -> Vec<(Option<String>, Vec<u8>, deskmail_mq::lapin::BasicProperties)> {
        let ch = self.conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            let props = m.delivery.properties.clone();
            out.push((props.message_id().as_ref().map(|s| s.to_string()), m.delivery.data.clone(), props));
        }
        let _ = ch.close(200, "done".into()).await;
        out
    }

    /// The events published so far, as JSON.
    pub async fn events(&self) -> Vec<serde_json::Value> {
        self.drain(EVENTS_QUEUE)
            .await
            .into_iter()
            .map(|(_, body, _)| serde_json::from_slice(&body).unwrap())
            .collect()
    }

    /// The auto-reply jobs published so far.
    pub async fn jobs(&self) -> Vec<(String, deskmail_core::OutboundJob)> {
        self.drain(&self.topology.outbound_queue())
            .await
            .into_iter()
            .map(|(id, body, _)| (id.unwrap_or_default(), serde_json::from_slice(&body).unwrap()))
            .collect()
    }

    /// Waits until `queue` holds `n` messages (exact count by passive declare).
    pub async fn wait_queue(&self, queue: &str, n: u32) {
        let ch = self.conn.create_channel().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let q = ch
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            if q.message_count() >= n {
                break;
            }
            assert!(Instant::now() < deadline, "{queue} holds {} of {n} messages", q.message_count());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = ch.close(200, "done".into()).await;
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.router {
            stop.cancel();
        }
    }
}

fn prost_types_mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }
}

/// A plain mail.
pub fn mail(
    from: &str,
    to: &str,
    subject: &str,
    message_id: &str,
    extra_headers: &str,
    body: &str,
) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra_headers}\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}
