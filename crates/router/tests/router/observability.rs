//! The router process's `/metrics`, `/readyz` and JSON logs, over real HTTP, after real
//! traffic; and its reconnect when the broker goes away (this test's vhost only).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use deskmail_mq::Publisher;
use deskmail_testkit::process::DaemonProcess;

use crate::harness::{Db, Env, mail};

/// A port nobody listens on now (bound to 0 and released), as the test kit picks ports.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET http://127.0.0.1:port/path` with a real HTTP client: (status, body).
async fn get(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        match agent.get(&url).call() {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    })
    .await
    .unwrap()
}

/// Sample lines `name{labels} value` of the Prometheus text, keyed by `name{labels}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, v)| v.parse().ok().map(|v| (series.to_owned(), v)))
        .collect()
}

fn spawn(env: &Env, json: bool) -> DaemonProcess {
    let config = env.config_file();
    let mut args = vec!["--config", config.to_str().unwrap()];
    if json {
        args.extend(["--log-format", "json"]);
    }
    DaemonProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_deskmail-router")),
        &args,
        &[("DESKMAIL_LOG__LEVEL", "info,deskmail_router=debug")],
    )
    .unwrap()
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

/// After real traffic the counters on `/metrics` equal what was done: tickets, follow-ups,
/// a duplicate, auto-replies sent and suppressed (bulk, queue without auto-reply), a dead
/// letter; the processing histogram counted every routed mail; the consumer lag of the
/// inbound queue is sampled. The JSON log lines of the per-mail work carry the source id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_done() {
    let mut env = Env::new(Db::Sqlite).await;
    let port = free_port();
    env.extra_toml = format!("max_mail_size = 4096\n[metrics]\nport = {port}\n");
    let mut router = spawn(&env, true);
    wait_http(port, "/readyz", "router ready", |s, _| s == 200).await;
    let inbox = env.ids.inbox.clone();
    let new = [
        ("o1", "Carol <carol@cust.test>", "support@desk.test", ""),
        ("o2", "dave@cust.test", "support@desk.test", ""),
        ("o3", "news@cust.test", "support@desk.test", "Precedence: bulk\r\n"),
        ("o4", "erin@cust.test", "sales@desk.test", ""),
    ];
    for (id, from, to, headers) in new {
        let raw = mail(from, to, &format!("subject {id}"), &format!("{id}@cust.test"), headers, "hello");
        env.publish(&format!("test:{id}"), &inbox, &raw).await;
    }
    env.wait_processed(4).await;
    let reply = mail(
        "carol@cust.test",
        "support@desk.test",
        "Re: subject o1",
        "o5@cust.test",
        "In-Reply-To: <o1@cust.test>\r\n",
        "thanks",
    );
    env.publish("test:o5", &inbox, &reply).await;
    let again =
        mail("Carol <carol@cust.test>", "support@desk.test", "subject o1", "o1@cust.test", "", "hello");
    env.publish("test:o1", &inbox, &again).await;
    let big = mail("fred@cust.test", "support@desk.test", "too big", "o6@cust.test", "", &"x".repeat(8000));
    env.publish("test:o6", &inbox, &big).await;

    let queue = env.topology.inbound_queue();
    let want: &[(&str, f64)] = &[
        (r#"deskmail_router_mails_routed_total{outcome="new_ticket"}"#, 4.0),
        (r#"deskmail_router_mails_routed_total{outcome="follow_up"}"#, 1.0),
        (r#"deskmail_router_mails_routed_total{outcome="duplicate"}"#, 1.0),
        (r#"deskmail_router_mails_routed_total{outcome="ignored"}"#, 0.0),
        (&format!(r#"deskmail_router_tickets_created_total{{mailbox="{inbox}"}}"#), 4.0),
        (&format!(r#"deskmail_router_followups_total{{mailbox="{inbox}"}}"#), 1.0),
        ("deskmail_router_auto_replies_sent_total", 2.0),
        (r#"deskmail_router_auto_replies_suppressed_total{reason="bulk"}"#, 1.0),
        (r#"deskmail_router_auto_replies_suppressed_total{reason="disabled"}"#, 1.0),
        (r#"deskmail_router_auto_replies_suppressed_total{reason="daily_limit"}"#, 0.0),
        ("deskmail_router_mails_dead_lettered_total", 1.0),
        (r#"deskmail_router_processing_duration_seconds_count{outcome="new_ticket"}"#, 4.0),
        (r#"deskmail_router_processing_duration_seconds_count{outcome="follow_up"}"#, 1.0),
        (r#"deskmail_router_processing_duration_seconds_count{outcome="duplicate"}"#, 1.0),
        (&format!(r#"deskmail_queue_messages_ready{{queue="{queue}"}}"#), 0.0),
    ];
    let (_, body) = wait_http(port, "/metrics", "counters match", |s, body| {
        let got = samples(body);
        s == 200 && want.iter().all(|(k, v)| got.get(*k) == Some(v))
    })
    .await;
    let got = samples(&body);
    for (k, v) in want {
        assert_eq!(got.get(*k), Some(v), "{k}");
    }
    assert!(got.contains_key(r#"deskmail_build_info{daemon="deskmail-router",version="0.1.0"}"#), "{body}");

    // What the metrics say is what happened.
    assert_eq!(env.tickets().await.len(), 4);
    assert_eq!(env.count_articles().await, 5);
    assert_eq!(env.jobs().await.len(), 2);
    let status = router.terminate(Duration::from_secs(30)).unwrap();
    let log = router.log();
    assert!(status.success(), "{}", log.join("\n"));
    // JSON lines of the per-mail work carry the mail's source id in their span.
    let planned: Vec<&String> =
        log.iter().filter(|l| l.contains("Mail planned") && l.contains(r#""source_id":"test:o5""#)).collect();
    assert_eq!(planned.len(), 1, "{}", log.join("\n"));
    let line: serde_json::Value = serde_json::from_str(planned[0]).unwrap();
    assert_eq!(line["span"]["name"], "mail");
    assert_eq!(line["span"]["mailbox"], inbox.as_str());
    let dead = log.iter().find(|l| l.contains("Dead-lettered.")).unwrap();
    assert!(dead.contains(r#""source_id":"test:o6""#), "{dead}");
    assert!(dead.contains(r#""name":"batch""#), "a batch span around the dead letter: {dead}");
}

/// `/readyz` is 200, then 503 naming `rabbitmq` while the broker (a node of the test's own)
/// is stopped, then 200 again once it is started; the router reconnected by itself and
/// routes new mail, nothing lost and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_broker_and_the_router_reconnects() {
    let mut env = Env::with_private_broker(Db::Sqlite).await;
    let broker = env.vhost.broker().unwrap().clone();
    let port = free_port();
    env.extra_toml = format!("[metrics]\nport = {port}\n");
    let mut router = spawn(&env, false);
    let (_, body) = wait_http(port, "/readyz", "ready at start", |s, _| s == 200).await;
    for check in ["configd: ready", "database: ready", "rabbitmq: ready"] {
        assert!(body.contains(check), "{body}");
    }
    let (status, health) = get(port, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    let inbox = env.ids.inbox.clone();
    env.publish("test:before", &inbox, &mail("a@cust.test", "support@desk.test", "before", "b1@x", "", "x"))
        .await;
    env.wait_processed(1).await;

    broker.stop().await.unwrap();
    let (_, body) =
        wait_http(port, "/readyz", "unready", |s, b| s == 503 && b.contains("rabbitmq: not ready")).await;
    assert!(body.contains("database: ready"), "{body}");
    assert!(!body.contains("guest:guest"), "{body}");
    // Still unready a few seconds later: the router keeps trying, it does not give up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = get(port, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(router.wait(Duration::from_millis(10)).is_err(), "the router is still running");

    broker.start().await.unwrap();
    wait_http(port, "/readyz", "ready again", |s, _| s == 200).await;
    // The test's own connection was closed too: publish on a new one.
    let amqp = deskmail_mq::AmqpConfig { url: env.vhost.amqp_url_parsed().unwrap(), ..Default::default() };
    let conn = deskmail_mq::connect(&amqp, "test-after").await.unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    let raw = mail("a@cust.test", "support@desk.test", "after", "b2@x", "", "x");
    let m = deskmail_mq::OutgoingMessage::new(env.topology.inbound_exchange(), "mail.raw", raw)
        .message_id("test:after")
        .header("x-mailbox-id", inbox.as_str());
    publisher.publish_confirmed(m).await.unwrap();
    env.wait_processed(2).await;
    assert_eq!(env.article("test:after").await.subject, "after");
    let status = router.terminate(Duration::from_secs(30)).unwrap();
    let log = router.log().join("\n");
    assert!(status.success(), "{log}");
    assert!(log.contains("reconnect"), "{log}");
    assert_eq!(env.count_articles().await, 2, "nothing lost, nothing twice");
}

/// systemd `Type=notify`: `READY=1` once the router consumes, `STOPPING=1` on SIGTERM, and
/// `WATCHDOG=1` pings when `WATCHDOG_USEC` asks for them, on the `$NOTIFY_SOCKET` datagram socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_watchdog_and_stopping() {
    let env = Env::new(Db::Sqlite).await;
    let config = env.config_file();
    let seen = deskmail_testkit::process::check_sd_notify(
        Path::new(env!("CARGO_BIN_EXE_deskmail-router")),
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
