//! A mailbox's connection settings as plain Rust values: where, how secured, how trusted,
//! and with which credentials.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

/// Default bound on every network step (connect, handshake, each command).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    /// No TLS at all (IMAP 143, POP3 110, SMTP 25). Credentials travel in clear text.
    None,
    /// Plain connect, then STARTTLS / STLS. Fails when the server does not offer it:
    /// never goes on in clear text.
    StartTls,
    /// TLS from the first byte (IMAPS 993, POP3S 995, SMTPS 465).
    Tls,
}

/// Which certificates to trust. The default verifies the chain against the Mozilla roots
/// (webpki-roots) and the host name; `extra_ca_pem` adds private CAs to those roots.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// PEM with one or more extra CA certificates (a company's private CA).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// DANGER: accept any certificate for any name. Only when an admin explicitly opted
    /// out (a self-signed LAN server): still encrypted, but open to an active attacker.
    pub accept_invalid_certs: bool,
}

impl fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("extra_ca_pem_bytes", &self.extra_ca_pem.as_ref().map(Vec::len))
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .finish()
    }
}

impl TlsPolicy {
    /// Webpki roots plus the CA certificate(s) in `pem`.
    pub fn with_extra_ca(pem: impl Into<Vec<u8>>) -> Self {
        Self { extra_ca_pem: Some(pem.into()), accept_invalid_certs: false }
    }

    /// No verification at all (see [`TlsPolicy::accept_invalid_certs`]).
    pub fn dangerous_accept_invalid_certs() -> Self {
        Self { extra_ca_pem: None, accept_invalid_certs: true }
    }
}

/// How to log in. Secrets are [`SecretString`]s: `Debug` shows `[REDACTED]`, and they are
/// zeroed on drop.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// User name and password (IMAP LOGIN, POP3 USER/PASS, SMTP AUTH PLAIN or LOGIN).
    Password {
        /// Login name, often the address.
        username: String,
        /// The password.
        password: SecretString,
    },
    /// An OAuth2 access token (SASL XOAUTH2 on IMAP, POP3 and SMTP).
    OAuth2Token {
        /// Login name, the mailbox address.
        username: String,
        /// A current access token; refreshing it is the caller's job.
        access_token: SecretString,
    },
    /// No login (SMTP relays that trust the sender's address or network).
    #[default]
    None,
}

impl Credentials {
    /// Password credentials.
    pub fn password(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::Password { username: username.into(), password: SecretString::from(password.into()) }
    }

    /// OAuth2 bearer-token credentials.
    pub fn oauth2(username: impl Into<String>, access_token: impl Into<String>) -> Self {
        Self::OAuth2Token { username: username.into(), access_token: SecretString::from(access_token.into()) }
    }

    /// The login name, if any.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Password { username, .. } | Self::OAuth2Token { username, .. } => Some(username),
            Self::None => None,
        }
    }
}

/// One server of a mailbox: where it is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEndpoint {
    /// Host name or IP address; also the name the certificate must match.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Plain, STARTTLS or implicit TLS.
    pub security: Security,
    /// Certificate trust.
    pub tls: TlsPolicy,
    /// Bound on name resolution, connect, the TLS handshake and each command.
    pub timeout: Duration,
}

impl ServerEndpoint {
    /// An endpoint with the default trust (webpki roots) and a 30 s timeout.
    pub fn new(host: impl Into<String>, port: u16, security: Security) -> Self {
        Self { host: host.into(), port, security, tls: TlsPolicy::default(), timeout: DEFAULT_TIMEOUT }
    }

    /// Replaces the trust settings.
    pub fn with_tls(mut self, tls: TlsPolicy) -> Self {
        self.tls = tls;
        self
    }

    /// Replaces the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        for creds in
            [Credentials::password("u@x.test", "hunter2-pw"), Credentials::oauth2("u@x.test", "ya29.tok")]
        {
            let shown = format!("{creds:?}");
            assert!(!shown.contains("hunter2-pw") && !shown.contains("ya29.tok"), "{shown}");
            assert!(shown.contains("u@x.test"), "{shown}");
        }
        let tls = TlsPolicy::with_extra_ca(b"-----BEGIN CERTIFICATE-----".to_vec());
        assert!(format!("{tls:?}").contains("extra_ca_pem_bytes: Some(27)"));
    }

    #[test]
    fn addr_brackets_ipv6() {
        assert_eq!(ServerEndpoint::new("::1", 993, Security::Tls).addr(), "[::1]:993");
        assert_eq!(ServerEndpoint::new("mail.test", 25, Security::None).addr(), "mail.test:25");
    }
}
