//! Publishing fetched mail: the raw-mail message of the design, and [`Outbox`], one poll's
//! confirm pipeline, bounded by a count (the publish window) and, over all mailboxes, by
//! bytes (a semaphore of bytes taken before a mail is fetched and given back once the broker
//! confirmed it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use deskmail_core::SourceId;
use deskmail_mq::topology::routing_keys;
use deskmail_mq::{MqError, OutgoingMessage, PendingConfirm, Publisher, Topology};
use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// The broker side every mailbox task shares.
#[derive(Debug)]
pub(crate) struct Broker {
    pub publisher: Publisher,
    pub topology: Topology,
    /// Bytes of mail fetched and not yet confirmed, over all mailboxes.
    pub bytes: Arc<Semaphore>,
    /// The semaphore's size (a bigger mail takes all of it).
    pub bytes_total: u32,
}

impl Broker {
    pub(crate) fn new(publisher: Publisher, topology: Topology, max_inflight_bytes: u64) -> Self {
        let bytes_total = u32::try_from(max_inflight_bytes).unwrap_or(u32::MAX);
        Self { publisher, topology, bytes: Arc::new(Semaphore::new(bytes_total as usize)), bytes_total }
    }

    /// The raw-mail message: `message_id` = source id, headers `x-mailbox-id`,
    /// `x-fetched-at` (RFC 3339) and `x-deskmail-trace-id`, content type `message/rfc822`.
    pub(crate) fn raw_mail(&self, source: &SourceId, mailbox_id: &str, body: Bytes) -> OutgoingMessage {
        let now = SystemTime::now();
        let unix = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        OutgoingMessage::new(self.topology.inbound_exchange(), routing_keys::MAIL_RAW, body)
            .content_type("message/rfc822")
            .message_id(source.as_str())
            .header("x-mailbox-id", mailbox_id)
            .header("x-fetched-at", humantime::format_rfc3339_millis(now).to_string())
            .header("x-deskmail-trace-id", uuid::Uuid::now_v7().to_string())
            .timestamp(unix)
    }

    /// A `mailbox.status` event on `<prefix>.events` (JSON). Nobody bound to it is fine.
    pub(crate) async fn event(&self, body: serde_json::Value) {
        let msg = OutgoingMessage::new(
            self.topology.events_exchange(),
            routing_keys::MAILBOX_STATUS,
            Bytes::from(body.to_string()),
        )
        .content_type("application/json");
        match self.publisher.publish_confirmed(msg).await {
            Ok(()) | Err(MqError::Unroutable { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "Could not publish a mailbox.status event."),
        }
    }
}

/// Bytes a mail of `size` takes from the semaphore.
fn permits_for(size: u64, total: u32) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX).clamp(1, total)
}

/// Publishes in flight, oldest first, with the key (UID, UIDL) of each mail, and their room.
type Inflight<K> = VecDeque<(K, OwnedSemaphorePermit, Result<PendingConfirm, MqError>)>;

/// What a poll stopped at the per-poll cap hands to the next one (which follows at once on the
/// same session): its publishes still waiting for their confirms, so fetching goes on while
/// the broker confirms instead of the pipeline draining at each cap.
pub(crate) struct Carried<K> {
    inflight: Inflight<K>,
}

impl<K> std::fmt::Debug for Carried<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carried").field("inflight", &self.inflight.len()).finish()
    }
}

/// One poll's publishes in flight, oldest first, with the key (UID, UIDL) of each mail.
pub(crate) struct Outbox<'a, K> {
    broker: &'a Broker,
    /// The mailbox's configd id (metric label).
    mailbox_id: &'a str,
    window: usize,
    inflight: Inflight<K>,
    confirmed: Vec<K>,
    failure: Option<MqError>,
}

impl<'a, K> Outbox<'a, K> {
    pub(crate) fn new(broker: &'a Broker, mailbox_id: &'a str, window: usize) -> Self {
        Self {
            broker,
            mailbox_id,
            window: window.max(1),
            inflight: VecDeque::new(),
            confirmed: Vec::new(),
            failure: None,
        }
    }

    /// An outbox that goes on with what a capped poll left in flight.
    pub(crate) fn resume(
        broker: &'a Broker,
        mailbox_id: &'a str,
        window: usize,
        carried: Option<Carried<K>>,
    ) -> Self {
        let mut outbox = Self::new(broker, mailbox_id, window);
        if let Some(c) = carried {
            outbox.inflight = c.inflight;
        }
        outbox
    }

