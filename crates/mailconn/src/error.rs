//! [`ConnError`]: why connecting or logging in failed, as a [`StatusReason`] plus the
//! server's own words.

use std::fmt;
use std::io;
use std::time::Duration;

use deskmail_core::StatusReason;

/// A boxed error source (TLS, lettre, async-imap errors keep their type behind it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which protocol a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// IMAP4rev1.
    Imap,
    /// POP3.
    Pop3,
    /// SMTP / submission.
    Smtp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Imap => "IMAP",
            Self::Pop3 => "POP3",
            Self::Smtp => "SMTP",
        })
    }
}

/// What went wrong reaching or logging in to a mail server. No variant ever holds a
/// password or token: server replies are scrubbed of the secrets before they are stored.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Dns {
        /// The configured host.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// TCP connect failed (refused, unreachable, reset).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port` as configured.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake or certificate check failed, the server does not offer or refused
    /// STARTTLS, or the TLS settings are unusable.
    #[error("{protocol} TLS with {host} failed: {detail}")]
    Tls {
        /// Protocol being spoken.
        protocol: Protocol,
        /// The configured host.
        host: String,
        /// What failed, with the server's words for a refused STARTTLS.
        detail: String,
        /// The TLS library's error, if there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The server refused the login.
    #[error("{protocol} login refused: {reply}")]
    Auth {
        /// Protocol being spoken.
        protocol: Protocol,
        /// The server's reply, e.g. `NO [AUTHENTICATIONFAILED] Authentication failed.`
        reply: String,
        /// The server said "try later" (IMAP `[UNAVAILABLE]`, POP3 `[SYS/TEMP]`, SMTP 4xx).
        transient: bool,
    },
    /// The folder to open does not exist (or may not be read).
    #[error("folder {folder:?} cannot be opened: {reply}")]
    MailboxNotFound {
        /// The folder asked for.
        folder: String,
        /// The server's reply.
        reply: String,
    },
    /// No answer within the endpoint's timeout.
    #[error("{protocol}: no progress within {after:?} during {during}")]
    Timeout {
        /// Protocol being spoken.
        protocol: Protocol,
        /// The step that hung: "DNS lookup", "connect", "TLS handshake", "greeting", ...
        during: &'static str,
        /// The configured timeout.
        after: Duration,
    },
    /// The server answered something unexpected, or the connection broke off.
    #[error("{protocol} {during}: {detail}")]
    Protocol {
        /// Protocol being spoken.
        protocol: Protocol,
        /// The step: "greeting", "EHLO", "EXAMINE", ...
        during: &'static str,
        /// The server's reply, or what was wrong.
        detail: String,
        /// Whether trying again later may help (lost connection, 4xx, `[UNAVAILABLE]`).
        transient: bool,
        /// The client library's error, if there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The OAuth2 token endpoint refused or failed to give an access token.
    #[error("OAuth2 token refresh: {detail}")]
    Token {
        /// The endpoint's words (`invalid_grant: Token has been expired or revoked`) or
        /// what went wrong reaching it. Never the tokens themselves.
        detail: String,
        /// The refresh token was refused (`invalid_grant`): an admin must authorize again.
        expired: bool,
        /// Whether trying again later may help (the endpoint unreachable or 5xx).
        transient: bool,
    },
    /// The settings cannot work (no credentials where a login is needed, CR/LF in a name,
    /// an address that does not parse); nothing was or could be sent.
    #[error("unusable settings: {detail}")]
    Settings {
        /// The status to report for it.
        reason: StatusReason,
        /// What is wrong.
        detail: String,
    },
}

impl ConnError {
    /// The mailbox status reason for this failure.
    pub fn reason(&self) -> StatusReason {
        match self {
            Self::Dns { .. } => StatusReason::DnsFailed,
            Self::Connect { .. } => StatusReason::ConnectFailed,
            Self::Tls { .. } => StatusReason::TlsFailed,
            Self::Auth { .. } => StatusReason::AuthFailed,
            Self::MailboxNotFound { .. } => StatusReason::MailboxNotFound,
            Self::Timeout { .. } => StatusReason::Timeout,
            Self::Protocol { .. } => StatusReason::ProtocolError,
            Self::Settings { reason, .. } => *reason,
            Self::Token { expired: true, .. } => StatusReason::TokenExpired,
            Self::Token { transient: true, .. } => StatusReason::ConnectFailed,
            Self::Token { .. } => StatusReason::ProtocolError,
        }
    }

    /// The server's own words when it said something (a refused login, a missing folder,
    /// a refused STARTTLS, an odd reply); otherwise a short description of what happened
    /// (e.g. `cannot connect to host:25: Connection refused (os error 111)`). Never holds
    /// a secret.
    pub fn server_message(&self) -> String {
        match self {
            Self::Auth { reply, .. } | Self::MailboxNotFound { reply, .. } => reply.clone(),
            Self::Protocol { detail, .. }
            | Self::Tls { detail, .. }
            | Self::Settings { detail, .. }
            | Self::Token { detail, .. } => detail.clone(),
            Self::Dns { .. } | Self::Connect { .. } | Self::Timeout { .. } => self.to_string(),
        }
    }

    /// True when trying again later, unchanged, may succeed: network trouble, timeouts,
    /// and refusals the server marked as temporary. Wrong passwords, TLS and certificate
    /// problems, missing folders and bad settings need someone to act.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Dns { .. } | Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Auth { transient, .. }
            | Self::Protocol { transient, .. }
            | Self::Token { transient, .. } => *transient,
            Self::Tls { .. } | Self::MailboxNotFound { .. } | Self::Settings { .. } => false,
        }
    }
}

/// Replaces every secret (of 3 or more characters) in a server reply by `<redacted>`.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    secrets.iter().filter(|s| s.len() >= 3).fold(text.to_string(), |t, s| t.replace(s, "<redacted>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_transience() {
        let io = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let table: Vec<(ConnError, StatusReason, bool)> = vec![
            (ConnError::Dns { host: "x.invalid".into(), source: io() }, StatusReason::DnsFailed, true),
            (ConnError::Connect { addr: "h:1".into(), source: io() }, StatusReason::ConnectFailed, true),
            (
                ConnError::Tls {
                    protocol: Protocol::Imap,
                    host: "h".into(),
                    detail: "x".into(),
                    source: None,
                },
                StatusReason::TlsFailed,
                false,
            ),
            (
                ConnError::Auth { protocol: Protocol::Smtp, reply: "535 no".into(), transient: false },
                StatusReason::AuthFailed,
                false,
            ),
            (
                ConnError::MailboxNotFound { folder: "X".into(), reply: "NO".into() },
                StatusReason::MailboxNotFound,
                false,
            ),
            (
                ConnError::Timeout {
                    protocol: Protocol::Pop3,
                    during: "greeting",
                    after: Duration::from_secs(1),
                },
                StatusReason::Timeout,
                true,
            ),
        ];
        for (e, reason, transient) in table {
            assert_eq!(e.reason(), reason, "{e}");
            assert_eq!(e.is_transient(), transient, "{e}");
            assert!(!e.server_message().is_empty());
        }
    }

    #[test]
    fn redact_hides_secrets() {
        assert_eq!(redact("bad pw hunter2 here", &["hunter2", ""]), "bad pw <redacted> here");
        assert_eq!(redact("ab", &["ab"]), "ab", "too short to be worth scrubbing");
    }
}
