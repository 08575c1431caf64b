//! Each dispatch rule of the design, on both stores.

use deskmail_proto::v1 as pb;

use crate::harness::{Db, Env, mail};
use crate::on_both_stores;

on_both_stores!(
    recipients_in_order_then_fallback_and_by_queue,
    trusted_headers_only_from_trusted_mailboxes,
    postmaster_filters_in_order,
    followups_by_number_message_id_and_bounce,
    companies_and_unknown_senders,
    auto_increment_numbers,
    unparsable_becomes_an_article_too_large_a_dead_letter,
    attachments_and_bodies_are_stored,
    followup_reopens_a_closed_ticket,
);

async fn recipients_in_order_then_fallback_and_by_queue(db: Db) {
    let mut env = Env::new(db).await;
    env.start_router().await;
    let ids = env.ids.clone();
    let inbox = ids.inbox.clone();
    let cases = [
        // Cc (sales) comes before Delivered-To (support).
        (
            "r1",
            &inbox,
            "x@else.test",
            "Delivered-To: support@desk.test\r\nCc: sales@desk.test\r\n",
            &ids.sales,
        ),
        // Case-insensitive, Delivered-To.
        ("r2", &inbox, "nobody@else.test", "Delivered-To: SALES@DESK.TEST\r\n", &ids.sales),
        // An alias in X-Original-To.
        ("r3", &inbox, "nobody@else.test", "X-Original-To: help@desk.test\r\n", &ids.support),
        // No system address: the mailbox's fallback.
        ("r4", &inbox, "nobody@else.test", "", &ids.support),
        // A by-queue mailbox ignores the recipients.
        ("r5", &ids.billing_box, "sales@desk.test", "", &ids.billing),
    ];
    for (id, mailbox, to, headers, _) in &cases {
        let raw = mail(
            "Carol <carol@cust.test>",
            to,
            &format!("case {id}"),
            &format!("{id}@cust.test"),
            headers,
            "hi",
        );
        env.publish(&format!("test:{id}"), mailbox, &raw).await;
    }
    env.wait_processed(cases.len() as u64).await;
    let today = deskmail_router::store::civil_day(deskmail_router::now_micros()).to_string();
    for (id, _, _, _, queue) in &cases {
        let t = env.ticket_of(&format!("test:{id}")).await;
        assert_eq!(&t.queue_id.as_deref().unwrap_or(""), queue, "queue of {id}");
        assert_eq!(t.number.len(), 15, "{}", t.number);
        assert!(t.number.starts_with(&format!("{today}10")), "{}", t.number);
        assert_eq!(t.customer_address, "carol@cust.test");
        assert_eq!(t.title, format!("case {id}"));
    }
    env.stop_router().await;
    let events = env.events().await;
    assert_eq!(events.len(), cases.len());
    let e = events.iter().find(|e| e["source_id"] == "test:r1").unwrap();
    assert_eq!(e["event"], "ticket.created");
    assert_eq!(e["queue"], "Sales");
    assert_eq!(e["from"], "carol@cust.test");
    assert_eq!(e["subject"], "case r1");
    assert_eq!(e["ticket_number"], env.ticket_of("test:r1").await.number.as_str());
    assert_eq!(e["article_id"], env.article("test:r1").await.id.as_str());
    env.stop_router().await;
}

async fn trusted_headers_only_from_trusted_mailboxes(db: Db) {
    let mut env = Env::new(db).await;
    env.start_router().await;
    let headers =
        "X-Deskmail-Queue: sales\r\nX-Deskmail-Priority: 1\r\nX-Deskmail-Customer: vip@acme.test\r\n";
    let raw = mail("relay@portal.test", "nobody@else.test", "from the portal", "t1@p", headers, "x");
    env.publish("test:trusted", &env.ids.trusted.clone(), &raw).await;
    let raw = mail("relay@portal.test", "nobody@else.test", "from outside", "t2@p", headers, "x");
    env.publish("test:untrusted", &env.ids.inbox.clone(), &raw).await;
    let raw =
        mail("relay@portal.test", "support@desk.test", "drop me", "t3@p", "X-Deskmail-Ignore: yes\r\n", "x");
    env.publish("test:ignored", &env.ids.trusted.clone(), &raw).await;
    env.wait_processed(3).await;

    let t = env.ticket_of("test:trusted").await;
    assert_eq!(t.queue_id.as_deref(), Some(env.ids.sales.as_str()));
    assert_eq!(t.priority, 1);
    assert_eq!(t.customer_address, "vip@acme.test");
    assert_eq!(t.company_id.as_deref(), Some(env.ids.acme.as_str()));

    let t = env.ticket_of("test:untrusted").await;
    assert_eq!(
        t.queue_id.as_deref(),
        Some(env.ids.support.as_str()),
        "headers from an untrusted box are ignored"
    );
    assert_eq!(t.priority, 3);
    assert_eq!(t.customer_address, "relay@portal.test");

    let p = env.processed("test:ignored").await;
    assert_eq!(p.outcome, "ignored");
    assert!(p.raw.is_some_and(|r| !r.is_empty()), "the raw mail of an ignored mail is logged");
    assert_eq!(env.count_articles().await, 2);
    env.stop_router().await;
}

