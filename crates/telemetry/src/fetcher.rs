//! Fetcher metrics. Label `mailbox`: the inbound mailbox's configd id (never its address);
//! label `reason`: a status reason code of the design (`auth_failed`, `timeout`, ...).

use std::time::Duration;

use deskmail_core::StatusReason;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Counter `{mailbox}`: mails downloaded from the mail server.
pub const MAILS_FETCHED_TOTAL: &str = "deskmail_fetcher_mails_fetched_total";
/// Counter `{mailbox}`: mails confirmed by RabbitMQ on the inbound exchange.
pub const MAILS_PUBLISHED_TOTAL: &str = "deskmail_fetcher_mails_published_total";
/// Counter `{mailbox}`: mails over the mailbox's size limit, not downloaded whole.
pub const MAILS_OVERSIZED_TOTAL: &str = "deskmail_fetcher_mails_oversized_total";
/// Counter `{mailbox, reason}`: polls that failed, by status reason code.
pub const POLL_ERRORS_TOTAL: &str = "deskmail_fetcher_poll_errors_total";
/// Histogram `{mailbox}`: wall time of one poll of one mailbox (connect to logout), failed
/// polls included.
pub const POLL_DURATION_SECONDS: &str = "deskmail_fetcher_poll_duration_seconds";

/// Label key of the inbound mailbox's configd id.
pub const MAILBOX: &str = "mailbox";
/// Label key of a status reason code.
pub const REASON: &str = "reason";

/// One mail downloaded from `mailbox_id`.
pub fn mail_fetched(mailbox_id: &str) {
    mails_fetched(mailbox_id, 1);
}

/// `n` mails downloaded from `mailbox_id`.
pub fn mails_fetched(mailbox_id: &str, n: u64) {
    counter!(MAILS_FETCHED_TOTAL, MAILBOX => mailbox_id.to_owned()).increment(n);
}

/// One mail of `mailbox_id` confirmed by the broker.
pub fn mail_published(mailbox_id: &str) {
    mails_published(mailbox_id, 1);
}

/// `n` mails of `mailbox_id` confirmed by the broker.
pub fn mails_published(mailbox_id: &str, n: u64) {
    counter!(MAILS_PUBLISHED_TOTAL, MAILBOX => mailbox_id.to_owned()).increment(n);
}

/// One mail of `mailbox_id` over its size limit.
pub fn mail_oversized(mailbox_id: &str) {
    counter!(MAILS_OVERSIZED_TOTAL, MAILBOX => mailbox_id.to_owned()).increment(1);
}

/// A poll of `mailbox_id` failed with `reason`.
pub fn poll_error(mailbox_id: &str, reason: StatusReason) {
    counter!(POLL_ERRORS_TOTAL, MAILBOX => mailbox_id.to_owned(), REASON => reason.code()).increment(1);
}

/// A poll of `mailbox_id` took `elapsed`.
pub fn poll_duration(mailbox_id: &str, elapsed: Duration) {
    histogram!(POLL_DURATION_SECONDS, MAILBOX => mailbox_id.to_owned()).record(elapsed.as_secs_f64());
}

/// Creates `mailbox_id`'s counters at 0 (every reason too), so `rate()` and `increase()` see
/// the first mail and the first error. Call when the mailbox enters the config.
pub fn init_mailbox(mailbox_id: &str) {
    mails_fetched(mailbox_id, 0);
    mails_published(mailbox_id, 0);
    counter!(MAILS_OVERSIZED_TOTAL, MAILBOX => mailbox_id.to_owned()).increment(0);
    for reason in StatusReason::ALL {
        counter!(POLL_ERRORS_TOTAL, MAILBOX => mailbox_id.to_owned(), REASON => reason.code()).increment(0);
    }
}

pub(crate) fn describe() {
    describe_counter!(MAILS_FETCHED_TOTAL, "Mails downloaded from the mail server, by inbound mailbox id.");
    describe_counter!(MAILS_PUBLISHED_TOTAL, "Mails confirmed by RabbitMQ, by inbound mailbox id.");
    describe_counter!(MAILS_OVERSIZED_TOTAL, "Mails over the mailbox's size limit, by inbound mailbox id.");
    describe_counter!(POLL_ERRORS_TOTAL, "Failed polls, by inbound mailbox id and status reason code.");
    describe_histogram!(POLL_DURATION_SECONDS, Unit::Seconds, "Wall time of one poll of one mailbox.");
}
