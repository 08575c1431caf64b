//! The `ticket.created` / `ticket.followup` events on `<prefix>.events` (JSON).

use serde::Serialize;

/// Outbox target: `<prefix>.events`.
pub const TARGET_EVENTS: &str = "events";
/// Outbox target: `<prefix>.outbound` (auto-reply jobs).
pub const TARGET_OUTBOUND: &str = "outbound";
/// Routing key and `event` of a new ticket.
pub const CREATED: &str = deskmail_mq::topology::routing_keys::TICKET_CREATED;
/// Routing key and `event` of a follow-up article.
pub const FOLLOWUP: &str = deskmail_mq::topology::routing_keys::TICKET_FOLLOWUP;

/// One event. The AMQP `message_id` is `<event>:<article_id>`, the same on a re-publish.
#[derive(Debug, Serialize)]
pub struct TicketEvent<'a> {
    pub event: &'static str,
    pub ticket_id: &'a str,
    pub ticket_number: &'a str,
    pub queue_id: Option<&'a str>,
    /// The queue's name when configd knows it.
    pub queue: Option<&'a str>,
    pub article_id: &'a str,
    /// The sender's address.
    pub from: &'a str,
    pub from_name: &'a str,
    pub subject: &'a str,
    pub source_id: &'a str,
    pub mailbox_id: Option<&'a str>,
    pub is_bounce: bool,
    pub is_auto_response: bool,
}

impl TicketEvent<'_> {
    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
