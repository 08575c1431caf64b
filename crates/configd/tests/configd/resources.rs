//! CRUD, validation, auth, pagination, field masks, secrets and Watch through real clients.

use std::time::Duration;

use deskmail_proto::v1 as pb;
use prost_types::FieldMask;
use tonic::Code;

use crate::harness::*;

async fn queue(c: &tonic::transport::Channel, name: &str) -> pb::Queue {
    queues(c.clone(), ADMIN)
        .create_queue(pb::CreateQueueRequest {
            queue: Some(pb::Queue { name: name.into(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn every_resource_round_trips(db: Db) {
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let q = queue(&c, "Support").await;
    assert!(!q.id.is_empty() && q.create_time.is_some());

    let mut mbx = mailboxes(c.clone(), ADMIN);
    let created = mbx
        .create_mailbox(pb::CreateMailboxRequest {
            mailbox: Some(imap_mailbox("support", &q.id, 993, "s3cret-pass")),
        })
        .await
        .unwrap()
        .into_inner();
    let inbound = created.inbound.clone().unwrap();
    assert_eq!(created.enabled, Some(true));
    assert_eq!((inbound.folder.as_str(), inbound.poll_interval_seconds), ("INBOX", 60), "defaults filled");
    assert!(inbound.has_password && inbound.password.is_empty(), "write-only password");
    let by_name = mbx.get_mailbox(pb::GetRequest { id: "support".into() }).await.unwrap().into_inner();
    assert_eq!(by_name.id, created.id);

    let addr = pb::system_address_service_client::SystemAddressServiceClient::with_interceptor(
        c.clone(),
        bearer(ADMIN),
    )
    .create_system_address(pb::CreateSystemAddressRequest {
        system_address: Some(pb::SystemAddress {
            address: "Support@Desk.TEST".into(),
            queue_id: q.id.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(addr.address, "support@desk.test", "stored lower-case");

    let company = companies(c.clone(), ADMIN)
        .create_company(pb::CreateCompanyRequest {
            company: Some(pb::Company {
                name: "ACME".into(),
                domains: vec!["@ACME.example".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(company.domains, vec!["acme.example"]);
    let mut contracts =
        pb::contract_service_client::ContractServiceClient::with_interceptor(c.clone(), bearer(ADMIN));
    let contract = contracts
        .create_contract(pb::CreateContractRequest {
            contract: Some(pb::Contract {
                name: "ACME gold".into(),
                company_id: company.id.clone(),
                outbound_mailbox_id: String::new(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut filters =
        pb::filter_service_client::FilterServiceClient::with_interceptor(c.clone(), bearer(ADMIN));
    let filter = filters
        .create_filter(pb::CreateFilterRequest {
            filter: Some(pb::Filter {
                name: "spam".into(),
                header: "X-Spam-Flag".into(),
                pattern: "(?i)^yes".into(),
                action: Some(pb::FilterAction { ignore: true, ..Default::default() }),
                stop: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();

    // Field-mask update: only the named field changes.
    let renamed = queues(c.clone(), ADMIN)
        .update_queue(pb::UpdateQueueRequest {
            queue: Some(pb::Queue {
                id: q.id.clone(),
                name: "First level".into(),
                auto_reply: true,
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["name".into()] }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((renamed.name.as_str(), renamed.auto_reply), ("First level", false));
    let moved = mbx
        .update_mailbox(pb::UpdateMailboxRequest {
            mailbox: Some(pb::Mailbox {
                id: created.id.clone(),
                inbound: Some(pb::InboundSettings { port: 143, ..Default::default() }),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["inbound.port".into()] }),
        })
        .await
        .unwrap()
        .into_inner();
    let i = moved.inbound.unwrap();
    assert_eq!((i.port, i.host.as_str()), (143, "127.0.0.1"));
    assert!(i.has_password, "an update that does not name the password keeps it");

    // Settings: defaults, then a masked update.
    let mut settings =
        pb::settings_service_client::SettingsServiceClient::with_interceptor(c.clone(), bearer(ADMIN));
    let s = settings.get_settings(pb::GetSettingsRequest {}).await.unwrap().into_inner();
    assert_eq!(s.ticket_hook, "Ticket#");
    let s = settings
        .update_settings(pb::UpdateSettingsRequest {
            settings: Some(pb::Settings { auto_reply_limit_per_day: 3, ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["auto_reply_limit_per_day".into()] }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.auto_reply_limit_per_day, s.ticket_hook.as_str()), (3, "Ticket#"));

    // Deletes.
    filters.delete_filter(pb::DeleteRequest { id: filter.id, force: false }).await.unwrap();
    contracts.delete_contract(pb::DeleteRequest { id: contract.id.clone(), force: false }).await.unwrap();
    let gone = contracts.get_contract(pb::GetRequest { id: contract.id }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    configd.stop().await;
}

async fn validation_names_every_bad_field(db: Db) {
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let mut bad = imap_mailbox("", "no-such-queue", 993, "");
    if let Some(i) = bad.inbound.as_mut() {
        i.port = 70000;
        i.host = String::new();
    }
    let err = mailboxes(c.clone(), ADMIN)
        .create_mailbox(pb::CreateMailboxRequest { mailbox: Some(bad) })
        .await
        .unwrap_err();
    let fields: Vec<String> = violations(&err).into_iter().map(|(f, _)| f).collect();
    for want in [
        "mailbox.name",
        "mailbox.inbound.host",
        "mailbox.inbound.port",
        "mailbox.inbound.password",
        "mailbox.inbound.queue_id",
    ] {
        assert!(fields.iter().any(|f| f == want), "{want} missing in {fields:?}");
    }
    let dup = queue(&c, "Dup").await;
    let err = queues(c.clone(), ADMIN)
        .create_queue(pb::CreateQueueRequest {
            queue: Some(pb::Queue { name: dup.name, ..Default::default() }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = queues(c.clone(), ADMIN)
        .update_queue(pb::UpdateQueueRequest {
            queue: Some(pb::Queue { id: dup.id, ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["nope".into(), "id".into()] }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err).len(), 2, "{err:?}");
    configd.stop().await;
}

async fn tokens_and_roles_are_enforced(db: Db) {
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let mut anonymous = pb::queue_service_client::QueueServiceClient::new(c.clone());
    let err = anonymous.list_queues(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err =
        queues(c.clone(), "wrong-token-000000000").list_queues(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = queues(c.clone(), DAEMON)
        .create_queue(pb::CreateQueueRequest {
            queue: Some(pb::Queue { name: "x".into(), ..Default::default() }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = pb::status_service_client::StatusServiceClient::with_interceptor(c.clone(), bearer(DAEMON))
        .list_status(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    watch(c.clone(), DAEMON).get_snapshot(pb::GetSnapshotRequest {}).await.unwrap();
    configd.stop().await;
}

async fn pagination_walks_250_items(db: Db) {
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let mut client = queues(c.clone(), ADMIN);
    for n in 0..250 {
        client
            .create_queue(pb::CreateQueueRequest {
                queue: Some(pb::Queue { name: format!("q{n:03}"), ..Default::default() }),
            })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_queues(pb::ListRequest { page_size: 100, page_token: token })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_size, 250);
        assert!(page.queues.len() <= 100);
        seen.extend(page.queues.into_iter().map(|q| q.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..250).map(|n| format!("q{n:03}")).collect();
    assert_eq!(seen, expected, "every item once, in order");
    let err = client
        .list_queues(pb::ListRequest { page_size: 10, page_token: "garbage!".into() })
        .await
        .unwrap_err();
    assert_eq!(violations(&err)[0].0, "page_token");
    configd.stop().await;
}

async fn secrets_are_write_only_and_encrypted(db: Db) {
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let q = queue(&c, "S").await;
    let secret = "very-secret-password-XYZ";
    mailboxes(c.clone(), ADMIN)
        .create_mailbox(pb::CreateMailboxRequest { mailbox: Some(imap_mailbox("m", &q.id, 993, secret)) })
        .await
        .unwrap();
    let admin_view =
        watch(c.clone(), ADMIN).get_snapshot(pb::GetSnapshotRequest {}).await.unwrap().into_inner();
    assert!(!format!("{admin_view:?}").contains(secret), "admins never read secrets");
    let daemon_view =
        watch(c.clone(), DAEMON).get_snapshot(pb::GetSnapshotRequest {}).await.unwrap().into_inner();
    assert_eq!(daemon_view.mailboxes[0].inbound.as_ref().unwrap().password, secret, "daemons get them");
    if let Some(file) = &configd.sqlite_file {
        for f in [file.clone(), file.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&f) {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the secret in clear",
                    f.display()
                );
            }
        }
    }
    configd.stop().await;
}

async fn watch_delivers_a_change_within_a_second(db: Db) {
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let mut stream =
        watch(c.clone(), DAEMON).watch(pb::WatchRequest { known_revision: 0 }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let started = std::time::Instant::now();
    queue(&c, "Watched").await;
    let next = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let snap = stream.message().await.unwrap().unwrap();
            if snap.queues.iter().any(|q| q.name == "Watched") {
                return snap;
            }
        }
    })
    .await
    .expect("the change reached the watcher within a second");
    assert!(next.revision > first.revision);
    assert!(started.elapsed() < Duration::from_secs(1));
    // A watcher that reconnects with its revision gets only newer snapshots.
    let mut again = watch(c.clone(), DAEMON)
        .watch(pb::WatchRequest { known_revision: next.revision })
        .await
        .unwrap()
        .into_inner();
    queue(&c, "Later").await;
    let snap = tokio::time::timeout(Duration::from_secs(2), again.message()).await.unwrap().unwrap().unwrap();
    assert!(snap.revision > next.revision);
    configd.stop().await;
}

async fn deleting_a_used_mailbox_names_its_users(db: Db) {
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let mut mbx = mailboxes(c.clone(), ADMIN);
    let out = mbx
        .create_mailbox(pb::CreateMailboxRequest {
            mailbox: Some(pb::Mailbox {
                name: "acme-smtp".into(),
                outbound: Some(pb::OutboundSettings {
                    host: "smtp.acme.example".into(),
                    port: 587,
                    security: pb::Security::Starttls as i32,
                    auth: pb::AuthMethod::None as i32,
                    from_address: "help@acme.example".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut comp = companies(c.clone(), ADMIN);
    let company = comp
        .create_company(pb::CreateCompanyRequest {
            company: Some(pb::Company {
                name: "ACME".into(),
                outbound_mailbox_id: out.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let err = mbx.delete_mailbox(pb::DeleteRequest { id: out.id.clone(), force: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("company \"ACME\""), "{}", err.message());
    mbx.delete_mailbox(pb::DeleteRequest { id: out.id.clone(), force: true }).await.unwrap();
    let company = comp.get_company(pb::GetRequest { id: company.id }).await.unwrap().into_inner();
    assert_eq!(company.outbound_mailbox_id, "", "falls back to the default box");
    configd.stop().await;
}

crate::on_both_stores!(
    every_resource_round_trips,
    validation_names_every_bad_field,
    tokens_and_roles_are_enforced,
    pagination_walks_250_items,
    secrets_are_write_only_and_encrypted,
    watch_delivers_a_change_within_a_second,
    deleting_a_used_mailbox_names_its_users,
);
