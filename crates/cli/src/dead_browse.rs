//! Reading a dead queue without losing or reordering it.
//!
//! RabbitMQ has no "peek" for quorum queues: a message must be delivered, then given back.
//! On RabbitMQ 3.10 (measured on this project's broker) a quorum queue puts a message that
//! is given back (nacked with requeue, or left unacked when the channel closes) at the *back*
//! of the queue, not where it was; and when many come back at once (more than about 32, or a
//! channel closing) they come back in no particular order. So a browse here:
//!
//! 1. takes *every* message of the queue with `basic.get` and manual ack (nothing is acked,
//!    so a crash or a lost connection only gives them back, never loses one; the dead queues
//!    have no delivery limit);
//! 2. gives them back one at a time, oldest first, waiting until the broker counts each one
//!    back in the queue before the next, so the queue ends in the order it had.
//!
//! Costs: each browse adds 1 to every message's `x-delivery-count`, and takes about one
//! round trip per message twice (a few ms each). A message dead-lettered while a browse runs
//! may end up ahead of older ones; nothing is lost. An interrupted browse (Ctrl-C, network)
//! leaves every message in the queue, possibly reordered.

use std::time::{Duration, Instant};

use deskmail_mq::lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use deskmail_mq::lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use deskmail_mq::lapin::types::FieldTable;
use deskmail_mq::lapin::{BasicProperties, Channel, Connection, ErrorKind};
use deskmail_mq::{AmqpConfig, Topology};

use crate::dead_letter::Summary;
use crate::fail::Fail;

/// How long to wait for the broker to count one given-back message before moving on (the
/// message is back either way; only its place could differ).
const GIVE_BACK_WAIT: Duration = Duration::from_secs(5);

/// A connection to the broker and the topology names of the configured prefix.
pub struct Broker {
    pub conn: Connection,
    pub topology: Topology,
    /// The broker URL without its password, for messages.
    pub url: String,
}

/// One message taken from a queue, not acknowledged.
pub struct Item {
    pub tag: u64,
    pub summary: Summary,
    pub properties: BasicProperties,
    /// Kept only when the caller asked for it (memory: a dead queue may hold big mails).
    pub body: Option<Vec<u8>>,
}

/// Every message of one queue, taken and not yet given back.
pub struct Held {
    channel: Channel,
    pub queue: String,
    pub items: Vec<Item>,
}

impl Broker {
    pub async fn connect(cfg: &AmqpConfig) -> Result<Broker, Fail> {
        let url = cfg.redacted_url();
        let topology = Topology::from_config(cfg).map_err(|e| Fail::Config(format!("amqp.prefix: {e}")))?;
        let conn = deskmail_mq::connect(cfg, "deskmailctl").await.map_err(|e| {
            Fail::Failed(format!(
                "cannot reach RabbitMQ: {e}\n  check `[amqp] url` (DESKMAILCTL_AMQP__URL); it is {url}"
            ))
        })?;
        Ok(Broker { conn, topology, url })
    }

    /// The dead queues `--queue` names: `inbound`, `outbound`, a full name, or (none) both.
    /// The work and retry queues are refused: a browse counts as a delivery there.
    pub fn queues(&self, arg: Option<&str>) -> Result<Vec<String>, Fail> {
        let t = &self.topology;
        Ok(match arg {
            None => vec![t.inbound_dead_queue(), t.outbound_dead_queue()],
            Some("inbound") => vec![t.inbound_dead_queue()],
            Some("outbound") => vec![t.outbound_dead_queue()],
            Some(name) => {
                if name.is_empty() || name.len() > 255 {
                    return Err(Fail::Usage(format!("--queue {name:?}: a queue name has 1 to 255 bytes")));
                }
                let retry = format!("{}.outbound.retry.", t.prefix());
                if name == t.inbound_queue() || name == t.outbound_queue() || name.starts_with(&retry) {
                    return Err(Fail::Usage(format!(
                        "--queue {name}: a work or retry queue, not a dead queue (browsing it would count \
                         toward its delivery limit); use inbound, outbound or a dead queue's full name"
                    )));
                }
                vec![name.to_owned()]
            }
        })
    }

    /// Takes every message of `queue` (see the module docs); `keep_body` says which bodies
    /// to keep in memory. Fails, naming the queue, when it does not exist.
    pub async fn hold(&self, queue: &str, keep_body: impl Fn(&Summary) -> bool) -> Result<Held, Fail> {
        let channel = self.conn.create_channel().await.map_err(|e| amqp("open a channel", &e))?;
        count(&channel, queue).await.map_err(|e| self.queue_error(queue, &e))?;
        let mut items = Vec::new();
        loop {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| amqp(&format!("read {queue}"), &e))?;
            let Some(got) = got else { break };
            let d = got.delivery;
            let summary = Summary::new(queue, items.len() + 1, &d.properties, d.data.len());
            let body = keep_body(&summary).then_some(d.data);
            items.push(Item { tag: d.delivery_tag, summary, properties: d.properties, body });
        }
        Ok(Held { channel, queue: queue.to_owned(), items })
    }

    fn queue_error(&self, queue: &str, e: &deskmail_mq::lapin::Error) -> Fail {
        let missing = matches!(e.kind(), ErrorKind::ProtocolError(p)
            if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)));
        if missing {
            Fail::Failed(format!(
                "queue {queue} does not exist at {}: is `[amqp] prefix` (DESKMAILCTL_AMQP__PREFIX) \
                 right? The daemons declare their queues when they start.",
                self.url
            ))
        } else {
            amqp(&format!("look up queue {queue}"), e)
        }
    }

    pub async fn close(self) {
        // Everything is acked or given back by now; a failed close changes nothing.
        let _ = self.conn.close(200, "deskmailctl done".into()).await;
    }
}

impl Held {
    /// Acks one held message: it leaves the queue for good.
    pub async fn ack(&self, tag: u64) -> Result<(), Fail> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await
            .map_err(|e| amqp(&format!("remove the replayed message from {}", self.queue), &e))
    }

    /// Gives back every held message but those in `acked`, one at a time in queue order, each
    /// counted back by the broker before the next. Returns how many may have changed place
    /// (not counted back in time).
    pub async fn give_back(self, acked: &[u64]) -> Result<usize, Fail> {
        let base = count(&self.channel, &self.queue).await.map_err(|e| amqp("count the queue", &e))?;
        let mut back = 0u32;
        let mut late = 0;
        for item in self.items.iter().filter(|i| !acked.contains(&i.tag)) {
            self.channel
                .basic_nack(item.tag, BasicNackOptions { multiple: false, requeue: true })
                .await
                .map_err(|e| amqp(&format!("give a message back to {}", self.queue), &e))?;
            back += 1;
            let deadline = Instant::now() + GIVE_BACK_WAIT;
            loop {
                let now = count(&self.channel, &self.queue).await.map_err(|e| amqp("count the queue", &e))?;
                if now >= base.saturating_add(back) {
                    break;
                }
                if Instant::now() >= deadline {
                    late += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let _ = self.channel.close(200, "browsed".into()).await;
        Ok(late)
    }
}

/// Ready messages of `queue` now (passive declare; an error when it does not exist).
async fn count(channel: &Channel, queue: &str) -> Result<u32, deskmail_mq::lapin::Error> {
    let opts = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    Ok(channel.queue_declare(queue.into(), opts, FieldTable::default()).await?.message_count())
}

fn amqp(what: &str, e: &deskmail_mq::lapin::Error) -> Fail {
    Fail::Failed(format!("RabbitMQ: cannot {what}: {e}"))
}
