//! `make bench` for configd: Get and List latency (p50/p99) on loopback, and Watch fan-out:
//! the time until 100 watchers all have a change. Targets (issue): p99 Get under 2 ms, all
//! 100 watchers updated within 200 ms. Prints figures; asserts nothing.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)] // the shared test harness has helpers this bench does not use

#[path = "../tests/configd/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use harness::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<28} n={:<5} p50={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn run(db: Db) {
    println!("-- configd on {db:?}");
    let configd = Configd::start(db).await;
    let c = configd.channel().await;
    let mut q = queues(c.clone(), ADMIN);
    let mut ids = Vec::new();
    for n in 0..200 {
        let created = q
            .create_queue(pb::CreateQueueRequest {
                queue: Some(pb::Queue { name: format!("q{n:03}"), ..Default::default() }),
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(created.id);
    }
    for _ in 0..100 {
        q.get_queue(pb::GetRequest { id: ids[0].clone() }).await.unwrap(); // warm-up
    }
    let mut gets = Vec::new();
    for i in 0..3000 {
        let t = Instant::now();
        q.get_queue(pb::GetRequest { id: ids[i % ids.len()].clone() }).await.unwrap();
        gets.push(t.elapsed());
    }
    report("GetQueue", gets);
    let mut lists = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        q.list_queues(pb::ListRequest { page_size: 50, page_token: String::new() }).await.unwrap();
        lists.push(t.elapsed());
    }
    report("ListQueues (50 per page)", lists);

    // Watch fan-out: 100 watchers, each on its own connection, wait for one change.
    let mut streams = Vec::new();
    for _ in 0..100 {
        let ch = configd.channel().await;
        let mut s =
            watch(ch, DAEMON).watch(pb::WatchRequest { known_revision: 0 }).await.unwrap().into_inner();
        let first = s.message().await.unwrap().unwrap();
        streams.push((s, first.revision));
    }
    let mut fanouts = Vec::new();
    for round in 0..5 {
        let started = Instant::now();
        let waiters: Vec<_> = streams
            .drain(..)
            .map(|(mut s, rev)| {
                tokio::spawn(async move {
                    loop {
                        let snap = s.message().await.unwrap().unwrap();
                        if snap.revision > rev {
                            return (s, snap.revision, Instant::now());
                        }
                    }
                })
            })
            .collect();
        q.create_queue(pb::CreateQueueRequest {
            queue: Some(pb::Queue { name: format!("change{round}"), ..Default::default() }),
        })
        .await
        .unwrap();
        let mut last = started;
        for w in waiters {
            let (s, rev, at) = w.await.unwrap();
            last = last.max(at);
            streams.push((s, rev));
        }
        fanouts.push(last - started);
    }
    report("Watch: 100 watchers updated", fanouts);
    configd.stop().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        run(Db::Sqlite).await;
        run(Db::Postgres).await;
    });
}
