//! SMTP with lettre 0.11: the admin's connection test and test email, a sender with its
//! own small connection pool, and lettre's pooled transport for callers who want it.
//!
//! Why our own pool: lettre 0.11 never sets TCP_NODELAY, and it writes a message body and
//! the closing `\r\n.\r\n` as two writes before reading the reply. With Nagle's algorithm
//! on, the second write waits for the ACK of the first, which the server delays (~40 ms
//! on Linux) because it has nothing to say until the dot arrives: every mail stalls about
//! 40 ms. lettre's pooled `AsyncSmtpTransport` opens its sockets itself (the executor
//! trait that does it is sealed) and offers no socket hook, but
//! `AsyncSmtpConnection::connect_with_transport` takes a stream we opened. So
//! [`SmtpSender`] opens its sockets with TCP_NODELAY (and does implicit TLS itself) and
//! keeps a small pool of those connections.

mod chain;
mod sender;
mod session;

use std::fmt;

use deskmail_core::StatusReason;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials as LettreCredentials, Mechanism};
use lettre::transport::smtp::client::Tls;
use lettre::transport::smtp::commands::Ehlo;
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{Message, Tokio1Executor};
use secrecy::ExposeSecret;

pub use sender::{SendError, SenderConfig, SmtpSender};
pub use session::connect;

use crate::error::{ConnError, Protocol};
use crate::net::bounded;
use crate::settings::{Credentials, Security, ServerEndpoint};
use crate::tls;

const P: Protocol = Protocol::Smtp;

/// An SMTP reply: code and text (continuation lines joined with spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text after the code, e.g. `2.0.0 Ok: queued as 4dQ1Xk0wzYz9sLb`.
    pub text: String,
}

impl SmtpReply {
    /// The reply inside a lettre error, when the error is a 4xx or 5xx reply.
    pub fn from_error(e: &lettre::transport::smtp::Error) -> Option<Self> {
        let code = e.status()?;
        // For 4xx/5xx, lettre keeps the reply text as the error's source.
        let text = std::error::Error::source(e).map(ToString::to_string).unwrap_or_default();
        Some(Self { code: u16::from(code), text })
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again unchanged.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

impl From<&Response> for SmtpReply {
    fn from(r: &Response) -> Self {
        Self { code: u16::from(r.code()), text: r.message().collect::<Vec<_>>().join(" ") }
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// What the outbound connection test saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundProbe {
    /// The EHLO keywords after TLS and AUTH (`PIPELINING`, `SIZE 52428800`, `AUTH PLAIN LOGIN`, ...).
    pub capabilities: Vec<String>,
}

/// What the test email got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentTest {
    /// The server's final reply, e.g. `250 2.0.0 Ok: queued as 4dQ1Xk0wzYz9sLb`.
    pub reply: String,
    /// The Message-ID we gave the mail, with angle brackets.
    pub message_id: String,
}

/// lettre's pooled transport with the endpoint's TLS and login: `Tls::None`,
/// `Tls::Required` for STARTTLS (never continues in clear text), `Tls::Wrapper` for implicit
/// TLS; PLAIN or LOGIN for a password, XOAUTH2 for a token. It opens its own sockets and so
/// carries lettre's ~40 ms Nagle stall per mail: use [`SmtpSender`] to send in volume.
pub fn transport(
    ep: &ServerEndpoint,
    creds: &Credentials,
    hello_name: Option<&str>,
    pool: Option<PoolConfig>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, ConnError> {
    let tls = match ep.security {
        Security::None => Tls::None,
        Security::StartTls => Tls::Required(tls::lettre_parameters(&ep.tls, &ep.host)?),
        Security::Tls => Tls::Wrapper(tls::lettre_parameters(&ep.tls, &ep.host)?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ep.host.as_str())
        .port(ep.port)
        .tls(tls)
        .timeout(Some(ep.timeout))
        .hello_name(session::client_id(hello_name));
    match creds {
        Credentials::Password { username, password } => {
            builder = builder
                .credentials(LettreCredentials::new(username.clone(), password.expose_secret().to_string()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Credentials::OAuth2Token { username, access_token } => {
            builder = builder
                .credentials(LettreCredentials::new(
                    username.clone(),
                    access_token.expose_secret().to_string(),
                ))
                .authentication(vec![Mechanism::Xoauth2]);
        }
        Credentials::None => {}
    }
    if let Some(pool) = pool {
        builder = builder.pool_config(pool);
    }
    Ok(builder.build())
}

/// Connects, EHLOs, does TLS as configured, AUTHs, reads the EHLO keywords, and QUITs.
/// Sends no mail.
pub async fn test_outbound(
    ep: &ServerEndpoint,
    creds: &Credentials,
    hello_name: Option<&str>,
) -> Result<OutboundProbe, ConnError> {
    let hello = session::client_id(hello_name);
    let mut conn = connect(ep, creds, &hello).await?;
    // lettre keeps only the EHLO keywords it knows; ask again for the full list.
    let ehlo = bounded(P, "EHLO", ep.timeout, async {
        conn.command(Ehlo::new(hello.clone())).await.map_err(|e| session::classify_error(e, "EHLO", &[]))
    })
    .await?;
    let capabilities = ehlo.message().skip(1).map(str::to_string).collect();
    quit(&mut conn, ep).await;
    Ok(OutboundProbe { capabilities })
}

/// Sends one plain-text mail built with lettre's builder (Message-ID `<uuid@from-domain>`)
/// over a fresh session, then QUITs.
pub async fn send_test_email(
    ep: &ServerEndpoint,
    creds: &Credentials,
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<SentTest, ConnError> {
    let address = |what: &str, value: &str| {
        value.parse::<Mailbox>().map_err(|e| ConnError::Settings {
            reason: StatusReason::ProtocolError,
            detail: format!("{what} address {value:?}: {e}"),
        })
    };
    let from = address("from", from)?;
    let to = address("to", to)?;
    let message_id = format!("<{}@{}>", uuid::Uuid::new_v4().simple(), from.email.domain());
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id(Some(message_id.clone()))
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .map_err(|e| ConnError::Settings {
            reason: StatusReason::ProtocolError,
            detail: format!("test email cannot be built: {e}"),
        })?;
    let mut conn = connect(ep, creds, &session::client_id(None)).await?;
    let raw = message.formatted();
    let response = bounded(P, "sending", ep.timeout, async {
        conn.send(message.envelope(), &raw).await.map_err(|e| session::classify_error(e, "sending", &[]))
    })
    .await?;
    quit(&mut conn, ep).await;
    Ok(SentTest { reply: SmtpReply::from(&response).to_string(), message_id })
}

/// QUIT, politely and bounded; the outcome no longer matters.
async fn quit(conn: &mut lettre::transport::smtp::client::AsyncSmtpConnection, ep: &ServerEndpoint) {
    match tokio::time::timeout(ep.timeout, conn.quit()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, host = %ep.host, "SMTP QUIT failed."),
        Err(_) => tracing::debug!(host = %ep.host, "SMTP QUIT timed out."),
    }
}
