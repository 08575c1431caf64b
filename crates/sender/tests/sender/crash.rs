//! `kill -9` of the sender while 1,000 jobs flow, then a restart: every job delivered, and
//! none twice except inside the window RFC 5321 §6.1 accepts (a crash between the server's
//! 250 and the sent-log record), which is at most the sends in flight at the kill.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use deskmail_mq::OutgoingMessage;
use deskmail_testkit::process::DaemonProcess;
use serde_json::json;

use crate::harness::*;

const JOBS: usize = 1000;
const IN_FLIGHT: usize = 16;

fn spawn(h: &Harness, config: &Path) -> DaemonProcess {
    let mut p = DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-sender")),
        &["--config", config.to_str().unwrap()],
        &[],
    )
    .unwrap();
    p.wait_for_log("Ready.", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log().join("\n")));
    let _ = h;
    p
}

/// Job ids of every mail in the Maildir (new and cur), as delivered by Dovecot.
fn delivered_ids(h: &Harness) -> Vec<String> {
    let root = h.stack.maildir(CUSTOMER).unwrap();
    let mut ids = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(dir) = std::fs::read_dir(root.join(sub)) else { continue };
        for entry in dir {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let id = text
                .lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix("X-Deskmail-Job-Id: "))
                .unwrap_or_else(|| panic!("a mail without job id:\n{text}"));
            ids.push(id.trim().to_owned());
        }
    }
    ids
}

async fn wait_stable_count(h: &Harness, at_least: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut last = usize::MAX;
    loop {
        let n = h.stack.message_count(CUSTOMER, "INBOX").unwrap();
        if n >= at_least && n == last {
            return n;
        }
        assert!(Instant::now() < deadline, "{n} of {at_least} mails after {within:?}\n{}", h.stack.logs());
        last = n;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_1000_jobs_flow_then_restart_delivers_each_job() {
    let h = Harness::new("sender-crash", &[]).await;
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    h.set_default_box(&b.id).await;
    let msgs = (0..JOBS).map(|i| {
        let id = format!("crash-{i:04}");
        let body = serde_json::to_vec(
            &json!({"job_id": id, "to": [CUSTOMER], "subject": format!("job {i}"), "text": "x".repeat(512)}),
        )
        .unwrap();
        OutgoingMessage::new(h.topology.outbound_exchange(), "mail.send", body)
            .message_id(id)
            .content_type("application/json")
    });
    assert!(h.publisher.publish_all(msgs).await.into_iter().all(|r| r.is_ok()));
    let config = h.write_config(&format!("[smtp]\nmax_in_flight = {IN_FLIGHT}\n"));

    let mut first = spawn(&h, &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.stack.message_count(CUSTOMER, "INBOX").unwrap() < 100 {
        assert!(Instant::now() < deadline, "no mail flowing\n{}", first.log().join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL: no drain, no acks for what was in flight
    let at_kill = h.stack.message_count(CUSTOMER, "INBOX").unwrap();
    assert!(at_kill < JOBS, "killed too late to test anything ({at_kill})");

    let mut second = spawn(&h, &config);
    wait_stable_count(&h, JOBS, Duration::from_secs(120)).await;
    assert_eq!(
        h.vhost.wait_queue_message_count("deskmail.outbound.jobs", 0, Duration::from_secs(30)).await.unwrap(),
        Some(0)
    );
    assert!(second.terminate(Duration::from_secs(20)).unwrap().success());

    let ids = delivered_ids(&h);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let missing: Vec<String> =
        (0..JOBS).map(|i| format!("crash-{i:04}")).filter(|id| !counts.contains_key(id.as_str())).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    let twice: Vec<(&str, usize)> = counts.iter().filter(|(_, n)| **n > 1).map(|(id, n)| (*id, *n)).collect();
    // Counting: distinct X-Deskmail-Job-Id values in the Maildir must be all 1,000; a job
    // delivered twice can only be one that was between its 250 and its sent-log record at
    // the kill, so there are at most IN_FLIGHT of them, each at most twice.
    eprintln!("kill -9 after {at_kill} mails; {} mails for {JOBS} jobs; twice: {twice:?}", ids.len());
    assert!(
        twice.len() <= IN_FLIGHT && twice.iter().all(|(_, n)| *n == 2),
        "duplicates beyond the RFC 5321 window: {twice:?}"
    );
    assert_eq!(ids.len(), JOBS + twice.len());
}
