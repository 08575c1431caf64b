//! deskmail-sender throughput: 10,000 jobs of 8 KiB through one box to Postfix's `smtp-sink`
//! (a discarding SMTP server), the sender run as its own process (release build), with one
//! SMTP connection and with a pool of 8; as the peer, Python's smtplib sending the same number
//! of 8 KiB mails over one connection to the same sink. Prints msgs/s (median of the runs),
//! the ratios, and the sender's peak RSS (VmHWM).
//!
//! Run: `cargo bench -p deskmail-sender --bench send`. Env (not `DESKMAIL_*`: the daemons
//! refuse unknown `DESKMAIL_` variables): `SENDER_BENCH_JOBS` (default
//! 10000), `SENDER_BENCH_RUNS` (default 3), `SENDER_BENCH_WRAP` (a command the sender runs
//! under, e.g. `valgrind --tool=callgrind`). Needs RabbitMQ, Postfix's smtp-sink, python3.
//!
//! Besides msgs/s it prints the CPU time each process spent per job during a run (the sender,
//! the broker's `beam.smp`, the sink): on a loaded 2-core machine throughput swings with the
//! other load, CPU per job much less.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deskmail_mq::lapin::options::{QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions};
use deskmail_mq::lapin::types::{AMQPValue, FieldTable};
use deskmail_mq::{AmqpConfig, Consumer, ConsumerOptions, OutgoingMessage, Publisher};
use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use deskmail_testkit::mail::{SinkMode, SmtpSink};
use deskmail_testkit::process::DaemonProcess;
use deskmail_testkit::rabbit::Vhost;
use deskmail_testkit_configd::{Configd, Db};

const BODY: usize = 8 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time (user + system) of `pid` so far, in microseconds (`/proc/<pid>/stat`, 100 Hz ticks).
fn cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10_000.0)
}

/// The broker's pid (`beam.smp`), for its CPU time.
fn broker_pid() -> Option<u32> {
    let out = std::process::Command::new("pidof").arg("beam.smp").output().ok()?;
    String::from_utf8(out.stdout).ok()?.split_whitespace().next()?.parse().ok()
}

struct Run {
    rate: f64,
    rss_mib: f64,
    /// CPU µs per job: sender, broker, sink.
    cpu: [f64; 3],
}

