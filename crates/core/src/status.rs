use std::fmt;
use std::str::FromStr;

/// Whether a mailbox works, as the design's "Mailbox status" defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailboxState {
    /// The last poll or send worked.
    Active,
    /// Never tried, disabled, or waiting for authorization.
    Waiting,
    /// The last attempt failed, for a [`StatusReason`].
    Error,
}

/// Why a mailbox is in error. The string codes are part of the design (gRPC, events, CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusReason {
    AuthFailed,
    ConnectFailed,
    TlsFailed,
    DnsFailed,
    Timeout,
    TokenExpired,
    MailboxNotFound,
    ProtocolError,
}

impl StatusReason {
    pub const ALL: [StatusReason; 8] = [
        Self::AuthFailed,
        Self::ConnectFailed,
        Self::TlsFailed,
        Self::DnsFailed,
        Self::Timeout,
        Self::TokenExpired,
        Self::MailboxNotFound,
        Self::ProtocolError,
    ];

    /// The design's code: `auth_failed`, `connect_failed`, ...
    pub const fn code(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth_failed",
            Self::ConnectFailed => "connect_failed",
            Self::TlsFailed => "tls_failed",
            Self::DnsFailed => "dns_failed",
            Self::Timeout => "timeout",
            Self::TokenExpired => "token_expired",
            Self::MailboxNotFound => "mailbox_not_found",
            Self::ProtocolError => "protocol_error",
        }
    }
}

impl fmt::Display for StatusReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for StatusReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|r| r.code() == s).ok_or_else(|| format!("{s:?} is not a status reason"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for r in StatusReason::ALL {
            assert_eq!(r.code().parse::<StatusReason>(), Ok(r));
        }
        assert!("nope".parse::<StatusReason>().is_err());
    }
}
