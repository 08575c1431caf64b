//! A small async POP3 client: RFC 1939 commands, STLS (RFC 2595), SASL AUTH (RFC 5034)
//! with PLAIN and XOAUTH2, over tokio and tokio-rustls (ring provider). It owns the POP3
//! wire protocol only and depends on no other deskmail crate.
//!
//! Why our own client: the crates.io POP3 clients checked (late 2026) do not fit.
//! `async-pop` 1.1 defaults to async-std and does TLS through async-native-tls or the
//! deprecated `async-rustls`; its fork `async-pop2` 1.1.1 ships no TLS at all; `pop3-client`
//! 0.3 pins webpki-roots 0.26 and the retired `webpki` crate; `pop3` 1.0 is blocking over
//! OpenSSL; `mailme` 0.1 targets tokio 0.3. None combines tokio + rustls with a caller-chosen
//! root store, an STLS that refuses to go on in plaintext, a timeout on every operation
//! and a size cap on RETR. POP3 is a small protocol, so this crate does it in a few hundred
//! lines, tested against a real Dovecot (deskmail-testkit's `MailStack`).
//!
//! ```no_run
//! # async fn demo(ca_pem: Vec<u8>) -> Result<(), deskmail_pop3::Pop3Error> {
//! use deskmail_pop3::{Pop3Client, Pop3Config, Security, TlsOptions};
//! let config = Pop3Config::new("mail.example.com", 995, Security::Tls)
//!     .with_tls(TlsOptions::with_ca_pem(ca_pem));
//! let mut pop = Pop3Client::connect(&config).await?;
//! pop.login("support@example.com", "secret").await?;
//! for entry in pop.uidl().await? {
//!     let raw = pop.retr_max(entry.id, 25 * 1024 * 1024).await?;
//!     # let _ = raw;
//!     pop.dele(entry.id).await?;
//! }
//! pop.quit().await?; // deletions happen only now
//! # Ok(()) }
//! ```
//!
//! Passwords and tokens are never stored, never in `Debug` output, and scrubbed from
//! server replies before those go into a [`Pop3Error`].

mod client;
mod error;
mod tls;
mod wire;

use std::time::Duration;

pub use client::{ListEntry, Pop3Client, UidlEntry};
pub use error::Pop3Error;
pub use tls::{TlsOptions, accept_invalid_certs_verifier};

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No TLS (port 110). Credentials travel in clear text.
    Plain,
    /// Plain connect, then STLS (RFC 2595); fails if the server does not offer it.
    StartTls,
    /// TLS from the first byte (POP3S, port 995).
    Tls,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Plain, STLS or implicit TLS.
    pub security: Security,
    /// Trust settings for TLS.
    pub tls: TlsOptions,
    /// Bound on connect, the TLS handshake, each write and each read (an idle timeout, so
    /// a large message may take longer in total as long as data keeps coming). Default 30 s.
    pub timeout: Duration,
    /// Name to verify the certificate against; defaults to `host`.
    pub tls_server_name: Option<String>,
}

impl Pop3Config {
    /// A config with the webpki roots and a 30 s timeout.
    pub fn new(host: impl Into<String>, port: u16, security: Security) -> Self {
        Self {
            host: host.into(),
            port,
            security,
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(30),
            tls_server_name: None,
        }
    }

    /// Replaces the TLS trust settings.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Replaces the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Verifies the certificate against `name` instead of `host`.
    pub fn with_tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }
}

/// The server's CAPA response (RFC 2449).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    lines: Vec<String>,
}

impl Capabilities {
    pub(crate) fn new(lines: Vec<String>) -> Self {
        Self { lines }
    }

    /// Whether a capability (first word of a line, case-insensitive) is listed.
    pub fn has(&self, name: &str) -> bool {
        self.lines.iter().any(|l| l.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case(name)))
    }

    /// Mechanisms from the `SASL` line, upper-case.
    pub fn sasl_mechanisms(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words
                    .next()
                    .filter(|w| w.eq_ignore_ascii_case("SASL"))
                    .map(|_| words.map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>())
            })
            .flatten()
            .collect()
    }

    /// The raw lines.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}