#[allow(clippy::too_many_arguments)]
async fn run_sender(
    vhost: &Vhost,
    configd: &Configd,
    publisher: &Publisher,
    events: &mut Consumer,
    exchange: &str,
    dir: &Path,
    tag: &str,
    jobs: usize,
    pool: u32,
    sink_pid: Option<u32>,
) -> Result<Run> {
    let text = "x".repeat(BODY - 200);
    let msgs = (0..jobs).map(|i| {
        let id = format!("{tag}-{i}");
        let body = serde_json::to_vec(&serde_json::json!({
            "job_id": id, "to": ["sink@client.test"], "subject": format!("bench {i}"), "text": text
        }))
        .unwrap();
        OutgoingMessage::new(exchange, "mail.send", body).message_id(id).content_type("application/json")
    });
    for r in publisher.publish_all(msgs).await {
        r?;
    }
    let config = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[amqp]\nurl = \"{}\"\nprefetch = 512\n{}[sent_log]\nurl = \"sqlite://{}?mode=rwc\"\n[smtp]\npool_max_per_box = {pool}\nmax_in_flight = 256\n[log]\nlevel = \"warn\"\n",
            vhost.amqp_url(),
            configd.config_service_toml(),
            dir.join(format!("{tag}.db")).display()
        ),
    )?;
    let binary = env!("CARGO_BIN_EXE_deskmail-sender");
    let wrap = std::env::var("SENDER_BENCH_WRAP").unwrap_or_default();
    let mut argv: Vec<&str> = wrap.split_whitespace().collect();
    argv.extend([binary, "--config", config.to_str().unwrap(), "--log-format", "json"]);
    let mut sender =
        DaemonProcess::spawn(Path::new(argv[0]), &argv[1..], &[("RUST_LOG", "warn,deskmail_sender=info")])?;
    sender.wait_for_log("Ready.", Duration::from_secs(120))?;
    let broker = broker_pid();
    let pids = [Some(sender.pid()), broker, sink_pid];
    let before = pids.map(|p| p.and_then(cpu_us).unwrap_or(f64::NAN));
    let (mut first, mut last, mut seen) = (None, Instant::now(), 0usize);
    while seen < jobs {
        let d = tokio::time::timeout(Duration::from_secs(60), events.next_delivery())
            .await
            .context("no mail.sent event for 60 s")?
            .context("events consumer ended")??;
        let ev: serde_json::Value = serde_json::from_slice(d.body())?;
        ensure!(ev["event"] == "mail.sent", "not sent: {ev}");
        first.get_or_insert_with(Instant::now);
        last = Instant::now();
        seen += 1;
        // The listener acks every 100 events with one `multiple` ack, as an integrator
        // reading a busy event stream would; it is the bench's apparatus, not the sender.
        if seen % 100 == 0 || seen == jobs {
            events.acker().ack_up_to(d.delivery_tag()).await?;
        }
    }
    let after = pids.map(|p| p.and_then(cpu_us).unwrap_or(f64::NAN));
    let cpu = [0, 1, 2].map(|i| (after[i] - before[i]) / jobs as f64);
    let rss_mib = deskmail_testkit::process::status_kib(sender.pid(), "VmHWM:")
        .map_or(f64::NAN, |kb| kb as f64 / 1024.0);
    ensure!(sender.terminate(Duration::from_secs(30))?.success(), "sender did not stop cleanly");
    let secs = last.duration_since(first.unwrap_or(last)).as_secs_f64().max(1e-6);
    Ok(Run { rate: (jobs - 1) as f64 / secs, rss_mib, cpu })
}

