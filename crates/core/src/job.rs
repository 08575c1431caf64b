//! The outbound mail job integrators (and the router) publish to `<prefix>.outbound`, as JSON.
//! `proto/outbound-job.schema.json` documents the same shape for other languages; the two
//! change together. Validation (addresses, bodies, box) is the sender's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One mail to send. Unknown fields are refused, so a typo is a dead letter with its name,
/// not a silently ignored option.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundJob {
    /// Idempotency key: a job redelivered after it was sent is not sent again. Also the
    /// AMQP `message_id`.
    pub job_id: String,
    /// Echoed in the `mail.sent` / `mail.failed` events (the job id when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Box selection, in the design's order: this mailbox, else the contract's box, else the
    /// company's box, else the system default. Ids or names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// `Name <address>` or `address`. Default: the box's sender address and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub subject: String,
    /// Plain-text body; `text` and/or `html` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<JobAttachment>,
    /// Extra headers (`X-*`, `Auto-Submitted`, ...). Structural headers (From, To, Subject,
    /// Content-*, ...) cannot be set this way.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Message-ID of the mail answered, with or without angle brackets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Put into the subject (`[Ticket#N]`) when the subject lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    /// Ask for a read receipt (`Disposition-Notification-To`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_receipt: bool,
}

/// A file attached to (or, with `content_id`, shown inline in) the mail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobAttachment {
    pub filename: String,
    /// Default `application/octet-stream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The bytes, standard base64.
    pub content_base64: String,
    /// Set for an inline image referenced as `cid:<content_id>` from the HTML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
}
