//! `cargo bench -p deskmail-fetcher --bench drain`: drain a Dovecot mailbox of 10,000 mails of
//! 8 KiB onto RabbitMQ (persistent, quorum queue, publisher confirms) with deskmail-fetcher,
//! and in the same run fetch the same mailbox with mbsync (to a local Maildir) and fetchmail
//! (BSMTP to a file: its fastest delivery, no process per mail) as peers, over plain IMAP on
//! 127.0.0.1. Prints msgs/s (median of the rounds) and the ratio to the fastest peer, then
//! the fetcher's peak RSS (VmHWM) for that drain and for a mailbox of 25 MB mails.
//!
//! Each round also prints the CPU time each side cost: the fetcher, Dovecot (the stack's
//! whole process group) and RabbitMQ (a node of the bench's own, so that nothing else is
//! counted) for deskmail; mbsync itself and Dovecot for mbsync. On two cores the wall time
//! can be no less than half the sum, which shows what bounds each rate.
//!
//! Needs what `make test` needs plus the Debian packages `isync` and `fetchmail`.
//! Knobs for experiments (not `DESKMAIL_*`: the in-process configd refuses unknown ones): `DRAIN_BENCH_ROUNDS` (3), `DRAIN_BENCH_PER_POLL` (500, the
//! fetcher's default `fetch.max_messages_per_poll`), `DRAIN_BENCH_PEERS=0` (skip the peers), `DRAIN_BENCH_WARM=0` (no untimed read of every mail before the tools: the first one pays Dovecot's first sync of the new mails and its cold caches), `DRAIN_BENCH_MBSYNC_WRAP` (a command to run mbsync under, e.g. `perf record -g -o FILE`), `DRAIN_BENCH_LOG` (the fetcher's log filter, e.g.
//! `warn,deskmail_fetcher=debug` for the time of each poll's phases, shown when a drain stalls).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use deskmail_mq::lapin::options::{QueueDeclareOptions, QueuePurgeOptions};
use deskmail_mq::lapin::types::FieldTable;
use deskmail_mq::lapin::{Channel, Connection, ConnectionProperties};
use deskmail_proto::v1 as pb;
use deskmail_testkit::mail::MailStack;
use deskmail_testkit::process::{
    DaemonProcess, group_cpu_secs, pid_cpu_secs, reaped_children_cpu_secs, status_kib,
};
use deskmail_testkit::rabbit::Vhost;
use deskmail_testkit_configd::{Configd, Db};

const N: usize = 10_000;
const SIZE: usize = 8 * 1024;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
const BIG_MAILS: usize = 4;
const BIG: usize = 25 * 1024 * 1024;
const QUEUE: &str = "deskmail.inbound.raw";
const USER: &str = "bench@desk.test";
const BIG_USER: &str = "big@desk.test";
const PW: &str = "bench-pw";

fn mail(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: customer@client.test\r\nTo: {USER}\r\nSubject: bench {i}\r\nMessage-ID: <bench-{i}@client.test>\r\n\r\n"
    )
    .into_bytes();
    let line = format!("{:075}\r\n", i);
    while m.len() + line.len() <= size {
        m.extend_from_slice(line.as_bytes());
    }
    m.resize(size, b'.');
    m.extend_from_slice(b"\r\n");
    m
}

