//! Issue 8, the loop: customer mail -> ticket -> auto-reply -> customer reply -> follow-up
//! -> an agent's answer published by a Python pika client, through the contract's box; and
//! another desk's autoresponder answering every mail does not start a mail loop.

use std::time::Duration;

use deskmail_e2e::desk::{CONTRACT, CUSTOMER, Daemon, Desk, HELPDESK, PASSWORD, PREFIX, SUPPORT, python};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_mail_goes_round_the_whole_loop() {
    let mut desk = Desk::start(10).await;

    let subject = "My printer is on fire";
    desk.send(CUSTOMER, SUPPORT, subject, None);
    let number = desk.wait_ticket(subject, 1).await;
    let queue: String = {
        let pool = desk.pg().await;
        let q = sqlx::query_scalar("SELECT queue_id FROM tickets WHERE number = $1")
            .bind(&number)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        q
    };
    assert_eq!(queue, desk.queue_support, "the ticket is in the Support queue");

    let auto = desk.wait_mail(CUSTOMER, "auto-reply", |m| m.subject.contains(&number)).await;
    assert_eq!(auto.auto_submitted, "auto-replied");
    assert!(auto.from.contains(SUPPORT), "auto-reply from {}", auto.from);
    assert!(auto.subject.contains(subject), "{}", auto.subject);

    let answer_subject = format!("Re: {}", auto.subject);
    desk.send(CUSTOMER, SUPPORT, &answer_subject, Some(&auto.message_id));
    assert_eq!(
        desk.wait_ticket(&answer_subject, 2).await,
        number,
        "the reply is a follow-up on the same ticket"
    );

    let job = serde_json::json!({
        "job_id": "agent-answer-1",
        "contract": "Gold",
        "to": [CUSTOMER],
        "subject": "Your printer",
        "text": "A technician is on the way.",
        "ticket_number": number,
        "in_reply_to": auto.message_id,
    });
    python(&["job", &desk.vhost.amqp_url(), PREFIX, &job.to_string()]);
    let agent = desk.wait_mail(CUSTOMER, "agent's answer", |m| m.subject.contains("Your printer")).await;
    assert!(agent.from.contains(CONTRACT), "sent through the contract's box: From {}", agent.from);
    assert!(agent.subject.contains(&number), "the ticket number is in the subject: {}", agent.subject);
    assert!(agent.text.contains("A technician is on the way."));

    // Exactly what was expected reached the customer: one auto-reply, one answer.
    assert_eq!(desk.mailbox(CUSTOMER).len(), 2, "{:#?}", desk.mailbox(CUSTOMER));
    for d in [Daemon::Fetcher, Daemon::Router, Daemon::Sender, Daemon::Configd] {
        desk.terminate(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_desks_autoresponder_does_not_start_a_mail_loop() {
    const LIMIT: u32 = 3;
    let mut desk = Desk::start(LIMIT).await;
    desk.send(HELPDESK, SUPPORT, "Request from the other desk", None);

    // The other desk answers every mail with a fresh subject and no loop headers, until
    // nothing came for 10 s.
    let (host, smtp, imaps) =
        ("127.0.0.1".to_owned(), desk.stack.smtp_port().to_string(), desk.stack.imaps_port().to_string());
    let ca = desk.stack.ca_pem_path().display().to_string();
    let answered = tokio::task::spawn_blocking(move || {
        python(&["bot", &host, &smtp, &imaps, &ca, HELPDESK, PASSWORD, "10"]).trim().parse::<usize>().unwrap()
    })
    .await
    .unwrap();

    // Our desk answered the first mail and the bot's first answers, up to the daily limit per
    // sender, then stopped: the bot got LIMIT auto-replies and answered each once.
    assert_eq!(answered, LIMIT as usize, "the bot answered {answered} mails");
    let to_bot = desk.mailbox(HELPDESK);
    assert_eq!(to_bot.len(), LIMIT as usize, "{to_bot:#?}");
    assert!(to_bot.iter().all(|m| m.auto_submitted == "auto-replied"));
    // Every mail of the other desk still became an article: nothing is dropped.
    let articles =
        desk.count("SELECT count(*) FROM articles WHERE from_address = 'helpdesk@other.test'").await;
    assert_eq!(articles, 1 + LIMIT as i64);
    // And it stays quiet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(desk.mailbox(HELPDESK).len(), LIMIT as usize);
    for d in [Daemon::Fetcher, Daemon::Router, Daemon::Sender, Daemon::Configd] {
        desk.terminate(d);
    }
}
