//! What a metric costs a daemon: nanoseconds per helper call (which builds its label and
//! looks the series up) against a pre-registered `metrics::Counter` handle (the cheapest
//! the `metrics` facade allows) in the same process, and the latency of a `/metrics`
//! scrape over real HTTP with a realistic number of series.
//!
//! `cargo bench -p deskmail-telemetry --bench record`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use deskmail_config::{MetricsConfig, Port};
use deskmail_telemetry::router::RouteOutcome;
use deskmail_telemetry::{Telemetry, fetcher, router, sender};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const CALLS: u32 = 1_000_000;
const ROUNDS: usize = 7;
const MAILBOXES: usize = 200;
const SCRAPES: usize = 50;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median over [`ROUNDS`] of the nanoseconds per call of `f`.
fn ns_per_call(mut f: impl FnMut(u32)) -> f64 {
    let rounds = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..CALLS {
                f(i);
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .collect();
    median(rounds)
}

async fn scrape(addr: std::net::SocketAddr) -> (Duration, usize) {
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").await.unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).await.unwrap();
    (start.elapsed(), body.len())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    let cfg = MetricsConfig { bind: IpAddr::V4(Ipv4Addr::LOCALHOST), port: Port::new(port) };
    let shutdown = CancellationToken::new();
    let telemetry = Telemetry::start(&cfg, "deskmail-bench", &shutdown).await.unwrap();
    let addr = telemetry.local_addr().unwrap();

    let mailboxes: Vec<String> = (0..MAILBOXES).map(|i| format!("0190c0de-0000-7000-8000-{i:012}")).collect();
    for mb in &mailboxes {
        fetcher::init_mailbox(mb);
        sender::init_box(mb);
    }
    router::init();
    sender::init();

    let handle = metrics::counter!("deskmail_bench_handle_total", "mailbox" => mailboxes[0].clone());
    let peer = ns_per_call(|_| handle.increment(1));
    let helper = ns_per_call(|i| fetcher::mail_fetched(&mailboxes[i as usize % MAILBOXES]));
    let routed = ns_per_call(|i| {
        router::mail_routed(
            RouteOutcome::NewTicket,
            &mailboxes[i as usize % MAILBOXES],
            Duration::from_millis(3),
        )
    });
    let sent =
        ns_per_call(|i| sender::job_sent(&mailboxes[i as usize % MAILBOXES], Duration::from_millis(12)));

    println!("deskmail-telemetry record bench ({CALLS} calls x {ROUNDS} rounds, medians)");
    println!("  Counter handle .increment(1) (peer)        {peer:>8.1} ns/call");
    println!(
        "  fetcher::mail_fetched(mailbox)             {helper:>8.1} ns/call  ({:.1}x peer)",
        helper / peer
    );
    println!(
        "  router::mail_routed (2 counters + histogram) {routed:>6.1} ns/call  ({:.1}x peer)",
        routed / peer
    );
    println!("  sender::job_sent (counter + histogram)     {sent:>8.1} ns/call  ({:.1}x peer)", sent / peer);

    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..SCRAPES {
        let (t, n) = scrape(addr).await;
        times.push(t.as_secs_f64() * 1e3);
        size = n;
    }
    let lines = telemetry.render().lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "  GET /metrics, {MAILBOXES} mailboxes+boxes, {lines} series lines, {size} bytes: median {:.2} ms over {SCRAPES} scrapes",
        median(times)
    );
    telemetry.stop().await;
}
