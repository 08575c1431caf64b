//! Router throughput: 10,000 realistic mails (deskmail-testkit's samples: mixed sizes,
//! attachments, charsets; a quarter are replies to earlier mails) pre-loaded on the inbound
//! queue, routed by the real router binary into PostgreSQL and into SQLite. Prints, per store:
//! msgs/s, per-mail latency (publish -> `ticket.*` event, which is published after the commit)
//! p50/p99 for 5 s at a paced rate (the target, 3,000/s or 1,500/s, or half the measured
//! throughput when that is lower), the router's peak RSS (VmHWM), and, as the limits, the bare
//! mail-parser rate and the bare insert rate of the same rows (the store's batch commit
//! without the broker).
//!
//! Also prints the CPU time of the pre-loaded run per process (the router, PostgreSQL, and
//! RabbitMQ, a node of the bench's own) and the rate two cores allow at that cost, and the router's own phase profile (parse, dispatch, insert, commit, publish and
//! confirms, ack; from its "Phase profile." log line) and the load average.
//!
//! `cargo bench -p deskmail-router --bench route`; `ROUTE_BENCH_MAILS=N` changes the count,
//! `ROUTE_BENCH_ROUNDS=N` runs N rounds and prints the medians, `ROUTE_BENCH_STORES=pg` or
//! `sqlite` runs one store only, `ROUTE_BENCH_PG_SOCKET=1` connects to PostgreSQL over its
//! Unix socket instead of TCP (127.0.0.1, as a remote PostgreSQL would be reached),
//! `ROUTE_BENCH_PREFETCH=N` sets the router's `amqp.prefetch` (default 400),
//! `ROUTE_BENCH_ROUTER_TOML='batch_bytes = 2097152'` adds top-level router settings,
//! `ROUTE_BENCH_ROUTER_WRAP='heaptrack -o /tmp/router'` runs the router under a tool;
//! `GLIBC_TUNABLES` is passed on to the router.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deskmail_mq::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
};
use deskmail_mq::lapin::types::FieldTable;
use deskmail_mq::{OutgoingMessage, Publisher};
use deskmail_proto::v1 as pb;
use deskmail_router::rules::Rules;
use deskmail_router::store::{Item, Store, entity};
use deskmail_runtime::CancellationToken;
use deskmail_testkit::process::{DaemonProcess, command_cpu_secs, group_cpu_secs, pid_cpu_secs, status_kib};
use deskmail_testkit::rabbit::Vhost;
use deskmail_testkit::samples::SampleGen;
use deskmail_testkit_configd::{Configd, Db};
use futures::StreamExt;
use sea_orm::{EntityTrait, PaginatorTrait};

struct Mail {
    raw: Bytes,
}

