//! Sender metrics. Label `box`: the outbound mailbox's configd id (never its address);
//! `reason`: a status reason code for box errors, a [`DeadLetterReason`] for dead letters.

use std::time::Duration;

use deskmail_core::StatusReason;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Counter `{box}`: jobs accepted by the SMTP server (250).
pub const JOBS_SENT_TOTAL: &str = "deskmail_sender_jobs_sent_total";
/// Counter `{box}`: jobs recorded but not sent because the box is in dry-run mode.
pub const JOBS_DRY_RUN_TOTAL: &str = "deskmail_sender_jobs_dry_run_total";
/// Counter `{box}`: jobs put on a retry queue after a temporary failure.
pub const JOBS_RETRIED_TOTAL: &str = "deskmail_sender_jobs_retried_total";
/// Counter `{reason}`: jobs sent to the outbound dead-letter queue, by [`DeadLetterReason`].
pub const JOBS_DEAD_LETTERED_TOTAL: &str = "deskmail_sender_jobs_dead_lettered_total";
/// Counter `{box, reason}`: connection-level failures of a box, by status reason code.
pub const BOX_ERRORS_TOTAL: &str = "deskmail_sender_box_errors_total";
/// Histogram `{box}`: time of one SMTP transaction (MAIL FROM to the final reply).
pub const SEND_DURATION_SECONDS: &str = "deskmail_sender_send_duration_seconds";

/// Label key of the outbound mailbox's configd id.
pub const BOX: &str = "box";
/// Label key of a reason code.
pub const REASON: &str = "reason";

/// Why a job went to the outbound dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Bad JSON, bad address, no recipient, no body.
    InvalidJob,
    /// No box found by the design's resolution order.
    NoBox,
    /// A permanent SMTP refusal (5xx).
    Rejected,
    /// Temporary failures until the last retry delay passed.
    RetriesExhausted,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 4] =
        [Self::InvalidJob, Self::NoBox, Self::Rejected, Self::RetriesExhausted];

    /// The label value: `invalid_job`, `no_box`, `rejected`, `retries_exhausted`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::InvalidJob => "invalid_job",
            Self::NoBox => "no_box",
            Self::Rejected => "rejected",
            Self::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// A job was accepted by `box_id`'s SMTP server after an SMTP transaction of `elapsed`.
pub fn job_sent(box_id: &str, elapsed: Duration) {
    counter!(JOBS_SENT_TOTAL, BOX => box_id.to_owned()).increment(1);
    send_duration(box_id, elapsed);
}

/// A job for dry-run box `box_id` was recorded and not sent.
pub fn job_dry_run(box_id: &str) {
    counter!(JOBS_DRY_RUN_TOTAL, BOX => box_id.to_owned()).increment(1);
}

/// A job through `box_id` failed temporarily and went to a retry queue.
pub fn job_retried(box_id: &str) {
    counter!(JOBS_RETRIED_TOTAL, BOX => box_id.to_owned()).increment(1);
}

/// A job was dead-lettered for `reason`.
pub fn job_dead_lettered(reason: DeadLetterReason) {
    counter!(JOBS_DEAD_LETTERED_TOTAL, REASON => reason.code()).increment(1);
}

/// `box_id` failed to connect, log in or talk SMTP, with `reason`.
pub fn box_error(box_id: &str, reason: StatusReason) {
    counter!(BOX_ERRORS_TOTAL, BOX => box_id.to_owned(), REASON => reason.code()).increment(1);
}

/// An SMTP transaction through `box_id` took `elapsed` (refused ones too).
pub fn send_duration(box_id: &str, elapsed: Duration) {
    histogram!(SEND_DURATION_SECONDS, BOX => box_id.to_owned()).record(elapsed.as_secs_f64());
}

/// Creates `box_id`'s counters at 0 (every reason too), so `increase()` sees the first event.
/// Call when the box enters the config.
pub fn init_box(box_id: &str) {
    for name in [JOBS_SENT_TOTAL, JOBS_DRY_RUN_TOTAL, JOBS_RETRIED_TOTAL] {
        counter!(name, BOX => box_id.to_owned()).increment(0);
    }
    for reason in StatusReason::ALL {
        counter!(BOX_ERRORS_TOTAL, BOX => box_id.to_owned(), REASON => reason.code()).increment(0);
    }
}

/// Creates the per-reason dead-letter counters at 0.
pub fn init() {
    for reason in DeadLetterReason::ALL {
        counter!(JOBS_DEAD_LETTERED_TOTAL, REASON => reason.code()).increment(0);
    }
}

pub(crate) fn describe() {
    describe_counter!(JOBS_SENT_TOTAL, "Jobs accepted by the SMTP server, by outbound box id.");
    describe_counter!(JOBS_DRY_RUN_TOTAL, "Jobs recorded but not sent (dry-run box), by outbound box id.");
    describe_counter!(JOBS_RETRIED_TOTAL, "Jobs put on a retry queue after a temporary failure, by box id.");
    describe_counter!(JOBS_DEAD_LETTERED_TOTAL, "Jobs sent to the outbound dead-letter queue, by reason.");
    describe_counter!(
        BOX_ERRORS_TOTAL,
        "Connection-level failures of an outbound box, by box id and reason."
    );
    describe_histogram!(
        SEND_DURATION_SECONDS,
        Unit::Seconds,
        "Time of one SMTP transaction, by outbound box id."
    );
}
