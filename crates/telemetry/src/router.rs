//! Router metrics. Label `outcome`: [`RouteOutcome`]; `mailbox`: the configd id of the
//! inbound mailbox the mail came from; `reason`: [`AutoReplySuppressed`].

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Counter `{outcome}`: raw mails handled and acked, by outcome.
pub const MAILS_ROUTED_TOTAL: &str = "deskmail_router_mails_routed_total";
/// Counter `{mailbox}`: tickets created.
pub const TICKETS_CREATED_TOTAL: &str = "deskmail_router_tickets_created_total";
/// Counter `{mailbox}`: mails added to an existing ticket as a follow-up.
pub const FOLLOWUPS_TOTAL: &str = "deskmail_router_followups_total";
/// Counter: auto-reply jobs published to the outbound exchange (the sender delivers them).
pub const AUTO_REPLIES_SENT_TOTAL: &str = "deskmail_router_auto_replies_sent_total";
/// Counter `{reason}`: auto-replies not sent, by [`AutoReplySuppressed`] reason.
pub const AUTO_REPLIES_SUPPRESSED_TOTAL: &str = "deskmail_router_auto_replies_suppressed_total";
/// Counter: raw mails sent to the inbound dead-letter queue.
pub const MAILS_DEAD_LETTERED_TOTAL: &str = "deskmail_router_mails_dead_lettered_total";
/// Histogram `{outcome}`: time from a delivery's arrival to its ack (commit, event, ack).
pub const PROCESSING_DURATION_SECONDS: &str = "deskmail_router_processing_duration_seconds";

/// Label key of [`RouteOutcome`].
pub const OUTCOME: &str = "outcome";
/// Label key of the inbound mailbox's configd id.
pub const MAILBOX: &str = "mailbox";
/// Label key of [`AutoReplySuppressed`].
pub const REASON: &str = "reason";

/// What routing did with one raw mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOutcome {
    /// A new ticket with its first article.
    NewTicket,
    /// An article on an existing ticket (subject number, known Message-ID, bounce).
    FollowUp,
    /// The source id was processed before: acked, nothing written.
    Duplicate,
    /// Ignored by a filter or a trusted `X-Deskmail-Ignore` header.
    Ignored,
}

impl RouteOutcome {
    pub const ALL: [RouteOutcome; 4] = [Self::NewTicket, Self::FollowUp, Self::Duplicate, Self::Ignored];

    /// The label value: `new_ticket`, `follow_up`, `duplicate`, `ignored`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::NewTicket => "new_ticket",
            Self::FollowUp => "follow_up",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

/// Why a new ticket got no auto-reply (the design's loop rules, and configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoReplySuppressed {
    /// `Auto-Submitted` other than `no` (RFC 3834).
    AutoSubmitted,
    /// `Precedence: bulk/junk/list` or a `List-Id`.
    Bulk,
    /// A delivery-status report or mail from a mailer-daemon.
    Bounce,
    /// From one of our own system addresses.
    OwnAddress,
    /// The sender already had the configured number of auto-replies today.
    DailyLimit,
    /// Auto-reply is off for the ticket's queue.
    Disabled,
}

impl AutoReplySuppressed {
    pub const ALL: [AutoReplySuppressed; 6] =
        [Self::AutoSubmitted, Self::Bulk, Self::Bounce, Self::OwnAddress, Self::DailyLimit, Self::Disabled];

    /// The label value: `auto_submitted`, `bulk`, `bounce`, `own_address`, `daily_limit`, `disabled`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::AutoSubmitted => "auto_submitted",
            Self::Bulk => "bulk",
            Self::Bounce => "bounce",
            Self::OwnAddress => "own_address",
            Self::DailyLimit => "daily_limit",
            Self::Disabled => "disabled",
        }
    }
}

/// One raw mail handled with `outcome` and acked after `elapsed` (from its arrival). Counts
/// it in `mails_routed_total{outcome}`, in `tickets_created_total{mailbox}` or
/// `followups_total{mailbox}` as the outcome says, and in the processing histogram: one call
/// per mail keeps the three consistent.
pub fn mail_routed(outcome: RouteOutcome, mailbox_id: &str, elapsed: Duration) {
    counter!(MAILS_ROUTED_TOTAL, OUTCOME => outcome.code()).increment(1);
    match outcome {
        RouteOutcome::NewTicket => {
            counter!(TICKETS_CREATED_TOTAL, MAILBOX => mailbox_id.to_owned()).increment(1);
        }
        RouteOutcome::FollowUp => {
            counter!(FOLLOWUPS_TOTAL, MAILBOX => mailbox_id.to_owned()).increment(1);
        }
        RouteOutcome::Duplicate | RouteOutcome::Ignored => {}
    }
    histogram!(PROCESSING_DURATION_SECONDS, OUTCOME => outcome.code()).record(elapsed.as_secs_f64());
}

/// An auto-reply job was published (confirmed) for a new ticket.
pub fn auto_reply_sent() {
    counter!(AUTO_REPLIES_SENT_TOTAL).increment(1);
}

/// A new ticket got no auto-reply, for `reason`.
pub fn auto_reply_suppressed(reason: AutoReplySuppressed) {
    counter!(AUTO_REPLIES_SUPPRESSED_TOTAL, REASON => reason.code()).increment(1);
}

/// A raw mail went to the inbound dead-letter queue.
pub fn mail_dead_lettered() {
    counter!(MAILS_DEAD_LETTERED_TOTAL).increment(1);
}

/// Creates the router's label-less and per-outcome/per-reason series at 0, so `increase()`
/// sees the first event. Per-mailbox series appear with their first ticket.
pub fn init() {
    for outcome in RouteOutcome::ALL {
        counter!(MAILS_ROUTED_TOTAL, OUTCOME => outcome.code()).increment(0);
    }
    for reason in AutoReplySuppressed::ALL {
        counter!(AUTO_REPLIES_SUPPRESSED_TOTAL, REASON => reason.code()).increment(0);
    }
    counter!(AUTO_REPLIES_SENT_TOTAL).increment(0);
    counter!(MAILS_DEAD_LETTERED_TOTAL).increment(0);
}

pub(crate) fn describe() {
    describe_counter!(MAILS_ROUTED_TOTAL, "Raw mails handled and acked, by outcome.");
    describe_counter!(TICKETS_CREATED_TOTAL, "Tickets created, by inbound mailbox id.");
    describe_counter!(FOLLOWUPS_TOTAL, "Follow-up articles on existing tickets, by inbound mailbox id.");
    describe_counter!(AUTO_REPLIES_SENT_TOTAL, "Auto-reply jobs published for new tickets.");
    describe_counter!(AUTO_REPLIES_SUPPRESSED_TOTAL, "Auto-replies not sent, by reason.");
    describe_counter!(MAILS_DEAD_LETTERED_TOTAL, "Raw mails sent to the inbound dead-letter queue.");
    describe_histogram!(
        PROCESSING_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a raw mail's arrival to its ack, by outcome."
    );
}
