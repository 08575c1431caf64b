//! The `mail.sent` / `mail.failed` events on `<prefix>.events`, JSON.

use serde::Serialize;

/// One event. `correlation_id` is the job's, or its `job_id` when it has none.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MailEvent {
    /// `mail.sent` or `mail.failed`.
    pub event: &'static str,
    pub job_id: String,
    pub correlation_id: String,
    /// The box's id and name, when one was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// The Message-ID the mail was given (with angle brackets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The SMTP server's reply (`250 2.0.0 Ok: queued as ...`, `550 5.1.1 ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_reply: Option<String>,
    /// Why it failed (failed only), the same text as the dead letter's `x-deskmail-error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tries that were retried before this outcome.
    pub retries: u32,
    /// The box is in dry-run mode: recorded, not sent.
    pub dry_run: bool,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl MailEvent {
    pub fn new(event: &'static str, job_id: &str, correlation_id: Option<&str>, time_ms: u64) -> Self {
        Self {
            event,
            job_id: job_id.to_owned(),
            correlation_id: correlation_id.filter(|c| !c.is_empty()).unwrap_or(job_id).to_owned(),
            mailbox_id: None,
            mailbox: None,
            message_id: None,
            smtp_reply: None,
            error: None,
            retries: 0,
            dry_run: false,
            time_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_falls_back_to_the_job_id() {
        let e = MailEvent::new("mail.sent", "j1", None, 5);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["correlation_id"], "j1");
        assert!(json.get("smtp_reply").is_none());
        assert_eq!(MailEvent::new("mail.sent", "j1", Some("c9"), 5).correlation_id, "c9");
    }
}