async fn postmaster_filters_in_order(db: Db) {
    let mut env = Env::new(db).await;
    let admin = env.configd.admin().await;
    let filter =
        |name: &str, position: i32, header: &str, pattern: &str, action: pb::FilterAction, stop: bool| {
            pb::CreateFilterRequest {
                filter: Some(pb::Filter {
                    name: name.into(),
                    position,
                    header: header.into(),
                    pattern: pattern.into(),
                    action: Some(action),
                    stop,
                    ..Default::default()
                }),
            }
        };
    let billing = env.ids.billing.clone();
    for f in [
        filter(
            "invoices",
            1,
            "Subject",
            "(?i)invoice",
            pb::FilterAction { set_queue_id: billing.clone(), set_priority: 2, ignore: false },
            true,
        ),
        filter(
            "urgent",
            2,
            "Subject",
            "(?i)invoice|refund",
            pb::FilterAction { set_priority: 5, ..Default::default() },
            false,
        ),
        filter(
            "spam",
            3,
            "X-Spam-Flag",
            "^YES$",
            pb::FilterAction { ignore: true, ..Default::default() },
            false,
        ),
    ] {
        admin.filters().create_filter(f).await.unwrap();
    }
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    env.publish("test:f1", &inbox, &mail("a@c.test", "sales@desk.test", "Invoice 42", "f1@c", "", "x")).await;
    env.publish("test:f2", &inbox, &mail("a@c.test", "sales@desk.test", "refund please", "f2@c", "", "x"))
        .await;
    env.publish(
        "test:f3",
        &inbox,
        &mail("a@c.test", "sales@desk.test", "buy now", "f3@c", "X-Spam-Flag: YES\r\n", "x"),
    )
    .await;
    env.wait_processed(3).await;
    let t = env.ticket_of("test:f1").await;
    assert_eq!((t.queue_id.as_deref(), t.priority), (Some(billing.as_str()), 2), "first filter, then stop");
    let t = env.ticket_of("test:f2").await;
    assert_eq!((t.queue_id.as_deref(), t.priority), (Some(env.ids.sales.as_str()), 5));
    assert_eq!(env.processed("test:f3").await.outcome, "ignored");
    assert_eq!(env.count_articles().await, 2);
    env.stop_router().await;
}

async fn followups_by_number_message_id_and_bounce(db: Db) {
    let mut env = Env::new(db).await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    env.publish(
        "test:m1",
        &inbox,
        &mail("c@cust.test", "sales@desk.test", "printer broken", "m1@cust.test", "", "x"),
    )
    .await;
    env.wait_processed(1).await;
    let first = env.ticket_of("test:m1").await;
    let n = first.number.clone();
    let followups = [
        ("m2", format!("Re: [Ticket#{n}] printer broken"), String::new()),
        ("m3", "Re: printer".to_owned(), "In-Reply-To: <m1@cust.test>\r\n".to_owned()),
        ("m4", "Fwd: printer".to_owned(), "References: <zzz@else.test> <m1@cust.test>\r\n".to_owned()),
    ];
    for (id, subject, headers) in &followups {
        let raw =
            mail("c@cust.test", "sales@desk.test", subject, &format!("{id}@cust.test"), headers, "more");
        env.publish(&format!("test:{id}"), &inbox, &raw).await;
    }
    // A number that matches no ticket opens a new one.
    let raw = mail("c@cust.test", "sales@desk.test", "[Ticket#99999999] old", "m5@cust.test", "", "x");
    env.publish("test:m5", &inbox, &raw).await;
    // A bounce of m1.
    let bounce = "From: MAILER-DAEMON@mx.cust.test\r\nTo: sales@desk.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
        Message-ID: <b1@mx.cust.test>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"BB\"\r\n\r\n\
        --BB\r\nContent-Type: text/plain\r\n\r\nI could not deliver your mail.\r\n\
        --BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.cust.test\r\n\r\n\
        Final-Recipient: rfc822; gone@cust.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
        Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n\
        --BB\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: c@cust.test\r\nTo: gone@cust.test\r\n\
        Subject: printer broken\r\nMessage-ID: <m1@cust.test>\r\n\r\n--BB--\r\n";
    env.publish("test:bounce", &inbox, bounce.as_bytes()).await;
    env.wait_processed(6).await;

    for id in ["m2", "m3", "m4"] {
        assert_eq!(env.ticket_of(&format!("test:{id}")).await.id, first.id, "{id} is a follow-up");
    }
    assert_ne!(env.ticket_of("test:m5").await.id, first.id);
    let b = env.article("test:bounce").await;
    assert!(b.is_bounce, "the bounce is flagged");
    assert_eq!(b.ticket_id, first.id, "the bounce is attached to the ticket whose mail bounced");
    assert!(b.bounce_info.unwrap_or_default().contains("5.1.1"));
    assert_eq!(env.tickets().await.len(), 2);
    env.stop_router().await;
    let events = env.events().await;
    let followups = events.iter().filter(|e| e["event"] == "ticket.followup").count();
    assert_eq!(followups, 4, "{events:?}");
    env.stop_router().await;
}

