//! deskmail-mailconn owns connecting to mail servers with a mailbox's settings: the
//! plain-Rust settings types ([`ServerEndpoint`], [`Security`], [`TlsPolicy`],
//! [`Credentials`]), TLS set-up (rustls with ring, TLS 1.2+, webpki roots plus a box's own
//! CA), login (password or OAuth2 XOAUTH2) for IMAP, POP3 and SMTP, the admin's connection
//! tests, and the classification of every failure into a [`deskmail_core::StatusReason`]
//! plus the server's own words ([`ConnError`]). The fetcher, the sender and configd all
//! connect through it. It must not depend on prost or the proto crate (configd turns proto
//! messages into these types) nor on any daemon. Secrets never reach an error or a log.
//!
//! - [`imap`]: [`imap::connect`], [`imap::login`] (giving an async-imap session the
//!   fetcher keeps using), [`imap::test_inbound_imap`].
//! - [`pop3`]: [`pop3::test_inbound_pop3`] over deskmail-pop3.
//! - [`smtp`]: [`smtp::SmtpSender`] (its own small pool of TCP_NODELAY sessions, see the
//!   module docs for lettre's Nagle stall), [`smtp::test_outbound`],
//!   [`smtp::send_test_email`], and [`smtp::transport`] (lettre's pooled transport).

mod error;
pub mod imap;
mod net;
mod oauth;
pub mod pop3;
mod settings;
pub mod smtp;
mod tls;

pub use error::{BoxError, ConnError, Protocol};
pub use net::MailStream;
pub use oauth::{AccessToken, OAuth2Settings, refresh_access_token};
pub use settings::{Credentials, DEFAULT_TIMEOUT, Security, ServerEndpoint, TlsPolicy};
pub use {async_imap, lettre};

pub use imap::test_inbound_imap;
pub use pop3::test_inbound_pop3;
pub use smtp::{send_test_email, test_outbound};

/// What an inbound connection test saw. Nothing was downloaded or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundProbe {
    /// Messages in the folder (IMAP EXAMINE) or the maildrop (POP3 STAT).
    pub message_count: u32,
    /// IMAP CAPABILITY atoms after login, or the POP3 CAPA lines.
    pub capabilities: Vec<String>,
}
