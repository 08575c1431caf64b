//! Readiness of the sender's dependencies, as `/readyz` shows them (`docs/metrics.md`):
//! `configd` follows the Watch stream, `database` the sent-jobs log, `rabbitmq` the AMQP
//! connection (set by the consumer loop in `lib.rs`, which owns the connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deskmail_configclient::ConfigWatcher;
use deskmail_runtime::CancellationToken;
use deskmail_telemetry::{Readiness, ReadyFlag};

use crate::sentlog::SentLog;

/// How often the configd and database checks look.
const EVERY: Duration = Duration::from_secs(2);
/// A failed sent-log operation keeps `database` unready at least this long, even when a
/// `SELECT 1` works meanwhile (a full disk answers reads, not writes).
const FAILURE_HOLD: Duration = Duration::from_secs(10);

/// The flags of the three checks.
pub struct Flags {
    pub readiness: Readiness,
    pub rabbitmq: ReadyFlag,
    /// Taken by the task that follows the Watch stream.
    pub configd: Option<ReadyFlag>,
    pub database: Arc<Database>,
}

impl Flags {
    pub fn register(readiness: Readiness) -> Self {
        Self {
            rabbitmq: readiness.register("rabbitmq"),
            configd: Some(readiness.register("configd")),
            database: Arc::new(Database {
                flag: readiness.register("database"),
                failed_at: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
            readiness,
        }
    }
}

/// The `database` check: unready when a sent-log operation fails, ready again when one works
/// or, after a quiet while, when the database answers a ping.
pub struct Database {
    flag: ReadyFlag,
    /// Milliseconds since `epoch` of the last failure, plus one (0: none yet).
    failed_at: AtomicU64,
    epoch: Instant,
}

impl Database {
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.failed_at.store(ms.saturating_add(1), Ordering::Relaxed);
        self.flag.set_unready(format!("sent-jobs log: {error}"));
    }

    pub fn worked(&self) {
        self.flag.set_ready();
    }

    fn recently_failed(&self) -> bool {
        let at = self.failed_at.load(Ordering::Relaxed);
        at > 0 && self.epoch.elapsed() < Duration::from_millis(at - 1) + FAILURE_HOLD
    }

    /// Pings the log every few seconds until `shutdown`.
    pub fn spawn_ping(self: &Arc<Self>, log: SentLog, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if !log.ping().await {
                    this.flag.set_unready("sent-jobs log does not answer");
                } else if !this.recently_failed() {
                    this.flag.set_ready();
                }
            }
        });
    }
}

/// Follows configd's Watch stream: `configd` is ready while the stream is open (the sender
/// keeps working on its last snapshot meanwhile), and every outbound box of each new snapshot
/// gets its counters created at 0.
pub fn spawn_configd(watcher: &ConfigWatcher, flag: ReadyFlag, shutdown: CancellationToken) {
    let watcher = watcher.clone();
    let mut snapshots = watcher.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        let mut seen = std::collections::HashSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                changed = snapshots.changed() => if changed.is_err() { break },
            }
            let current = snapshots.borrow_and_update().clone();
            if let Some(s) = &current {
                for m in s.mailboxes.iter().filter(|m| m.outbound.is_some()) {
                    if seen.insert(m.id.clone()) {
                        deskmail_telemetry::sender::init_box(&m.id);
                    }
                }
            }
            match watcher.readiness("sending") {
                Ok(()) => flag.set_ready(),
                Err(why) => flag.set_unready(why),
            }
        }
    });
}
