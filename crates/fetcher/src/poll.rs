//! What one poll of a mailbox gives back, and why it can fail.

use deskmail_core::{SourceId, StatusReason};
use deskmail_mailconn::ConnError;
use deskmail_mq::MqError;

/// A mail over the box's size limit: left on the server and reported.
#[derive(Debug, Clone)]
pub(crate) struct Oversized {
    pub source: SourceId,
    pub size: u64,
    pub limit: u64,
    /// The IMAP folder it was moved to; `None` when it stays where it was (POP3).
    pub moved_to: Option<&'static str>,
}

impl Oversized {
    /// `imap:...:7 is 26214400 bytes, over the 1048576-byte limit; moved to deskmail-oversized`.
    pub(crate) fn describe(&self) -> String {
        let place = match self.moved_to {
            Some(folder) => format!("moved to {folder}"),
            None => "left on the server".to_owned(),
        };
        format!("{} is {} bytes, over the {}-byte limit; {place}", self.source, self.size, self.limit)
    }
}

/// The result of a poll that worked.
#[derive(Debug, Default)]
pub(crate) struct PollOutcome {
    /// Mails published and confirmed.
    pub fetched: u64,
    /// The per-poll cap was reached: poll again at once.
    pub more: bool,
    /// Mails over the size limit met in this poll.
    pub oversized: Vec<Oversized>,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PollError {
    /// The mail server (or the OAuth2 token endpoint).
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// RabbitMQ did not take a mail; it stays on the server for the next poll.
    #[error("RabbitMQ: {0}")]
    Broker(MqError),
}

impl PollError {
    /// The status reason to report.
    pub(crate) fn reason(&self) -> StatusReason {
        match self {
            Self::Conn(e) => e.reason(),
            Self::Broker(_) => StatusReason::ProtocolError,
        }
    }

    /// The server's words (or ours).
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Conn(e) => e.server_message(),
            Self::Broker(e) => format!("mail stays on the server: RabbitMQ did not take it: {e}"),
        }
    }
}
