//! Issue 7: `make run`'s entry point (scripts/run.sh) brings the whole system up with its demo
//! mail server; a mail sent with swaks becomes a ticket in the router's store and a
//! `ticket.created` event; stopping it leaves no process behind.

use std::time::{Duration, Instant};

use deskmail_mq::lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use deskmail_mq::lapin::types::FieldTable;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use deskmail_e2e::system::{System, bin_dir, live_processes, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_entry_point_turns_a_swaks_mail_into_a_ticket_and_stops_clean() {
    let mut system = System::start().await.unwrap();
    let run_dir = system.dir.path().to_path_buf();
    let mailstack_dir = std::path::Path::new(system.demo("DEMO_CA_PEM"))
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .display()
        .to_string();

    // Our own queue on the events exchange (the topology is declared idempotently, so this
    // does not race the router's own declaration).
    let amqp = deskmail_mq::AmqpConfig { url: system.vhost.amqp_url_parsed().unwrap(), ..Default::default() };
    let (conn, topology) =
        deskmail_mq::connect_and_declare(&amqp, "e2e", &CancellationToken::new()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("e2e.events".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        "e2e.events".into(),
        topology.events_exchange().as_str().into(),
        "ticket.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let subject = format!("Printer on fire {}", std::process::id());
    let swaks = std::process::Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", system.demo("DEMO_SMTP_PORT"))])
        .args(["--from", system.demo("DEMO_CUSTOMER"), "--to", system.demo("DEMO_SUPPORT")])
        .args(["--header", &format!("Subject: {subject}"), "--body", "It smokes. Carol"])
        .output()
        .expect("swaks (make services installs it)");
    assert!(swaks.status.success(), "swaks failed: {}", String::from_utf8_lossy(&swaks.stdout));

    // The ticket, in the router's SQLite store.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", system.router_db().display()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (number, state) = loop {
        let row = sqlx::query("SELECT number, state FROM tickets WHERE title = ?")
            .bind(&subject)
            .fetch_optional(&db)
            .await
            .ok()
            .flatten();
        if let Some(row) = row {
            break (row.get::<String, _>("number"), row.get::<String, _>("state"));
        }
        assert!(Instant::now() < deadline, "no ticket for {subject:?} within 60 s\n{}", system.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state, "new");
    db.close().await;

    // The ticket.created event for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let event = loop {
        if let Some(d) = ch.basic_get("e2e.events".into(), BasicGetOptions::default()).await.unwrap() {
            d.ack(BasicAckOptions::default()).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&d.delivery.data).unwrap();
            if v["ticket_number"] == number.as_str() {
                break v;
            }
        } else {
            assert!(Instant::now() < deadline, "no ticket.created event for ticket {number}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(event["event"], "ticket.created");
    assert_eq!(event["subject"], subject.as_str());
    assert_eq!(event["queue"], "Support");
    assert_eq!(event["from"], system.demo("DEMO_CUSTOMER"));
    // (A channel being closed makes lapin's connection close report an error: not ours.)
    let _ = ch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;

    // deskmailctl status shows the demo mailbox green.
    let status = std::process::Command::new(bin_dir().join("deskmailctl"))
        .args(["-c", &repo_root().join("config/deskmailctl.example.toml").display().to_string()])
        .args(["status", "--output", "json"])
        .env("DESKMAILCTL_ENDPOINT", format!("http://127.0.0.1:{}", system.port_base))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "deskmailctl status failed: {text}");
    assert!(text.contains("\"support\"") && text.to_lowercase().contains("active"), "status: {text}");

    // Stop it as Ctrl-C does: every process it started is gone.
    let pids = system.started_pids();
    assert_eq!(pids.len(), 5, "demo mail + 4 daemons:\n{}", system.log());
    let exit = system.stop().await.unwrap();
    assert!(exit.success(), "run.sh exited with {exit}:\n{}", system.log());
    assert!(system.log().contains("run: all stopped."));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = live_processes(&pids, &run_dir, &mailstack_dir);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left after stop:\n{}", left.join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
