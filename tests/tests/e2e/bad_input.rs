//! Issue 8, bad input: mail bombs and garbage among ordinary mail, hostile outbound jobs among
//! ordinary jobs. Each gets a clear result (an article, with the parse problem noted, or a
//! dead letter with the reason) and the mail around it is routed as if nothing happened.

use std::time::{Duration, Instant};

use deskmail_mq::lapin::options::{BasicAckOptions, BasicGetOptions};
use deskmail_testkit::http_get;
use sqlx::Row;

use deskmail_e2e::desk::{CUSTOMER, Daemon, Desk, PREFIX, SUPPORT, VICTIM, python};

fn plain(subject: &str) -> Vec<u8> {
    format!(
        "From: Carol <{CUSTOMER}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\n\r\nHello.\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

fn with_attachment(subject: &str, bytes: usize) -> Vec<u8> {
    use std::fmt::Write;
    let mut m = format!(
        "From: {CUSTOMER}\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/octet-stream; name=\"big.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    // base64 of zero bytes is all 'A'; 57 bytes make one 76-character line.
    let line = "A".repeat(76);
    for _ in 0..bytes / 57 {
        let _ = write!(m, "{line}\r\n");
    }
    m.push_str("--b--\r\n");
    m.into_bytes()
}

fn nested(subject: &str, depth: usize) -> Vec<u8> {
    let mut m = format!("From: {CUSTOMER}\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n");
    for i in 0..depth {
        m.push_str(&format!("Content-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n--n{i}\r\n"));
    }
    m.push_str("Content-Type: text/plain\r\n\r\ndeep inside\r\n");
    for i in (0..depth).rev() {
        m.push_str(&format!("--n{i}--\r\n"));
    }
    m.into_bytes()
}

fn many_recipients(subject: &str, n: usize) -> Vec<u8> {
    let to: Vec<String> = (0..n).map(|i| format!("r{i}@client.test")).collect();
    format!(
        "From: {CUSTOMER}\r\nTo: {SUPPORT},\r\n {}\r\nSubject: {subject}\r\n\r\nHello all.\r\n",
        to.join(",\r\n ")
    )
    .into_bytes()
}

fn long_header(subject: &str, bytes: usize) -> Vec<u8> {
    format!(
        "From: {CUSTOMER}\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nX-Long: {}\r\n\r\nHello.\r\n",
        "a".repeat(bytes)
    )
    .into_bytes()
}

fn garbage(bytes: usize) -> Vec<u8> {
    // xorshift: reproducible noise, with no "From " line at the start (LMTP takes it as is).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn dead_letters(desk: &Desk, queue: &str) -> Vec<(String, Vec<u8>)> {
    let amqp = deskmail_mq::AmqpConfig { url: desk.vhost.amqp_url_parsed().unwrap(), ..Default::default() };
    let conn = deskmail_mq::connect(&amqp, "e2e-dead").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(d) = ch.basic_get(queue.into(), BasicGetOptions::default()).await.unwrap() {
        let reason = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(deskmail_mq::topology::ERROR_HEADER).cloned())
            .map(|v| match v {
                deskmail_mq::lapin::types::AMQPValue::LongString(s) => s.to_string(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        out.push((reason, d.delivery.data.clone()));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_bombs_and_garbage_get_a_clear_result_and_spare_the_mail_around_them() {
    let mut desk = Desk::start(10).await;
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        ("bomb: 60 MB attachment", with_attachment("bomb: 60 MB attachment", 60 << 20)),
        ("bomb: 1000 nested multiparts", nested("bomb: 1000 nested multiparts", 1000)),
        ("bomb: 10000 recipients", many_recipients("bomb: 10000 recipients", 10_000)),
        ("bomb: 1 MB header line", long_header("bomb: 1 MB header line", 1 << 20)),
        ("garbage", garbage(256 << 10)),
    ];
    let mut around = Vec::new();
    for (i, (_, raw)) in bombs.iter().enumerate() {
        let subject = format!("around {i}");
        desk.stack.deliver(SUPPORT, &plain(&subject)).unwrap();
        around.push(subject);
        desk.stack.deliver(SUPPORT, raw).unwrap();
    }
    desk.stack.deliver(SUPPORT, &plain("around last")).unwrap();
    around.push("around last".into());

    // The ordinary mail: every one a ticket.
    for subject in &around {
        desk.wait_ticket(subject, 1).await;
    }
    // Every bomb: an article (what could be read, problems noted) or a dead letter with a
    // reason. The 60 MB mail is over the router's max_mail_size (50 MiB): dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut dead = Vec::new();
    loop {
        dead.extend(dead_letters(&desk, &format!("{PREFIX}.inbound.dead")).await);
        let pool = desk.pg().await;
        let rows = sqlx::query("SELECT subject, parse_error, length(raw) AS n FROM articles")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        let articles: Vec<(String, Option<String>, i64)> = rows
            .iter()
            .map(|r| (r.get("subject"), r.get("parse_error"), r.get::<i32, _>("n").into()))
            .collect();
        let total = articles.len() + dead.len();
        if total >= around.len() + bombs.len() {
            assert_eq!(
                total,
                around.len() + bombs.len(),
                "one result per mail: {articles:?} + {} dead",
                dead.len()
            );
            let big = dead
                .iter()
                .find(|(_, body)| body.windows(22).any(|w| w == b"bomb: 60 MB attachment"))
                .unwrap_or_else(|| panic!("the 60 MB mail is not dead-lettered: {articles:?}"));
            assert!(
                big.0.contains("max") || big.0.contains("large") || big.0.contains("bytes"),
                "reason: {}",
                big.0
            );
            for (name, _) in &bombs[1..4] {
                let (_, err, _) = articles
                    .iter()
                    .find(|(s, _, _)| s == name)
                    .unwrap_or_else(|| panic!("{name}: no article ({articles:?})"));
                eprintln!("{name}: article, parse_error {err:?}");
            }
            // The garbage has no subject: the one article or dead letter left over (Dovecot
            // adds its trace headers and LMTP normalises line ends, so the size only nears).
            let known = |s: &str| around.iter().any(|a| a == s) || bombs.iter().any(|(b, _)| *b == s);
            let garbage_kept = articles.iter().any(|(s, _, n)| !known(s) && *n > 200_000)
                || dead.iter().any(|(r, body)| (200_000..400_000).contains(&body.len()) && !r.is_empty());
            assert!(garbage_kept, "the garbage is neither an article nor a dead letter");
            assert!(dead.iter().all(|(r, _)| !r.is_empty()), "every dead letter says why");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s: {articles:?} + {} dead\n{}",
            dead.len(),
            desk.log(Daemon::Router)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for d in Daemon::ALL {
        let (status, body) = http_get(desk.metrics_ports[&d], "/healthz").await.unwrap_or((0, String::new()));
        assert_eq!(status, 200, "{} is not healthy after the bombs: {body}", d.name());
    }
    for d in [Daemon::Fetcher, Daemon::Router, Daemon::Sender, Daemon::Configd] {
        desk.terminate(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_outbound_jobs_are_dead_lettered_and_inject_nothing() {
    let mut desk = Desk::start(10).await;
    let url = desk.vhost.amqp_url();
    let job = |id: &str, patch: serde_json::Value| {
        let mut j = serde_json::json!({"job_id": id, "to": [CUSTOMER], "subject": id, "text": "Hello."});
        for (k, v) in patch.as_object().unwrap() {
            j[k] = v.clone();
        }
        python(&["job", &url, PREFIX, &j.to_string()]);
    };
    let bcc = format!("\r\nBcc: {VICTIM}");
    job("ordinary-before", serde_json::json!({}));
    job("subject-injection", serde_json::json!({"subject": format!("Hi{bcc}")}));
    job("to-injection", serde_json::json!({"to": [format!("{CUSTOMER}{bcc}")]}));
    job("name-injection", serde_json::json!({"to": [format!("Evil{bcc} <{CUSTOMER}>")]}));
    job("from-injection", serde_json::json!({"from": format!("Desk{bcc} <{SUPPORT}>")}));
    job("header-injection", serde_json::json!({"headers": {"X-Note": format!("a{bcc}")}}));
    job("reply-to-injection", serde_json::json!({"reply_to": format!("{SUPPORT}{bcc}")}));
    job("ordinary-after", serde_json::json!({}));

    desk.wait_mail(CUSTOMER, "ordinary-before", |m| m.subject == "ordinary-before").await;
    desk.wait_mail(CUSTOMER, "ordinary-after", |m| m.subject == "ordinary-after").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dead = Vec::new();
    while dead.len() < 6 {
        dead.extend(dead_letters(&desk, &format!("{PREFIX}.outbound.dead")).await);
        assert!(Instant::now() < deadline, "only {} hostile jobs dead-lettered: {dead:?}", dead.len());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (reason, body) in &dead {
        let job: serde_json::Value = serde_json::from_slice(body).unwrap();
        eprintln!("{}: {reason}", job["job_id"]);
        assert!(!reason.is_empty(), "{} dead without a reason", job["job_id"]);
        assert!(!reason.contains("Bcc: victim"), "the reason quotes the injected header raw: {reason}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(desk.mailbox(VICTIM).is_empty(), "an injected Bcc reached the victim");
    assert_eq!(desk.mailbox(CUSTOMER).len(), 2, "only the two ordinary jobs were delivered");
    for d in [Daemon::Fetcher, Daemon::Router, Daemon::Sender, Daemon::Configd] {
        desk.terminate(d);
    }
}
