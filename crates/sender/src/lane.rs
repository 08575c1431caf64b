//! A box's sending lanes: one task per pooled connection that takes the mails queued for it
//! (up to [`LANE_BATCH`] at once) and hands them to mailconn's `SmtpSender::send_batch`, which
//! chains them over one session with PIPELINING; each job gets its answer as soon as it is
//! known. The session goes straight from one mail to the next in the same task, instead of
//! being handed from one job task to another.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deskmail_mailconn::smtp::{SmtpReply, SmtpSender};

use crate::pool::SendFailure;

/// One send handed to a lane.
pub(crate) struct LaneRequest {
    pub sender: SmtpSender,
    pub envelope: lettre::address::Envelope,
    pub raw: Vec<u8>,
    /// The outcome, and the time the mail's transaction took: for a chained mail, from the
    /// previous mail's answer (or the start of the batch) to its own.
    pub reply: tokio::sync::oneshot::Sender<(Result<SmtpReply, SendFailure>, Duration)>,
}

/// A task that sends its queue's mails one after the other over one pooled session. A box
/// has `pool_max_per_box` lanes: the session goes straight from one mail to the next in the
/// same task, instead of being handed from one job task to another waiting task.
pub(crate) struct Lane {
    pub tx: tokio::sync::mpsc::UnboundedSender<LaneRequest>,
    /// Mails handed to this lane and not answered yet.
    pub queued: Arc<AtomicUsize>,
}

/// Most queued mails a lane takes at once and chains over its session.
pub(crate) const LANE_BATCH: usize = 64;

impl Lane {
    pub(crate) fn spawn() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<LaneRequest>();
        let queued = Arc::new(AtomicUsize::new(0));
        let count = queued.clone();
        // Ends when the box entry (holding the sending half) is dropped.
        let lane = async move {
            let mut taken = Vec::with_capacity(LANE_BATCH);
            while rx.recv_many(&mut taken, LANE_BATCH).await > 0 {
                let n = taken.len();
                // A job that no longer waits for its answer is not sent.
                taken.retain(|r| !r.reply.is_closed());
                send_taken(&mut taken).await;
                count.fetch_sub(n, Ordering::Relaxed);
            }
        };
        match lane_runtime() {
            Some(runtime) => drop(runtime.spawn(lane)),
            None => drop(tokio::spawn(lane)),
        }
        Self { tx, queued }
    }
}

/// The runtime the lanes run on: a thread of its own, so that a lane writes the next mail as
/// soon as the server's reply is in, instead of waiting behind the job tasks (JSON, building
/// mails) on the daemon's worker threads. On one connection every mail waits for one round
/// trip; the lane's turn-around is most of it. `None` (lanes on the caller's runtime) when
/// the thread cannot be started.
fn lane_runtime() -> Option<tokio::runtime::Handle> {
    static HANDLE: std::sync::OnceLock<Option<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("smtp-lanes".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// Sends what a lane took: each run of requests for the same pool as one chained batch
/// (mailconn pipelines them over one session), each reply handed back as soon as known.
async fn send_taken(taken: &mut Vec<LaneRequest>) {
    while let Some(first) = taken.first() {
        let sender = first.sender.clone();
        let run = taken.iter().take_while(|r| r.sender.same_pool(&sender)).count();
        let mut replies = Vec::with_capacity(run);
        let mut messages = Vec::with_capacity(run);
        for r in taken.drain(..run) {
            replies.push(Some(r.reply));
            messages.push((r.envelope, r.raw));
        }
        let mails: Vec<(&lettre::address::Envelope, &[u8])> =
            messages.iter().map(|(e, raw)| (e, raw.as_slice())).collect();
        let mut mark = Instant::now();
        sender
            .send_batch(&mails, |i, result| {
                let now = Instant::now();
                let took = now.duration_since(mark);
                mark = now;
                if let Some(reply) = replies.get_mut(i).and_then(Option::take) {
                    let _ = reply.send((result.map_err(SendFailure::Smtp), took));
                }
            })
            .await;
    }
}
