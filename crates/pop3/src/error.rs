//! [`Pop3Error`]: one variant per way a caller wants to react.

use std::io;
use std::time::Duration;

/// What went wrong talking to a POP3 server. No variant ever holds a password or token:
/// server replies to login commands are scrubbed of the secret before they are stored.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    /// TCP connect (or name resolution) failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port` as configured.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// TLS handshake or certificate verification failed, a TLS setting is unusable, or the
    /// server does not offer STLS when it was required.
    #[error("TLS: {0}")]
    Tls(#[source] io::Error),
    /// The server refused the login (`-ERR` to USER, PASS or AUTH); holds its words.
    #[error("login refused: {0}")]
    Auth(String),
    /// The server answered something unexpected, or `-ERR` to a non-login command.
    #[error("unexpected reply to {command}: {reply}")]
    Protocol {
        /// The command verb (never its arguments).
        command: &'static str,
        /// The server's reply, or what was wrong with it.
        reply: String,
    },
    /// No progress within the configured timeout.
    #[error("timed out after {after:?} during {during}")]
    Timeout {
        /// What was being waited for ("connect", "TLS handshake", a command verb).
        during: &'static str,
        /// The configured timeout.
        after: Duration,
    },
    /// Reading or writing the connection failed (including the server closing it).
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The message is bigger than the caller's limit; nothing of it was kept.
    #[error("message {id} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Message number.
        id: u32,
        /// Its size as far as known (LIST, or bytes read before giving up).
        size: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// An argument or setting cannot be used (CR/LF in a user name, an empty trust store).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl Pop3Error {
    /// True when trying again later may succeed: network trouble, timeouts, and logins
    /// refused with the RFC 3206 codes `[SYS/TEMP]` or `[IN-USE]`.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Io(_) => true,
            Self::Auth(text) => text.contains("[SYS/TEMP]") || text.contains("[IN-USE]"),
            Self::Tls(_) | Self::Protocol { .. } | Self::TooLarge { .. } | Self::InvalidInput(_) => false,
        }
    }
}
