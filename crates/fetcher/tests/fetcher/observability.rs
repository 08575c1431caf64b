//! The fetcher process's `/metrics`, `/readyz` and JSON logs, over real HTTP, after real
//! mail; and its in-process reconnect when the broker goes away (this test's vhost only).

use std::path::Path;
use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;
use deskmail_testkit::metric_value;
use deskmail_testkit::process::DaemonProcess;

use crate::harness::{Env, INBOUND, by_id, mail};

/// A port nobody listens on now (bound to 0 and released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET path` on the metrics port: (status, body); (0, error) when nothing answers.
async fn get(port: u16, path: &str) -> (u16, String) {
    deskmail_testkit::http_get(port, path).await.unwrap_or_else(|e| (0, e.to_string()))
}

/// Polls `path` until `ok(status, body)` or 60 s.
async fn wait_http(port: u16, path: &str, what: &str, ok: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(port, path).await;
        if ok(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "{what}: last answer {status}:\n{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fetcher process with `[metrics] port` set, JSON logs when `json`.
fn spawn(env: &Env, name: &str, port: u16, json: bool) -> DaemonProcess {
    // `[fetch]` is the config's last section: the metrics section follows its body.
    let config = env.config_file(name, &format!("max_messages_per_poll = 50\n[metrics]\nport = {port}"));
    let mut args = vec!["--config", config.to_str().unwrap()];
    if json {
        args.extend(["--log-format", "json"]);
    }
    DaemonProcess::spawn(Path::new(env!("CARGO_BIN_EXE_deskmail-fetcher")), &args, &[]).unwrap()
}

/// After a real drain of N mails (and one over the size limit), `/metrics` counts N fetched,
/// N published and 1 oversized for the mailbox, its polls in the duration histogram, no poll
/// error; the JSON log lines of the
/// per-mail work carry the mail's source id and the mailbox id in their span.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_a_real_drain() {
    let user = "support@desk.test";
    let stack = MailStack::builder().user(user, "pw").start().unwrap();
    let mut env = Env::new().await;
    let n = 120;
    let mails: Vec<Vec<u8>> = (0..n).map(|i| mail(user, &format!("mail {i}"))).collect();
    stack.deliver_many(user, &mails).unwrap();
    // One mail over the box's limit: moved aside, not fetched, counted as oversized.
    let mut big = format!("From: customer@client.test\r\nTo: {user}\r\nSubject: big\r\n\r\n").into_bytes();
    while big.len() < 300_000 {
        big.extend_from_slice(&[b'x'; 76]);
        big.extend_from_slice(b"\r\n");
    }
    stack.deliver(user, &big).unwrap();
    let mb = env
        .mailbox(&stack, user, "pw", pb::Protocol::Imap, pb::Security::None, |i| i.max_message_size = 100_000)
        .await;
    let port = free_port();
    let mut fetcher = spawn(&env, "metrics", port, true);
    wait_http(port, "/readyz", "fetcher ready", |s, _| s == 200).await;
    env.wait_count(INBOUND, n as u32, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.message_count(user, "INBOX").unwrap() != 0 {
        assert!(Instant::now() < deadline, "INBOX not emptied:\n{}", fetcher.log().join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let label = format!(r#"mailbox="{}""#, mb.id);
    let (_, body) = wait_http(port, "/metrics", "counters match", |s, body| {
        s == 200
            && metric_value(body, "deskmail_fetcher_mails_published_total", &label) == Some(n as f64)
            && metric_value(body, "deskmail_fetcher_poll_duration_seconds_count", &label).is_some()
    })
    .await;
    let value = |name: &str, labels: &str| metric_value(&body, name, labels);
    assert_eq!(value("deskmail_fetcher_mails_fetched_total", &label), Some(n as f64), "{body}");
    assert_eq!(value("deskmail_fetcher_mails_published_total", &label), Some(n as f64), "{body}");
    assert_eq!(value("deskmail_fetcher_mails_oversized_total", &label), Some(1.0), "{body}");
    // 120 mails at 50 a poll: at least three polls, each one timed.
    let polls = value("deskmail_fetcher_poll_duration_seconds_count", &label).unwrap();
    assert!(polls >= 3.0, "{polls} polls:\n{body}");
    for reason in ["auth_failed", "connect_failed", "timeout", "protocol_error"] {
        let l = format!(r#"mailbox="{}",reason="{reason}""#, mb.id);
        assert_eq!(value("deskmail_fetcher_poll_errors_total", &l), Some(0.0), "{reason}:\n{body}");
    }
    assert!(
        value("deskmail_build_info", r#"daemon="deskmail-fetcher",version="0.1.0""#) == Some(1.0),
        "{body}"
    );
    let got = env.take(INBOUND).await;
    assert_eq!(by_id(&got).len(), n);

    let status = fetcher.terminate(Duration::from_secs(30)).unwrap();
    let log = fetcher.log();
    assert!(status.success(), "{}", log.join("\n"));
    let fetched: Vec<&String> = log.iter().filter(|l| l.contains("Mail fetched; publishing.")).collect();
    assert_eq!(fetched.len(), n, "one per mail:\n{}", log.join("\n"));
    let line: serde_json::Value = serde_json::from_str(fetched[0]).unwrap();
    assert_eq!(line["span"]["name"], "mail", "{line}");
    assert_eq!(line["span"]["mailbox_id"], mb.id.as_str(), "{line}");
    let source = line["span"]["source_id"].as_str().unwrap_or_default();
    assert!(source.starts_with(&format!("imap:{}:", mb.id)), "{line}");
    assert!(got.iter().any(|g| g.message_id == source), "the logged source id is a published message id");
    let spans = line["spans"].as_array().map(|s| s.iter().map(|s| s["name"].clone()).collect::<Vec<_>>());
    assert!(spans.is_some_and(|s| s.contains(&"poll".into())), "inside the poll span: {line}");
}

/// `/readyz` is 200, then 503 naming `rabbitmq` while the broker (a node of the test's own)
/// is stopped, the fetcher still running and the mail delivered meanwhile left on the
/// server; then 200 again once the broker is started, and that mail reaches the queue,
/// nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_follows_the_broker_and_the_fetcher_reconnects() {
    let user = "support@desk.test";
    let stack = MailStack::builder().user(user, "pw").start().unwrap();
    let mut env = Env::with_private_broker().await;
    let broker = env.vhost.broker().unwrap().clone();
    stack.deliver(user, &mail(user, "before")).unwrap();
    env.mailbox(&stack, user, "pw", pb::Protocol::Imap, pb::Security::None, |_| {}).await;
    let port = free_port();
    let mut fetcher = spawn(&env, "readyz", port, false);
    let (_, body) = wait_http(port, "/readyz", "ready at start", |s, _| s == 200).await;
    for check in ["configd: ready", "rabbitmq: ready"] {
        assert!(body.contains(check), "{body}");
    }
    let (status, health) = get(port, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    env.wait_count(INBOUND, 1, Duration::from_secs(30)).await;

    broker.stop().await.unwrap();
    let (_, body) =
        wait_http(port, "/readyz", "unready", |s, b| s == 503 && b.contains("rabbitmq: not ready")).await;
    assert!(body.contains("configd: ready"), "{body}");
    assert!(!body.contains("guest:guest"), "{body}");
    // Mail arriving while the broker is away stays on the server: nothing is deleted that
    // the broker did not confirm.
    let during: Vec<Vec<u8>> = (0..5).map(|i| mail(user, &format!("during {i}"))).collect();
    stack.deliver_many(user, &during).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, body) = get(port, "/readyz").await;
    assert_eq!(status, 503, "still unready, still trying:\n{body}");
    assert!(fetcher.wait(Duration::from_millis(10)).is_err(), "the fetcher is still running");
    assert_eq!(stack.message_count(user, "INBOX").unwrap(), 5, "{}", fetcher.log().join("\n"));

    broker.start().await.unwrap();
    wait_http(port, "/readyz", "ready again", |s, _| s == 200).await;
    env.wait_count(INBOUND, 6, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.message_count(user, "INBOX").unwrap() != 0 {
        assert!(Instant::now() < deadline, "INBOX not emptied:\n{}", fetcher.log().join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = env.take(INBOUND).await;
    let bodies: Vec<String> = got.iter().map(|g| String::from_utf8_lossy(&g.body).into_owned()).collect();
    for subject in ["before", "during 0", "during 1", "during 2", "during 3", "during 4"] {
        let line = format!("Subject: {subject}\r\n");
        assert!(bodies.iter().any(|b| b.contains(&line)), "{subject} missing");
    }
    let status = fetcher.terminate(Duration::from_secs(30)).unwrap();
    let log = fetcher.log().join("\n");
    assert!(status.success(), "{log}");
    assert!(log.contains("reconnect"), "{log}");
}

/// systemd `Type=notify`: `READY=1` once the fetcher is connected and has its config,
/// `WATCHDOG=1` pings when `WATCHDOG_USEC` asks for them, `STOPPING=1` on SIGTERM, on the
/// `$NOTIFY_SOCKET` datagram socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_watchdog_and_stopping() {
    let env = Env::new().await;
    let config = env.config_file("notify", "");
    let seen = deskmail_testkit::process::check_sd_notify(
        Path::new(env!("CARGO_BIN_EXE_deskmail-fetcher")),
        &config,
        env.dir.path(),
    )
    .await
    .unwrap();
    assert!(
        seen.iter().any(|m| m.contains("READY=1")) && seen.iter().any(|m| m.contains("STOPPING=1")),
        "{seen:?}"
    );
}