fn generate(n: usize) -> Vec<Mail> {
    let mut g = SampleGen::new(42).to("support@desk.test");
    let mut out: Vec<Mail> = Vec::with_capacity(n);
    let mut ids: Vec<String> = Vec::new();
    for i in 0..n {
        let s = if i % 4 == 3 && !ids.is_empty() { g.reply(&ids[(i * 7919) % ids.len()]) } else { g.mail() };
        ids.push(s.message_id.clone());
        out.push(Mail { raw: Bytes::from(s.raw) });
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// configd with one by-recipient mailbox and a Support queue with auto-reply.
async fn configd() -> (Configd, String) {
    let configd = Configd::start(Db::Sqlite).await;
    let admin = configd.admin().await;
    let support = admin
        .create_queue(pb::Queue { name: "Support".into(), auto_reply: true, ..Default::default() })
        .await
        .id;
    admin
        .addresses()
        .create_system_address(pb::CreateSystemAddressRequest {
            system_address: Some(pb::SystemAddress {
                address: "support@desk.test".into(),
                queue_id: support.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut m = deskmail_testkit_configd::imap_mailbox("inbox", &support, 993, "pw");
    let inbound = m.inbound.as_mut().unwrap();
    inbound.dispatch_mode = pb::DispatchMode::ByRecipient as i32;
    inbound.queue_id = String::new();
    inbound.fallback_queue_id = support;
    let inbox = admin.create_mailbox(m).await.id;
    (configd, inbox)
}

struct TicketsDb {
    url: String,
    _dir: tempfile::TempDir,
    _pg: Option<deskmail_testkit::pg::Database>,
}

async fn tickets_db(db: Db) -> TicketsDb {
    let dir = tempfile::tempdir().unwrap();
    match db {
        Db::Sqlite => TicketsDb {
            url: format!("sqlite://{}?mode=rwc", dir.path().join("router.db").display()),
            _dir: dir,
            _pg: None,
        },
        Db::Postgres => {
            let pg = deskmail_testkit::pg::Database::create("routebench").await.unwrap();
            // TCP to 127.0.0.1, the path a remote PostgreSQL takes (with the workspace's
            // sqlx-core patch setting TCP_NODELAY, see vendor/README.md).
            // ROUTE_BENCH_PG_SOCKET=1 measures its Unix socket instead.
            let url = match (std::env::var("ROUTE_BENCH_PG_SOCKET"), pg.url().rsplit_once('/')) {
                (Ok(_), Some((server, db))) => {
                    let user = server.trim_start_matches("postgres://").split('@').next().unwrap_or("root");
                    format!("postgres://{user}@localhost/{db}?host=/var/run/postgresql")
                }
                _ => pg.url().to_owned(),
            };
            TicketsDb { url, _dir: dir, _pg: Some(pg) }
        }
    }
}

async fn open(url: &str) -> Store {
    Store::open(&deskmail_config::DatabaseConfig {
        url: deskmail_config::Secret::new(url.to_owned()),
        max_connections: 4,
    })
    .await
    .unwrap()
}

async fn processed(store: &Store) -> u64 {
    entity::processed::Entity::find().count(store.connection()).await.unwrap()
}

/// The same rows through `Store::commit` in batches of 200, no broker, no parsing in the clock.
async fn bare_inserts(db: Db, mails: &[Mail], rules: &Rules, inbox: &str) -> f64 {
    let tdb = tickets_db(db).await;
    let store = open(&tdb.url).await;
    let limits = deskmail_mailparse::Limits::default();
    let items: Vec<Item> = mails
        .iter()
        .enumerate()
        .map(|(i, m)| Item {
            source_id: format!("bare:{i}"),
            mailbox_id: Some(inbox.to_owned()),
            raw: m.raw.clone(),
            plan: deskmail_router::dispatch::plan(&m.raw, Some(inbox), rules, &limits),
        })
        .collect();
    let start = Instant::now();
    let mut steps = [Duration::ZERO; deskmail_router::store::WRITE_STEPS.len()];
    let mut commit = Duration::ZERO;
    for chunk in items.chunks(200) {
        let o = store.commit(chunk, rules, deskmail_router::now_micros()).await.unwrap();
        for (t, d) in steps.iter_mut().zip(o.steps) {
            *t += d;
        }
        commit += o.commit_time;
    }
    let rate = items.len() as f64 / start.elapsed().as_secs_f64();
    let steps: Vec<String> = deskmail_router::store::WRITE_STEPS
        .iter()
        .zip(steps)
        .map(|(n, d)| format!("{n}:{}", d.as_millis()))
        .collect();
    println!("           bare insert steps (ms): {} commit:{}", steps.join(","), commit.as_millis());
    store.connection().clone().close().await.ok();
    rate
}

struct Routed {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    paced_rate: f64,
    rss_mib: f64,
    /// The router's "Phase profile." log line.
    phases: String,
    /// RSS right after the router said `Consuming.`.
    rss_start_mib: f64,
    /// CPU seconds of the pre-loaded run: the router, PostgreSQL (every `postgres` process;
    /// none on SQLite), RabbitMQ (a node of the bench's own).
    cpu: [f64; 3],
}

async fn routed(db: Db, mails: &[Mail], target_rate: f64) -> (Routed, Rules, String) {
    let (configd, inbox) = configd().await;
    let snapshot =
        configd.daemon().await.watch().get_snapshot(pb::GetSnapshotRequest {}).await.unwrap().into_inner();
    let rules = Rules::from_snapshot(&snapshot);
    // A node of the bench's own, so that its CPU time is the bench's alone.
    let vhost = Vhost::create_private("routebench").await.unwrap();
    let broker_pid = vhost.broker().and_then(|b| b.pid()).unwrap();
    let tdb = tickets_db(db).await;
    let amqp = deskmail_mq::AmqpConfig { url: vhost.amqp_url_parsed().unwrap(), ..Default::default() };
    let (conn, topology) =
        deskmail_mq::connect_and_declare(&amqp, "bench", &CancellationToken::new()).await.unwrap();
    let publisher = Publisher::new(&conn).await.unwrap().with_window(1024);
    // The paced phase sends the same sample mails again: each gets a trace line of its own,
    // as a second real delivery would (`Received:`), or the router's content key would make
    // them duplicates of the first phase's mails.
    let message = |i: usize, m: &Mail, prefix: &str| {
        let raw = if prefix == "bench" {
            m.raw.clone()
        } else {
            let mut b = format!("X-Bench-Delivery: {prefix}:{i}\r\n").into_bytes();
            b.extend_from_slice(&m.raw);
            Bytes::from(b)
        };
        OutgoingMessage::new(topology.inbound_exchange(), "mail.raw", raw)
            .content_type("message/rfc822")
            .message_id(format!("{prefix}:{i}"))
            .header("x-mailbox-id", inbox.as_str())
    };
    let results = publisher.publish_all(mails.iter().enumerate().map(|(i, m)| message(i, m, "bench"))).await;
    assert!(results.iter().all(Result::is_ok));

    let prefetch: u32 =
        std::env::var("ROUTE_BENCH_PREFETCH").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.toml");
    std::fs::write(
        &config,
        format!(
            "{}[amqp]\nurl = \"{}\"\nprefetch = {prefetch}\n[database]\nurl = \"{}\"\n[log]\nlevel = \"info\"\n{}",
            std::env::var("ROUTE_BENCH_ROUTER_TOML").map(|t| t.replace("\\n", "\n") + "\n").unwrap_or_default(),
            vhost.amqp_url(),
            tdb.url,
            configd.config_service_toml()
        ),
    )
    .unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_deskmail-router"));
    // `ROUTE_BENCH_ROUTER_WRAP="heaptrack -o /tmp/router"` runs the router under a tool (the
    // RSS and CPU figures are then the tool's process, not the router's).
    let wrap = std::env::var("ROUTE_BENCH_ROUTER_WRAP").unwrap_or_default();
    // glibc's malloc settings pass through (the daemon's environment is otherwise cleared).
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let envs: &[(&str, &str)] =
        if tunables.is_empty() { &[] } else { &[("GLIBC_TUNABLES", tunables.as_str())] };
    let words: Vec<&str> = wrap.split_whitespace().collect();
    let mut router = match words.split_first() {
        Some((tool, rest)) => {
            let mut args = rest.to_vec();
            args.extend([binary.to_str().unwrap(), "--config", config.to_str().unwrap()]);
            DaemonProcess::spawn(Path::new(tool), &args, envs).unwrap()
        }
        None => DaemonProcess::spawn(binary, &["--config", config.to_str().unwrap()], envs).unwrap(),
    };
    router.wait_for_log("Consuming.", Duration::from_secs(60)).unwrap();
    // Before the first batch (the broker is already pushing the prefetch).
    let rss_start_mib = status_kib(router.pid(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let cpu_now = || [pid_cpu_secs(router.pid()), command_cpu_secs("postgres"), group_cpu_secs(broker_pid)];
    let cpu0 = cpu_now();
    let start = Instant::now();
    let store = open(&tdb.url).await;
    let n = mails.len() as u64;
    while processed(&store).await < n {
        assert!(start.elapsed() < Duration::from_secs(600), "router too slow:\n{}", router.log().join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let cpu1 = cpu_now();
    let cpu = [cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2]];
    // Latency is measured at a rate the router sustains here: the target, or half the
    // measured throughput when that is lower (above it the queue grows and latency with it).
    let paced_rate = target_rate.min(rate / 2.0).max(1.0);

    // Latency at a paced rate: publish -> ticket event (published after the commit).
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("bench.events".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        "bench.events".into(),
        topology.events_exchange().as_str().into(),
        "ticket.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut events = ch
        .basic_consume(
            "bench.events".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let count = ((paced_rate * 5.0) as usize).clamp(1, mails.len());
    let seen = sent.clone();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count);
        while latencies.len() < count {
            let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(60), events.next()).await else {
                break;
            };
            let now = Instant::now();
            let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
            if let Some(t) = body["source_id"].as_str().and_then(|s| seen.lock().unwrap().get(s).copied()) {
                latencies.push(now.duration_since(t).as_secs_f64() * 1000.0);
            }
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        latencies
    });
    let paced_start = Instant::now();
    let mut pending = Vec::new();
    for (i, m) in mails.iter().take(count).enumerate() {
        let due = paced_start + Duration::from_secs_f64(i as f64 / paced_rate);
        tokio::time::sleep_until(due.into()).await;
        let id = format!("paced:{i}");
        sent.lock().unwrap().insert(id.clone(), Instant::now());
        pending.push(publisher.publish(message(i, m, "paced").message_id(id)).await.unwrap());
        if pending.len() >= 256 {
            for p in pending.drain(..) {
                p.await.unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap();
    }
    let achieved = count as f64 / paced_start.elapsed().as_secs_f64();
    let mut latencies = receiver.await.unwrap();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rss_mib = status_kib(router.pid(), "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    router.terminate(Duration::from_secs(30)).unwrap();
    let phases = router.log().into_iter().find(|l| l.contains("Phase profile.")).unwrap_or_default();
    let _ = conn.close(200, "done".into()).await;
    drop(configd);
    (
        Routed {
            rate,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            paced_rate: achieved,
            rss_mib,
            phases,
            rss_start_mib,
            cpu,
        },
        rules,
        inbox,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let n: usize = std::env::var("ROUTE_BENCH_MAILS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let rounds: usize = std::env::var("ROUTE_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
        let stores = std::env::var("ROUTE_BENCH_STORES").unwrap_or_default();
        let pg_via = if std::env::var("ROUTE_BENCH_PG_SOCKET").is_ok() { "Unix socket" } else { "TCP 127.0.0.1" };
        let mails = generate(n);
        let bytes: usize = mails.iter().map(|m| m.raw.len()).sum();
        println!(
            "route bench: {n} mails, {:.1} MiB, mean {:.1} KiB, {rounds} round(s), PostgreSQL via {pg_via}, load average {}",
            bytes as f64 / 1048576.0,
            bytes as f64 / n as f64 / 1024.0,
            load_average()
        );

        // The limits: bare mail-parser, and deskmail-mailparse (what the router calls).
        let parser = mail_parser::MessageParser::default();
        let start = Instant::now();
        let mut ok = 0;
        for m in &mails {
            ok += usize::from(parser.parse(&m.raw[..]).is_some());
        }
        let bare_rate = n as f64 / start.elapsed().as_secs_f64();
        let limits = deskmail_mailparse::Limits::default();
        let start = Instant::now();
        for m in &mails {
            std::hint::black_box(deskmail_mailparse::parse(&m.raw, &limits).is_ok());
        }
        let parse_rate = n as f64 / start.elapsed().as_secs_f64();
        println!(
            "bare parse, 1 thread: mail-parser {bare_rate:.0} mails/s ({ok} parsed; the issue's reference: about 18,000/s/core) | \
             deskmail-mailparse (limits, charsets, attachments with SHA-256, loop signals) {parse_rate:.0} mails/s"
        );

        let all = [(Db::Postgres, "PostgreSQL", 3000.0, "pg"), (Db::Sqlite, "SQLite", 1500.0, "sqlite")];
        for (db, name, paced, key) in all {
            if !stores.is_empty() && stores != key {
                continue;
            }
            let mut results = Vec::new();
            for round in 1..=rounds {
                let (r, rules, inbox) = routed(db, &mails, paced).await;
                let bare = bare_inserts(db, &mails, &rules, &inbox).await;
                println!(
                    "{name:<10} round {round}: routed {:>6.0} mails/s (pre-loaded queue) | bare insert {:>6.0} rows/s | ratio {:.2} | \
                     latency at {:.0}/s: p50 {:.1} ms, p99 {:.1} ms | router peak RSS {:.1} MiB ({:.1} at start) | load {}",
                    r.rate,
                    bare,
                    r.rate / bare,
                    r.paced_rate,
                    r.p50_ms,
                    r.p99_ms,
                    r.rss_mib,
                    r.rss_start_mib,
                    load_average()
                );
                let [router_cpu, pg_cpu, rabbit_cpu] = r.cpu;
                println!(
                    "           CPU s of the pre-loaded run: router {router_cpu:.2} + PostgreSQL {pg_cpu:.2} + RabbitMQ {rabbit_cpu:.2} = {:.2} \
                     ({:.0} us per mail; 2 cores allow at most {:.0} mails/s at that cost)",
                    router_cpu + pg_cpu + rabbit_cpu,
                    (router_cpu + pg_cpu + rabbit_cpu) * 1e6 / mails.len() as f64,
                    2.0 * mails.len() as f64 / (router_cpu + pg_cpu + rabbit_cpu)
                );
                if let Some(i) = r.phases.find("batches") {
                    println!("           router phases: {}", r.phases[i..].trim());
                }
                results.push((r, bare));
            }
            if rounds > 1 {
                let col = |f: &dyn Fn(&(Routed, f64)) -> f64| median(results.iter().map(f).collect());
                println!(
                    "{name:<10} MEDIAN of {rounds}: routed {:.0} mails/s | bare insert {:.0} rows/s | p50 {:.1} ms, p99 {:.1} ms | peak RSS {:.1} MiB",
                    col(&|x| x.0.rate),
                    col(&|x| x.1),
                    col(&|x| x.0.p50_ms),
                    col(&|x| x.0.p99_ms),
                    col(&|x| x.0.rss_mib)
                );
            }
        }
    });
}
