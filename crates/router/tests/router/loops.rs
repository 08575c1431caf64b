//! Auto-replies and each loop rule, on both stores.

use deskmail_proto::v1 as pb;

use crate::harness::{Db, Env, mail};
use crate::on_both_stores;

on_both_stores!(
    auto_reply_job_for_a_new_ticket_only,
    no_auto_reply_by_each_loop_rule,
    daily_limit_per_sender,
    auto_reply_log_counts_only_sent_replies
);

async fn auto_reply_job_for_a_new_ticket_only(db: Db) {
    let mut env = Env::new(db).await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    let raw = mail(
        "Carol <carol@cust.test>",
        "support@desk.test",
        "printer",
        "a1@cust.test",
        "References: <r0@cust.test>\r\n",
        "x",
    );
    env.publish("test:a1", &inbox, &raw).await;
    env.wait_processed(1).await;
    let n = env.ticket_of("test:a1").await.number;
    // A follow-up gets none; a queue without auto-reply gets none; a redelivery repeats none.
    let raw =
        mail("carol@cust.test", "support@desk.test", &format!("Re: [Ticket#{n}]"), "a2@cust.test", "", "x");
    env.publish(
        "test:a1",
        &inbox,
        &mail("Carol <carol@cust.test>", "support@desk.test", "printer", "a1@cust.test", "", "x"),
    )
    .await;
    env.publish("test:a2", &inbox, &raw).await;
    env.publish(
        "test:a3",
        &inbox,
        &mail("carol@cust.test", "sales@desk.test", "sales", "a3@cust.test", "", "x"),
    )
    .await;
    env.wait_processed(3).await;
    env.stop_router().await;
    let jobs = env.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (message_id, job) = &jobs[0];
    assert_eq!(message_id, &job.job_id);
    assert_eq!(job.job_id, "autoreply:test:a1");
    assert_eq!(
        job.from.as_deref(),
        Some("Desk <support@desk.test>"),
        "from the system address the mail reached"
    );
    assert_eq!(job.to, ["carol@cust.test"]);
    assert_eq!(job.subject, format!("[Ticket#{n}] Received: printer"));
    assert_eq!(job.in_reply_to.as_deref(), Some("a1@cust.test"));
    assert_eq!(job.references, ["r0@cust.test", "a1@cust.test"]);
    assert_eq!(job.headers.get("Auto-Submitted").map(String::as_str), Some("auto-replied"));
    assert_eq!(job.ticket_number.as_deref(), Some(n.as_str()));
    assert_eq!(job.text.as_deref(), Some(format!("Dear Carol, ticket {n} is open.").as_str()));
    env.stop_router().await;
}

async fn no_auto_reply_by_each_loop_rule(db: Db) {
    let mut env = Env::new(db).await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    let cases = [
        ("auto-submitted", "c1@cust.test", "Auto-Submitted: auto-replied\r\n"),
        ("precedence", "c2@cust.test", "Precedence: bulk\r\n"),
        ("junk", "c3@cust.test", "Precedence: junk\r\n"),
        ("list", "c4@cust.test", "List-Id: <people.lists.test>\r\n"),
        ("mailer-daemon", "MAILER-DAEMON@cust.test", ""),
        ("system-address", "help@desk.test", ""),
    ];
    for (name, from, headers) in &cases {
        let raw = mail(from, "support@desk.test", name, &format!("{name}@x"), headers, "x");
        env.publish(&format!("test:{name}"), &inbox, &raw).await;
    }
    // Control: an ordinary mail in the same run gets its reply.
    env.publish(
        "test:control",
        &inbox,
        &mail("ok@cust.test", "support@desk.test", "control", "ctl@x", "", "x"),
    )
    .await;
    env.wait_processed(cases.len() as u64 + 1).await;
    env.stop_router().await;
    let jobs = env.jobs().await;
    let ids: Vec<&str> = jobs.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["autoreply:test:control"]);
    for (name, ..) in &cases {
        let t = env.ticket_of(&format!("test:{name}")).await;
        assert_eq!(t.queue_id.as_deref(), Some(env.ids.support.as_str()), "{name} still makes a ticket");
    }
    assert!(env.article("test:auto-submitted").await.is_auto_response);
    env.stop_router().await;
}

async fn daily_limit_per_sender(db: Db) {
    let mut env = Env::new(db).await;
    env.update_settings(
        pb::Settings { auto_reply_limit_per_day: 2, ..Default::default() },
        &["auto_reply_limit_per_day"],
    )
    .await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    for i in 0..4 {
        let raw = mail("loop@cust.test", "support@desk.test", &format!("s{i}"), &format!("l{i}@x"), "", "x");
        env.publish(&format!("test:l{i}"), &inbox, &raw).await;
        env.wait_processed(i + 1).await;
    }
    env.publish("test:other", &inbox, &mail("other@cust.test", "support@desk.test", "o", "o@x", "", "x"))
        .await;
    env.wait_processed(5).await;
    env.stop_router().await;
    let mut ids: Vec<String> = env.jobs().await.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    assert_eq!(ids, ["autoreply:test:l0", "autoreply:test:l1", "autoreply:test:other"]);
    env.stop_router().await;
}

/// The log counts the auto-replies sent, not the suppressed ones: with a limit of 2, four
/// mails (two sent, two over the limit) leave 2; a loop-rule mail (bulk) adds nothing.
async fn auto_reply_log_counts_only_sent_replies(db: Db) {
    use deskmail_router::store::entity::auto_reply_log;
    use sea_orm::EntityTrait;
    let mut env = Env::new(db).await;
    env.update_settings(
        pb::Settings { auto_reply_limit_per_day: 2, ..Default::default() },
        &["auto_reply_limit_per_day"],
    )
    .await;
    env.start_router().await;
    let inbox = env.ids.inbox.clone();
    for i in 0..4 {
        let raw = mail("Count@Cust.test", "support@desk.test", &format!("s{i}"), &format!("c{i}@x"), "", "x");
        env.publish(&format!("test:c{i}"), &inbox, &raw).await;
    }
    let bulk = mail("bulk@cust.test", "support@desk.test", "news", "b@x", "Precedence: bulk\r\n", "x");
    env.publish("test:bulk", &inbox, &bulk).await;
    env.wait_processed(5).await;
    env.stop_router().await;
    assert_eq!(env.jobs().await.len(), 2, "two auto-replies sent");
    let store = env.store().await;
    let rows = auto_reply_log::Entity::find().all(store.connection()).await.unwrap();
    let counted: Vec<(String, i32)> =
        rows.iter().filter(|r| r.count > 0).map(|r| (r.address.clone(), r.count)).collect();
    assert_eq!(counted, [("count@cust.test".to_owned(), 2)], "{rows:?}");
}
