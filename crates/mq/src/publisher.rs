//! Publishing with publisher confirms, pipelined.
//!
//! [`Publisher::publish`] returns as soon as lapin has the frames, with a [`PendingConfirm`]
//! that resolves when the broker confirms. Only a broker `basic.ack` for a routed message
//! resolves to `Ok(())`: a nack, a returned (unroutable) message, or a channel or connection
//! closed before the ack are errors, so nothing is ever counted as sent that the broker did
//! not take. Await every `PendingConfirm`: lapin keeps dropped unresolved confirms in a list
//! that only `Channel::wait_for_confirms` empties.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::FutureExt;
use futures::stream::{Stream, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use tracing::{debug, error, warn};

use crate::error::MqError;
use crate::message::{OutgoingMessage, short};

/// Default most confirms in flight for [`Publisher::publish_all`] and
/// [`Publisher::publish_stream`].
pub const DEFAULT_PUBLISH_WINDOW: usize = 512;

/// A confirm-mode channel that publishes persistent, mandatory messages; share it by
/// reference (`&self` everywhere). A channel error (e.g. `404 NOT_FOUND` for a missing
/// exchange) closes the channel for good: later publishes fail with a transient error, and
/// [`Publisher::reopen`] (or a new `Publisher`) gets a fresh channel.
#[derive(Debug)]
pub struct Publisher {
    channel: Mutex<Arc<Channel>>,
    window: usize,
}

impl Publisher {
    /// Opens a channel on `conn` and puts it in confirm mode.
    pub async fn new(conn: &Connection) -> Result<Publisher, MqError> {
        let channel = open_confirm_channel(conn).await?;
        Ok(Publisher { channel: Mutex::new(Arc::new(channel)), window: DEFAULT_PUBLISH_WINDOW })
    }

    /// Whether the channel is open (false after a channel error or connection loss).
    pub fn is_open(&self) -> bool {
        self.current().status().connected()
    }

    /// Replaces a closed channel with a new confirm-mode one on `conn`; a no-op while the
    /// channel is open. Confirms still pending on the old channel have failed already.
    pub async fn reopen(&self, conn: &Connection) -> Result<(), MqError> {
        if self.is_open() {
            return Ok(());
        }
        let fresh = Arc::new(open_confirm_channel(conn).await?);
        warn!(channel = fresh.id(), "Publisher channel was closed; opened a new one.");
        *lock(&self.channel) = fresh;
        Ok(())
    }

    /// Sets how many confirms [`Publisher::publish_all`] and [`Publisher::publish_stream`]
    /// keep in flight (at least 1).
    #[must_use]
    pub fn with_window(mut self, window: usize) -> Publisher {
        self.window = window.max(1);
        self
    }

    /// The confirm window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Hands the message to lapin (persistent, mandatory) and returns once it is framed and
    /// queued for lapin's IO thread, without waiting for the socket or the broker. Await the
    /// returned [`PendingConfirm`] for the broker's verdict, and bound how many are outstanding
    /// ([`Publisher::publish_all`] and [`Publisher::publish_stream`] do).
    pub async fn publish(&self, msg: OutgoingMessage) -> Result<PendingConfirm, MqError> {
        let props = msg.properties()?;
        debug!(exchange = %msg.exchange, routing_key = %msg.routing_key, msg_id = msg.message_id.as_deref().unwrap_or(""), "Publishing.");
        let OutgoingMessage { exchange, routing_key, payload, .. } = msg;
        self.publish_raw(exchange, routing_key, payload, props).await
    }

    /// Like [`Publisher::publish`], but not `mandatory`: a message no queue is bound for is
    /// dropped by the broker and confirmed as a success. For fan-out events that integrators
    /// may or may not listen to (the router's `ticket.*`): a mandatory publish would make
    /// every unheard event an error and fill lapin's log with returned messages.
    pub async fn publish_optional(&self, msg: OutgoingMessage) -> Result<PendingConfirm, MqError> {
        let props = msg.properties()?;
        debug!(exchange = %msg.exchange, routing_key = %msg.routing_key, msg_id = msg.message_id.as_deref().unwrap_or(""), "Publishing (not mandatory).");
        let OutgoingMessage { exchange, routing_key, payload, .. } = msg;
        self.publish_with(exchange, routing_key, payload, props, false).await
    }

    /// Publishes and waits for the broker's confirm (one round trip: use
    /// [`Publisher::publish_all`] or [`Publisher::publish_stream`] for throughput).
    pub async fn publish_confirmed(&self, msg: OutgoingMessage) -> Result<(), MqError> {
        self.publish(msg).await?.await
    }

    /// Publishes every message, keeping at most [`Publisher::window`] confirms in flight, and
    /// returns one result per message, in input order.
    pub async fn publish_all<I>(&self, msgs: I) -> Vec<Result<(), MqError>>
    where
        I: IntoIterator<Item = OutgoingMessage>,
    {
        self.publish_stream(futures::stream::iter(msgs.into_iter().map(|m| ((), m))))
            .map(|((), r)| r)
            .collect()
            .await
    }

    /// Publishes `(key, message)` pairs from `input` with at most [`Publisher::window`]
    /// confirms in flight, yielding `(key, result)` in input order as confirms arrive: e.g. the
    /// fetcher marks a mail `\Seen` when its key comes back `Ok`.
    pub fn publish_stream<'a, K, S>(&'a self, input: S) -> impl Stream<Item = (K, Result<(), MqError>)> + 'a
    where
        K: 'a,
        S: Stream<Item = (K, OutgoingMessage)> + 'a,
    {
        // A queue polled only at its oldest entry, like a hand-written loop over a VecDeque:
        // one waker registered at a time, no wake-up per confirm.
        let state = (Box::pin(input.fuse()), VecDeque::with_capacity(self.window), false);
        futures::stream::unfold(state, move |(mut input, mut inflight, mut done)| async move {
            loop {
                if done || inflight.len() >= self.window {
                    let r = poll_fn(|cx| poll_oldest(&mut inflight, cx)).await?;
                    return Some((r, (input, inflight, done)));
                }
                let next = match input.next().now_or_never() {
                    Some(item) => Next::Input(item),
                    // Nothing to publish right now: hand out confirms while waiting for input.
                    None => tokio::select! {
                        biased;
                        Some(r) = poll_fn(|cx| poll_oldest(&mut inflight, cx)) => Next::Confirmed(r),
                        item = input.next() => Next::Input(item),
                    },
                };
                match next {
                    Next::Confirmed(r) => return Some((r, (input, inflight, done))),
                    Next::Input(Some((key, msg))) => inflight.push_back((key, self.publish(msg).await)),
                    Next::Input(None) => done = true,
                }
            }
        })
    }

    /// Publishes a payload with ready-made AMQP properties (headers and all), persistent and
    /// mandatory like every publish: for tools that move a received message on with its
    /// properties intact (`deskmailctl dead replay`). Await the [`PendingConfirm`].
    pub async fn publish_with_properties(
        &self,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        payload: impl Into<Bytes>,
        properties: BasicProperties,
    ) -> Result<PendingConfirm, MqError> {
        let properties = properties.with_delivery_mode(2);
        self.publish_raw(exchange.into(), routing_key.into(), payload.into(), properties).await
    }

    /// Publishes a payload with ready-made properties (used to dead-letter a delivery with its
    /// original properties). Persistent and mandatory like every publish.
    pub(crate) async fn publish_raw(
        &self,
        exchange: String,
        routing_key: String,
        payload: Bytes,
        properties: BasicProperties,
    ) -> Result<PendingConfirm, MqError> {
        self.publish_with(exchange, routing_key, payload, properties, true).await
    }

    async fn publish_with(
        &self,
        exchange: String,
        routing_key: String,
        payload: Bytes,
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<PendingConfirm, MqError> {
        let ex = short("exchange", &exchange)?;
        let rk = short("routing key", &routing_key)?;
        let channel = self.current();
        let options = BasicPublishOptions { mandatory, immediate: false };
        let mut sending: Sending =
            Box::pin(async move { channel.basic_publish(ex, rk, options, &payload, properties).await });
        // The first poll frames the message, queues the frames in lapin and takes its delivery
        // tag, all synchronously; what remains is lapin's IO thread writing them to the socket.
        // Not waiting for that here (and not registering our waker for it) saves a thread
        // hand-off per message: the confirm cannot come before the write anyway.
        let state = match sending.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Pending => State::Sending(sending),
            Poll::Ready(Ok(confirm)) => State::Confirming(confirm),
            Poll::Ready(Err(source)) => {
                return Err(MqError::Publish { exchange, routing_key, source: Box::new(source) });
            }
        };
        Ok(PendingConfirm { state, exchange, routing_key })
    }

    /// Closes the channel (after awaiting your confirms; unresolved ones fail).
    pub async fn close(&self) -> Result<(), MqError> {
        let channel = self.current();
        if !channel.status().connected() {
            return Ok(());
        }
        channel
            .close(200, "publisher closed".into())
            .await
            .map_err(|source| MqError::Amqp { op: "channel.close", source: Box::new(source) })
    }

    fn current(&self) -> Arc<Channel> {
        lock(&self.channel).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Next<K> {
    Input(Option<(K, OutgoingMessage)>),
    Confirmed((K, Result<(), MqError>)),
}

type Inflight<K> = VecDeque<(K, Result<PendingConfirm, MqError>)>;

/// The oldest publish's outcome once the broker has answered; `None` when nothing is in flight.
fn poll_oldest<K>(
    inflight: &mut Inflight<K>,
    cx: &mut Context<'_>,
) -> Poll<Option<(K, Result<(), MqError>)>> {
    let outcome = match inflight.front_mut() {
        None => return Poll::Ready(None),
        Some((_, Ok(pending))) => match Pin::new(pending).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        },
        Some((_, Err(_))) => Ok(()),
    };
    Poll::Ready(inflight.pop_front().map(|(key, published)| (key, published.and(outcome))))
}

pub(crate) async fn open_confirm_channel(conn: &Connection) -> Result<Channel, MqError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|source| MqError::Amqp { op: "channel.open", source: Box::new(source) })?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|source| MqError::Amqp { op: "confirm.select", source: Box::new(source) })?;
    Ok(channel)
}