async fn companies_and_unknown_senders(db: Db) {
    let mut env = Env::new(db).await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    env.publish("test:c1", &inbox, &mail("Ann <Ann@ACME.test>", "sales@desk.test", "hello", "c1@a", "", "x"))
        .await;
    env.publish("test:c2", &inbox, &mail("bob@else.test", "sales@desk.test", "hello", "c2@a", "", "x")).await;
    env.wait_processed(2).await;
    assert_eq!(env.ticket_of("test:c1").await.company_id.as_deref(), Some(env.ids.acme.as_str()));
    assert_eq!(env.ticket_of("test:c2").await.company_id, None);
    let bob_ticket = env.ticket_of("test:c2").await.number;

    env.update_settings(
        pb::Settings { ignore_unknown_senders: true, ..Default::default() },
        &["ignore_unknown_senders"],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await; // the Watch stream delivers the change
    env.publish("test:c3", &inbox, &mail("eve@else.test", "sales@desk.test", "new", "c3@a", "", "x")).await;
    let raw =
        mail("bob@else.test", "sales@desk.test", &format!("Re: [Ticket#{bob_ticket}]"), "c4@a", "", "x");
    env.publish("test:c4", &inbox, &raw).await;
    env.publish("test:c5", &inbox, &mail("ann@acme.test", "sales@desk.test", "again", "c5@a", "", "x")).await;
    env.wait_processed(5).await;
    assert_eq!(env.processed("test:c3").await.outcome, "ignored", "unknown sender, new ticket: ignored");
    assert_eq!(env.ticket_of("test:c4").await.number, bob_ticket, "a follow-up still lands");
    assert_eq!(env.ticket_of("test:c5").await.company_id.as_deref(), Some(env.ids.acme.as_str()));
    env.stop_router().await;
}

async fn auto_increment_numbers(db: Db) {
    let mut env = Env::new(db).await;
    env.update_settings(
        pb::Settings { number_format: pb::NumberFormat::AutoIncrement as i32, ..Default::default() },
        &["number_format"],
    )
    .await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    for i in 0..3 {
        let raw = mail("a@c.test", "sales@desk.test", &format!("n{i}"), &format!("n{i}@c"), "", "x");
        env.publish(&format!("test:n{i}"), &inbox, &raw).await;
    }
    env.wait_processed(3).await;
    let mut numbers: Vec<String> = env.tickets().await.into_iter().map(|t| t.number).collect();
    numbers.sort();
    assert_eq!(numbers, ["1", "2", "3"]);
    env.stop_router().await;
}

async fn unparsable_becomes_an_article_too_large_a_dead_letter(db: Db) {
    let mut env = Env::new(db).await;
    env.extra_toml = "max_mail_size = 4096".into();
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    let big = mail("a@c.test", "sales@desk.test", "big", "big@c", "", &"x".repeat(10_000));
    env.publish("test:big", &inbox, &big).await;
    env.publish("test:empty", &inbox, b"").await;
    env.publish("test:ok", &inbox, &mail("a@c.test", "sales@desk.test", "ok", "ok@c", "", "x")).await;
    env.wait_processed(2).await;
    let dead_queue = env.topology.inbound_dead_queue();
    env.wait_queue(&dead_queue, 1).await;
    let dead = env.drain(&dead_queue).await;
    assert_eq!(dead.len(), 1);
    let (id, body, props) = &dead[0];
    assert_eq!(id.as_deref(), Some("test:big"));
    assert_eq!(body.len(), big.len(), "the dead letter carries the whole mail");
    let reason = match props.headers().as_ref().unwrap().inner().get("x-deskmail-error").unwrap() {
        deskmail_mq::lapin::types::AMQPValue::LongString(s) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("more than the limit of 4096 bytes"), "{reason}");
    let empty = env.article("test:empty").await;
    assert!(empty.raw.is_empty());
    assert_eq!(env.count_articles().await, 2);
    env.stop_router().await;
}

async fn attachments_and_bodies_are_stored(db: Db) {
    let mut env = Env::new(db).await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    let raw = "From: =?utf-8?q?J=C3=BCrgen?= <j@cust.test>\r\nTo: support@desk.test\r\n\
        Subject: =?iso-8859-1?q?R=E9sum=E9?=\r\nMessage-ID: <att@cust.test>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
        --XX\r\nContent-Type: multipart/alternative; boundary=\"YY\"\r\n\r\n\
        --YY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain text body.\r\n\
        --YY\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML <img src=\"cid:logo@x\"></p>\r\n--YY--\r\n\
        --XX\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Disposition: inline\r\n\
        Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n\
        --XX\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n\
        Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n\
        Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--XX--\r\n";
    env.publish("test:att", &inbox, raw.as_bytes()).await;
    env.wait_processed(1).await;
    let a = env.article("test:att").await;
    assert_eq!(a.subject, "Résumé");
    assert_eq!(a.from_name, "Jürgen");
    assert!(a.body_text.starts_with("Plain text body."), "{:?}", a.body_text);
    assert!(a.body_html.as_deref().unwrap_or("").contains("<p>HTML"));
    assert_eq!(a.raw, raw.as_bytes());
    let files = env.attachments(&a.id).await;
    let pdf = files.iter().find(|f| f.content_type == "application/pdf").expect("the PDF is stored");
    assert_eq!(pdf.filename, "résumé.pdf");
    assert_eq!(pdf.size, pdf.content.len() as i64);
    assert_eq!(pdf.sha256, deskmail_router::sha256_hex(&pdf.content));
    assert!(pdf.content.starts_with(b"%PDF-1.4"));
    let logo = files.iter().find(|f| f.content_type == "image/png").expect("the inline image is stored");
    assert_eq!(logo.content_id.as_deref(), Some("logo@x"));
    assert!(logo.inline);
    env.stop_router().await;
}

/// A follow-up to a closed ticket reopens it (state `open`); one to an open ticket keeps its
/// state.
async fn followup_reopens_a_closed_ticket(db: Db) {
    use deskmail_router::store::entity::ticket;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
    let mut env = Env::new(db).await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    for id in ["k1", "k2"] {
        let raw = mail(
            "carol@cust.test",
            "support@desk.test",
            &format!("help {id}"),
            &format!("{id}@cust.test"),
            "",
            "x",
        );
        env.publish(&format!("test:{id}"), &inbox, &raw).await;
    }
    env.wait_processed(2).await;
    let closed = env.ticket_of("test:k1").await;
    assert_eq!(closed.state, "new");
    let store = env.store().await;
    let mut m = closed.clone().into_active_model();
    m.state = Set("closed successful".to_owned());
    m.update(store.connection()).await.unwrap();
    let reply_closed = mail(
        "carol@cust.test",
        "support@desk.test",
        &format!("Re: [Ticket#{}] help k1", closed.number),
        "k3@cust.test",
        "",
        "still broken",
    );
    env.publish("test:k3", &inbox, &reply_closed).await;
    let reply_open = mail(
        "carol@cust.test",
        "support@desk.test",
        "Re: help k2",
        "k4@cust.test",
        "In-Reply-To: <k2@cust.test>\r\n",
        "ok",
    );
    env.publish("test:k4", &inbox, &reply_open).await;
    env.wait_processed(4).await;
    env.stop_router().await;
    let reopened = env.ticket_of("test:k3").await;
    assert_eq!(reopened.id, closed.id, "the follow-up landed on the closed ticket");
    assert_eq!(reopened.state, ticket::STATE_OPEN);
    assert!(reopened.updated_at >= closed.updated_at);
    let other = env.ticket_of("test:k4").await;
    assert_eq!(other.id, env.ticket_of("test:k2").await.id);
    assert_eq!(other.state, "new", "an open ticket keeps its state");
}