/// The 1-minute load average.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// The peer's msgs/s and its own CPU µs per mail.
fn smtplib_peer(port: u16, mails: usize) -> Result<(f64, f64)> {
    let script = r#"
import smtplib, sys, time
from email.message import EmailMessage
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
text = "x" * (size - 200)
msgs = []
for i in range(n):
    m = EmailMessage()
    m["From"] = "bench@desk.test"; m["To"] = "sink@client.test"; m["Subject"] = f"bench {i}"
    m["Message-ID"] = f"<py{i}@desk.test>"
    m.set_content(text)
    msgs.append(m.as_bytes())
s = smtplib.SMTP("127.0.0.1", port)
s.ehlo()
t, c = time.perf_counter(), time.process_time()
for raw in msgs:
    s.sendmail("bench@desk.test", ["sink@client.test"], raw)
elapsed, cpu = time.perf_counter() - t, time.process_time() - c
s.quit()
print(n / elapsed, cpu / n * 1e6)
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(mails.to_string())
        .arg(BODY.to_string())
        .output()?;
    ensure!(out.status.success(), "smtplib peer failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    let mut v = text.split_whitespace().map(str::parse::<f64>);
    match (v.next(), v.next()) {
        (Some(rate), Some(cpu)) => Ok((rate?, cpu?)),
        _ => anyhow::bail!("smtplib peer printed {text:?}"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let jobs = env_usize("SENDER_BENCH_JOBS", 10_000);
    let runs = env_usize("SENDER_BENCH_RUNS", 3);
    let sink = SmtpSink::start(SinkMode::Accept)?;
    let vhost = Vhost::create("sender_bench")?;
    let configd = Configd::start(Db::Sqlite).await;
    let mailbox = configd
        .admin()
        .await
        .create_mailbox(pb::Mailbox {
            name: "bench".into(),
            outbound: Some(pb::OutboundSettings {
                host: "127.0.0.1".into(),
                port: u32::from(sink.port()),
                security: pb::Security::None as i32,
                auth: pb::AuthMethod::None as i32,
                from_address: "bench@desk.test".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let mut settings = configd.admin().await.settings();
    settings
        .update_settings(pb::UpdateSettingsRequest {
            settings: Some(pb::Settings {
                default_outbound_mailbox_id: mailbox.id.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["default_outbound_mailbox_id".into()] }),
        })
        .await?;
    let amqp = AmqpConfig { url: vhost.amqp_url_parsed()?, ..AmqpConfig::default() };
    let (conn, topology) =
        deskmail_mq::connect_and_declare(&amqp, "bench", &CancellationToken::new()).await?;
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    ch.queue_declare(
        "bench.events".into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        args,
    )
    .await?;
    ch.queue_bind(
        "bench.events".into(),
        topology.events_exchange().as_str().into(),
        "mail.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let publisher = Publisher::new(&conn).await?;
    let mut events = Consumer::new(
        &conn,
        ConsumerOptions::new("bench.events", topology.outbound_dead_letter()).prefetch(1024),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let exchange = topology.outbound_exchange();

    println!(
        "deskmail-sender bench: {jobs} jobs of {} KiB per run, {runs} runs, smtp-sink on 127.0.0.1:{}",
        BODY / 1024,
        sink.port()
    );
    // Warm-up (not measured): connections, queues, page cache.
    let sink_pid = sink.pid();
    run_sender(&vhost, &configd, &publisher, &mut events, &exchange, dir.path(), "warm", 1000, 8, sink_pid)
        .await?;
    let (mut one, mut pooled, mut peer, mut rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::<f64>::new());
    for r in 0..runs {
        let a = run_sender(
            &vhost,
            &configd,
            &publisher,
            &mut events,
            &exchange,
            dir.path(),
            &format!("one{r}"),
            jobs,
            1,
            sink_pid,
        )
        .await?;
        let b = run_sender(
            &vhost,
            &configd,
            &publisher,
            &mut events,
            &exchange,
            dir.path(),
            &format!("pool{r}"),
            jobs,
            8,
            sink_pid,
        )
        .await?;
        let sink_before = sink_pid.and_then(cpu_us).unwrap_or(f64::NAN);
        let (p, py_cpu) = smtplib_peer(sink.port(), jobs)?;
        let sink_cpu = (sink_pid.and_then(cpu_us).unwrap_or(f64::NAN) - sink_before) / jobs as f64;
        println!(
            "  run {}: sender 1 connection {:>7.0} msgs/s | sender pool of 8 {:>7.0} msgs/s | smtplib 1 connection {:>7.0} msgs/s | peak RSS {:.1} / {:.1} MiB",
            r + 1,
            a.rate,
            b.rate,
            p,
            a.rss_mib,
            b.rss_mib
        );
        println!(
            "         CPU µs per job, 1 connection: sender {:.0}, broker {:.0}, sink {:.0} | pool of 8: sender {:.0}, broker {:.0}, sink {:.0} | load {}",
            a.cpu[0],
            a.cpu[1],
            a.cpu[2],
            b.cpu[0],
            b.cpu[1],
            b.cpu[2],
            load()
        );
        println!("         CPU µs per mail, smtplib: python {py_cpu:.0}, sink {sink_cpu:.0}");
        one.push(a.rate);
        pooled.push(b.rate);
        peer.push(p);
        rss.extend([a.rss_mib, b.rss_mib]);
    }
    let (one, pooled, peer) = (median(one), median(pooled), median(peer));
    let peak = rss.iter().copied().fold(0.0, f64::max);
    println!(
        "median msgs/s: sender 1 connection {one:.0}, sender pool of 8 {pooled:.0}, python smtplib 1 connection {peer:.0}"
    );
    println!(
        "ratio sender/smtplib on one connection: {:.2}x; pool of 8 vs smtplib: {:.2}x",
        one / peer,
        pooled / peer
    );
    println!("peak RSS of the sender process: {peak:.1} MiB");
    let _ = ch.queue_purge("bench.events".into(), QueuePurgeOptions::default()).await;
    sink.stop();
    Ok(())
}