/// The broker's verdict on one published message: `Ok(())` only for a `basic.ack` of a
/// routed message.
#[must_use = "a publish is not confirmed until its PendingConfirm resolves to Ok"]
pub struct PendingConfirm {
    state: State,
    exchange: String,
    routing_key: String,
}

type Sending = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

enum State {
    /// Frames queued in lapin, not yet written to the socket.
    Sending(Sending),
    /// Written; waiting for the broker.
    Confirming(PublisherConfirm),
    Done,
}

impl std::fmt::Debug for PendingConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConfirm")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .finish()
    }
}

impl PendingConfirm {
    fn finish(&mut self, outcome: Result<Confirmation, lapin::Error>) -> Result<(), MqError> {
        self.state = State::Done;
        let exchange = std::mem::take(&mut self.exchange);
        let routing_key = std::mem::take(&mut self.routing_key);
        match outcome {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(returned))) => {
                // lapin hands the oldest returned message to whichever pending confirm it
                // completes first. RabbitMQ sends an unroutable message's return and then its
                // ack on their own (the channel flushes confirms after each publish), so they
                // match; should they ever not, this publish fails too (a false failure, never a
                // false success for this message) and the mismatch is logged.
                if returned.delivery.exchange.as_str() != exchange
                    || returned.delivery.routing_key.as_str() != routing_key
                {
                    error!(
                        %exchange, %routing_key,
                        returned_exchange = %returned.delivery.exchange,
                        returned_routing_key = %returned.delivery.routing_key,
                        "Broker returned another message than the one confirmed; reporting this one as unroutable."
                    );
                }
                Err(MqError::Unroutable {
                    exchange,
                    routing_key,
                    reply_text: returned.reply_text.to_string(),
                })
            }
            Ok(Confirmation::Nack(_)) => Err(MqError::Nacked { exchange, routing_key }),
            Ok(Confirmation::NotRequested) => Err(MqError::NotConfirmed { exchange }),
            Err(source) => Err(MqError::Publish { exchange, routing_key, source: Box::new(source) }),
        }
    }
}

impl Future for PendingConfirm {
    type Output = Result<(), MqError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Sending(sending) => match sending.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(confirm)) => this.state = State::Confirming(confirm),
                    Poll::Ready(Err(e)) => return Poll::Ready(this.finish(Err(e))),
                },
                State::Confirming(confirm) => match Pin::new(confirm).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(outcome) => return Poll::Ready(this.finish(outcome)),
                },
                State::Done => {
                    let source = Box::new(lapin::ErrorKind::FutureCompleted.into());
                    let (exchange, routing_key) = (this.exchange.clone(), this.routing_key.clone());
                    return Poll::Ready(Err(MqError::Publish { exchange, routing_key, source }));
                }
            }
        }
    }
}