    /// The publishes still in flight, for the next poll (confirmed keys must be taken first).
    pub(crate) fn carry(self) -> Carried<K> {
        Carried { inflight: self.inflight }
    }

    /// Publishes one mail just downloaded from the server (counted as fetched), as the
    /// raw-mail message of `source`, inside a `mail` span carrying the source id and the
    /// mailbox id.
    pub(crate) async fn send_mail(
        &mut self,
        key: K,
        room: OwnedSemaphorePermit,
        source: &SourceId,
        body: Bytes,
    ) {
        deskmail_telemetry::fetcher::mail_fetched(self.mailbox_id);
        let span = tracing::info_span!("mail", source_id = %source, mailbox_id = %self.mailbox_id);
        span.in_scope(|| tracing::debug!(size = body.len(), "Mail fetched; publishing."));
        let msg = self.broker.raw_mail(source, self.mailbox_id, body);
        self.send(key, room, msg).instrument(span).await;
    }

    /// Takes room for `size` bytes of mail before it is fetched. While the room is taken by
    /// this poll's own unconfirmed mails it waits for their confirms (never for itself).
    pub(crate) async fn reserve(&mut self, size: u64) -> OwnedSemaphorePermit {
        let n = permits_for(size, self.broker.bytes_total);
        loop {
            if let Ok(p) = self.broker.bytes.clone().try_acquire_many_owned(n) {
                return p;
            }
            if self.inflight.is_empty() {
                // Others hold the room; they give it back as their confirms arrive. The
                // semaphore is never closed, so this only waits.
                if let Ok(p) = self.broker.bytes.clone().acquire_many_owned(n).await {
                    return p;
                }
            }
            self.settle_one().await;
        }
    }

    /// Splits the room for one mail of `size` bytes off a batch's `room`.
    pub(crate) fn take(&self, room: &mut OwnedSemaphorePermit, size: u64) -> Option<OwnedSemaphorePermit> {
        let n = permits_for(size, self.broker.bytes_total) as usize;
        room.split(n.min(room.num_permits()))
    }

    /// Publishes one mail (its room was reserved), waiting first for the oldest confirm when
    /// the window is full.
    pub(crate) async fn send(&mut self, key: K, room: OwnedSemaphorePermit, msg: OutgoingMessage) {
        while self.inflight.len() >= self.window {
            self.settle_one().await;
        }
        let pending = self.broker.publisher.publish(msg).await;
        self.inflight.push_back((key, room, pending));
        self.settle_ready();
    }

    /// Awaits the oldest confirm.
    async fn settle_one(&mut self) {
        if let Some((key, room, pending)) = self.inflight.pop_front() {
            let outcome = match pending {
                Ok(p) => p.await,
                Err(e) => Err(e),
            };
            drop(room);
            self.record(key, outcome);
        }
    }

    fn record(&mut self, key: K, outcome: Result<(), MqError>) {
        match outcome {
            Ok(()) => {
                deskmail_telemetry::fetcher::mail_published(self.mailbox_id);
                self.confirmed.push(key);
            }
            Err(e) => {
                if self.failure.is_none() {
                    self.failure = Some(e);
                }
            }
        }
    }

    /// Takes the confirms that already arrived, without waiting.
    pub(crate) fn settle_ready(&mut self) {
        while let Some((_, _, pending)) = self.inflight.front_mut() {
            let outcome = match pending {
                Ok(p) => match p.now_or_never() {
                    Some(o) => o,
                    None => return,
                },
                Err(_) => Ok(()),
            };
            if let Some((key, room, published)) = self.inflight.pop_front() {
                drop(room);
                self.record(key, published.and(outcome));
            }
        }
    }

    /// Awaits every confirm.
    pub(crate) async fn settle_all(&mut self) {
        while !self.inflight.is_empty() {
            self.settle_one().await;
        }
    }

    /// Keys of the mails the broker confirmed since the last call.
    pub(crate) fn take_confirmed(&mut self) -> Vec<K> {
        std::mem::take(&mut self.confirmed)
    }

    /// How many confirmed keys wait to be taken.
    pub(crate) fn confirmed_len(&self) -> usize {
        self.confirmed.len()
    }

    /// The first publish failure (nack, unroutable, channel closed), if any.
    pub(crate) fn take_failure(&mut self) -> Option<MqError> {
        self.failure.take()
    }
}