async fn count(ch: &Channel) -> u32 {
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Whichever tool reads the new mails first pays Dovecot's first sync of them (the
/// fetcher's first SELECT + SEARCH took 0.3 to 0.5 s when it went first, 16 to 33 ms after
/// the peers) and its cold caches: the fetcher alone (`DRAIN_BENCH_PEERS=0`) cost Dovecot
/// 0.8 s of CPU per drain, 0.55 s after mbsync and fetchmail had read the same mails. So
/// before any tool is timed, one untimed session SELECTs and reads every mail whole, and
/// every tool meets the same warm mailbox.
fn warm_up(stack: &MailStack) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", stack.imap_port())).unwrap();
    tcp.write_all(
        format!(
            "a LOGIN {USER} {PW}\r\nb SELECT INBOX\r\nc FETCH 1:* (RFC822.SIZE BODY.PEEK[])\r\nd LOGOUT\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).unwrap();
    let tail = String::from_utf8_lossy(&reply[reply.len().saturating_sub(300)..]).into_owned();
    assert!(tail.contains("c OK"), "warm-up FETCH: {tail}");
}

fn run_mbsync(stack: &MailStack, dir: &Path) -> f64 {
    let store = dir.join("mbsync");
    std::fs::create_dir_all(&store).unwrap();
    let rc = dir.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "FSync no\n\nIMAPAccount bench\nHost 127.0.0.1\nPort {}\nUser {USER}\nPass {PW}\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount bench\n\n\
             MaildirStore local\nPath {s}/\nInbox {s}/INBOX\n\n\
             Channel bench\nFar :remote:\nNear :local:\nPatterns INBOX\nSync Pull\nCreate Near\nSyncState *\n",
            stack.imap_port(),
            s = store.display()
        ),
    )
    .unwrap();
    // DRAIN_BENCH_MBSYNC_WRAP: a command to run mbsync under (e.g. `perf record -g -o FILE`).
    let wrap = std::env::var("DRAIN_BENCH_MBSYNC_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace().chain(["mbsync"]);
    let mut cmd = Command::new(words.next().unwrap_or("mbsync"));
    cmd.args(words);
    let t0 = Instant::now();
    let out = cmd.arg("-c").arg(&rc).arg("-q").arg("bench").output().expect("mbsync (apt-get install isync)");
    let secs = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "mbsync: {}", String::from_utf8_lossy(&out.stderr));
    let got = std::fs::read_dir(store.join("INBOX/new")).map(|d| d.count()).unwrap_or(0)
        + std::fs::read_dir(store.join("INBOX/cur")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(got, N, "mbsync fetched {got}");
    std::fs::remove_dir_all(&store).unwrap();
    N as f64 / secs
}

fn run_fetchmail(stack: &MailStack, dir: &Path) -> f64 {
    let rc = dir.join("fetchmailrc");
    let out_file = dir.join("fetchmail.bsmtp");
    let _ = std::fs::remove_file(&out_file);
    std::fs::write(
        &rc,
        format!(
            "set no syslog\nset no bouncemail\npoll 127.0.0.1 service {} protocol IMAP auth password\n  \
             user \"{USER}\" password \"{PW}\" is root here\n  keep fetchall no rewrite sslproto ''\n  \
             bsmtp {}\n",
            stack.imap_port(),
            out_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let t0 = Instant::now();
    let out = Command::new("fetchmail")
        .args(["-f"])
        .arg(&rc)
        .args(["--nodetach", "--silent", "--pidfile"])
        .arg(dir.join("fetchmail.pid"))
        .env("HOME", dir)
        .output()
        .expect("fetchmail (apt-get install fetchmail)");
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "fetchmail: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read(&out_file).unwrap();
    let got = text.windows(10).filter(|w| w == b"MAIL FROM:").count();
    assert_eq!(got, N, "fetchmail fetched {got}");
    std::fs::remove_file(&out_file).unwrap();
    N as f64 / secs
}

#[tokio::main]
async fn main() {
    let stack = MailStack::builder().user(USER, PW).user(BIG_USER, PW).start().unwrap();
    let configd = Configd::start(Db::Postgres).await;
    let admin = configd.admin().await;
    let vhost = Vhost::create_private("fetcherbench").await.unwrap();
    let broker_pid = vhost.broker().and_then(|b| b.pid()).unwrap();
    let dovecot_cpu = || group_cpu_secs(stack.dovecot_pid().unwrap());
    let queue = admin.create_queue(pb::Queue { name: "bench".into(), ..Default::default() }).await;
    let rounds = knob("DRAIN_BENCH_ROUNDS", 3).max(1);
    let per_poll = knob("DRAIN_BENCH_PER_POLL", 500).max(1);
    let peers = knob("DRAIN_BENCH_PEERS", 1) != 0;
    let warm = knob("DRAIN_BENCH_WARM", 1) != 0;
    let log = std::env::var("DRAIN_BENCH_LOG").unwrap_or_else(|_| "warn,deskmail_fetcher=info".into());
    // The peers write 10,000 files a round (and the bench deletes them after it): on a disk
    // file system mbsync then spent 2.9-5 s of its own CPU in ext4's inode allocator
    // (`find_inode_bit`, `recently_deleted`, seen with perf) instead of 0.6 s, which made its
    // rate bimodal (about 2,000 or 10,000 msgs/s). On tmpfs, as the mail stack itself is, it
    // runs at its own speed every round.
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let config = dir.path().join("fetcher.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nlevel = \"{log}\"\n[amqp]\nurl = \"{}\"\npublish_window = 512\n{}\n[fetch]\nmax_messages_per_poll = {per_poll}\n",
            vhost.amqp_url(),
            configd.config_service_toml()
        ),
    )
    .unwrap();
    let conn = Connection::connect(&vhost.amqp_url(), ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let spawn = || {
        DaemonProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_deskmail-fetcher")),
            &["--config", config.to_str().unwrap()],
            &[],
        )
        .unwrap()
    };
    let mut fetcher = spawn();
    fetcher.wait_for_log("Ready.", Duration::from_secs(30)).unwrap();
    let mails: Vec<Vec<u8>> = (0..N).map(|i| mail(i, SIZE)).collect();
    let (mut ours, mut mbsync, mut fetchmail) = (Vec::new(), Vec::new(), Vec::new());
    let (mut emptied, mut ratios) = (Vec::new(), Vec::new());
    let (mut cpu_ours, mut cpu_mbsync) = (Vec::new(), Vec::new());
    let mut mailbox_id = String::new();
    println!(
        "fetcher drain bench: {N} mails of {SIZE} bytes, plain IMAP on 127.0.0.1, {rounds} rounds, \
         max_messages_per_poll = {per_poll}"
    );
    for round in 0..rounds {
        stack.deliver_many(USER, &mails).unwrap();
        assert_eq!(stack.message_count(USER, "INBOX").unwrap(), N);
        if warm {
            warm_up(&stack);
        }
        let (dove0, own0) = (dovecot_cpu(), reaped_children_cpu_secs());
        let m = if peers { run_mbsync(&stack, dir.path()) } else { 0.0 };
        let (mbsync_dovecot, mbsync_own) = (dovecot_cpu() - dove0, reaped_children_cpu_secs() - own0);
        let f = if peers { run_fetchmail(&stack, dir.path()) } else { 0.0 };
        let _ = ch.queue_purge(QUEUE.into(), QueuePurgeOptions::default()).await;
        // deskmail: from the box being switched on in configd to the last confirm.
        let (cpu0, dove0, rabbit0) = (pid_cpu_secs(fetcher.pid()), dovecot_cpu(), group_cpu_secs(broker_pid));
        let t0 = Instant::now();
        if round == 0 {
            let mut mb = deskmail_testkit_configd::imap_mailbox("bench", &queue.id, stack.imap_port(), PW);
            let inbound = mb.inbound.as_mut().unwrap();
            inbound.username = USER.into();
            inbound.security = pb::Security::None as i32;
            mailbox_id = admin.create_mailbox(mb).await.id;
        } else {
            set_enabled(&admin, &mailbox_id, true).await;
        }
        while count(&ch).await < N as u32 {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "deskmail drain stalled:\n{}",
                fetcher.log().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let d = N as f64 / t0.elapsed().as_secs_f64();
        // Also to the end state: every mail removed from the server (the last poll's
        // STORE + EXPUNGE come after its last confirm), for the record; the headline figure
        // stays the one above, comparable with earlier runs.
        while stack.message_count(USER, "INBOX").unwrap() != 0 {
            assert!(t0.elapsed() < Duration::from_secs(120), "deskmail expunge stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let e = N as f64 / t0.elapsed().as_secs_f64();
        let cpu = pid_cpu_secs(fetcher.pid()) - cpu0;
        let (dove, rabbit) = (dovecot_cpu() - dove0, group_cpu_secs(broker_pid) - rabbit0);
        set_enabled(&admin, &mailbox_id, false).await;
        println!(
            "  round {}: deskmail {d:>8.0} msgs/s ({e:.0} to an empty INBOX, fetcher CPU {cpu:.2} s)   mbsync {m:>8.0} msgs/s   fetchmail {f:>8.0} msgs/s",
            round + 1
        );
        println!(
            "    CPU s: deskmail = fetcher {cpu:.2} + Dovecot {dove:.2} + RabbitMQ {rabbit:.2} = {:.2}; \
             mbsync = mbsync {mbsync_own:.2} + Dovecot {mbsync_dovecot:.2} = {:.2}",
            cpu + dove + rabbit,
            mbsync_own + mbsync_dovecot
        );
        cpu_ours.push(cpu + dove + rabbit);
        cpu_mbsync.push(mbsync_own + mbsync_dovecot);
        if peers {
            ratios.push(d / m.max(f));
        }
        ours.push(d);
        emptied.push(e);
        mbsync.push(m);
        fetchmail.push(f);
        let _ = ch.queue_purge(QUEUE.into(), QueuePurgeOptions::default()).await;
    }
    if std::env::var("DRAIN_BENCH_LOG").is_ok() {
        for line in fetcher.log().iter().filter(|l| l.contains("phases")) {
            println!("  {line}");
        }
    }
    let hwm_small = status_kib(fetcher.pid(), "VmHWM:").unwrap();
    let (d, m, f, e) = (median(ours), median(mbsync), median(fetchmail), median(emptied));
    let best = m.max(f);
    println!(
        "median msgs/s: deskmail-fetcher {d:.0} ({e:.0} to an empty INBOX) | mbsync {m:.0} | fetchmail {f:.0}"
    );
    if peers {
        println!("ratio deskmail / fastest peer: {:.2} ({:.2} to an empty INBOX)", d / best, e / best);
        // The peers' speed drifts from round to round (mbsync was several times slower in
        // rounds 3 to 5 than in rounds 1 and 2 of the same run): show each round's ratio too.
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!("ratio in each round: {} (median {:.2})", each.join(" / "), median(ratios.clone()));
    }
    // Two cores: a drain can take no less than half the CPU time all its processes need.
    let (co, cm) = (median(cpu_ours), median(cpu_mbsync));
    println!(
        "median CPU s per drain: deskmail {co:.2} (fetcher + Dovecot + RabbitMQ), mbsync {cm:.2} (mbsync + Dovecot); \
         on 2 cores at most {:.0} and {:.0} msgs/s",
        N as f64 / (co / 2.0),
        if cm > 0.0 { N as f64 / (cm / 2.0) } else { 0.0 }
    );
    println!("fetcher peak RSS (VmHWM) after the 8 KiB drains: {:.1} MB", hwm_small as f64 / 1024.0);
    fetcher.terminate(Duration::from_secs(30)).unwrap();

    // Peak RSS with 25 MB mails: a fresh process drains a box of them.
    let big: Vec<Vec<u8>> = (0..BIG_MAILS).map(|i| mail(i, BIG)).collect();
    stack.deliver_many(BIG_USER, &big).unwrap();
    let mut fetcher = spawn();
    fetcher.wait_for_log("Ready.", Duration::from_secs(30)).unwrap();
    let mut mb = deskmail_testkit_configd::imap_mailbox("bench-big", &queue.id, stack.imap_port(), PW);
    let inbound = mb.inbound.as_mut().unwrap();
    inbound.username = BIG_USER.into();
    inbound.security = pb::Security::None as i32;
    let t0 = Instant::now();
    admin.create_mailbox(mb).await;
    while count(&ch).await < BIG_MAILS as u32 {
        assert!(t0.elapsed() < Duration::from_secs(120), "big drain stalled:\n{}", fetcher.log().join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let hwm_big = status_kib(fetcher.pid(), "VmHWM:").unwrap();
    println!(
        "fetcher peak RSS (VmHWM) draining {BIG_MAILS} mails of 25 MB: {:.1} MB ({:.1} MB/s)",
        hwm_big as f64 / 1024.0,
        (BIG_MAILS * BIG) as f64 / 1_048_576.0 / secs
    );
    fetcher.terminate(Duration::from_secs(30)).unwrap();
    let _ = ch.queue_purge(QUEUE.into(), QueuePurgeOptions::default()).await;
    let _ = conn.close(200, "done".into()).await;
}

async fn set_enabled(admin: &deskmail_testkit_configd::Admin, id: &str, on: bool) {
    admin
        .mailboxes()
        .update_mailbox(pb::UpdateMailboxRequest {
            mailbox: Some(pb::Mailbox { id: id.to_owned(), enabled: Some(on), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["enabled".into()] }),
        })
        .await
        .unwrap();
}
