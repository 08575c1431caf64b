//! POP3 through deskmail-pop3: the admin's connection test, and the mapping of its errors
//! to status reasons.

use deskmail_core::StatusReason;
use deskmail_pop3::{Pop3Client, Pop3Config, Pop3Error};
use secrecy::ExposeSecret;

use crate::InboundProbe;
use crate::error::{ConnError, Protocol};
use crate::net;
use crate::settings::{Credentials, Security, ServerEndpoint};
use crate::tls;

const P: Protocol = Protocol::Pop3;

/// deskmail-pop3's settings for an endpoint.
pub fn pop3_config(ep: &ServerEndpoint) -> Result<Pop3Config, ConnError> {
    let security = match ep.security {
        Security::None => deskmail_pop3::Security::Plain,
        Security::StartTls => deskmail_pop3::Security::StartTls,
        Security::Tls => deskmail_pop3::Security::Tls,
    };
    let options = match ep.security {
        Security::None => deskmail_pop3::TlsOptions::webpki(),
        Security::StartTls | Security::Tls => tls::pop3_options(&ep.tls, &ep.host)?,
    };
    Ok(Pop3Config::new(ep.host.clone(), ep.port, security).with_tls(options).with_timeout(ep.timeout))
}

/// Resolves the host (so that a DNS failure is told apart from a refused connection),
/// then connects with deskmail-pop3 (greeting read, STLS done when asked for).
pub async fn connect(ep: &ServerEndpoint) -> Result<Pop3Client, ConnError> {
    let config = pop3_config(ep)?;
    net::resolve(ep, P).await?;
    Pop3Client::connect(&config).await.map_err(|e| classify_error(e, &ep.host))
}

/// Logs in: USER/PASS for a password, AUTH XOAUTH2 for an OAuth2 token.
pub async fn login(pop: &mut Pop3Client, creds: &Credentials, host: &str) -> Result<(), ConnError> {
    let result = match creds {
        Credentials::Password { username, password } => pop.login(username, password.expose_secret()).await,
        Credentials::OAuth2Token { username, access_token } => {
            pop.auth_xoauth2(username, access_token.expose_secret()).await
        }
        Credentials::None => {
            return Err(ConnError::Settings {
                reason: StatusReason::AuthFailed,
                detail: "POP3 needs credentials (a password or an OAuth2 token)".into(),
            });
        }
    };
    result.map_err(|e| match e {
        Pop3Error::InvalidInput(detail) => ConnError::Settings { reason: StatusReason::AuthFailed, detail },
        other => classify_error(other, host),
    })
}

/// Maps a deskmail-pop3 error (whose texts are already scrubbed of secrets).
pub fn classify_error(e: Pop3Error, host: &str) -> ConnError {
    let transient = e.is_transient();
    match e {
        Pop3Error::Connect { addr, source } => ConnError::Connect { addr, source },
        Pop3Error::Tls(source) => ConnError::Tls {
            protocol: P,
            host: host.to_string(),
            detail: source.to_string(),
            source: Some(Box::new(source)),
        },
        Pop3Error::Auth(text) => ConnError::Auth { protocol: P, reply: format!("-ERR {text}"), transient },
        Pop3Error::Timeout { during, after } => ConnError::Timeout { protocol: P, during, after },
        Pop3Error::Protocol { command, reply } => {
            ConnError::Protocol { protocol: P, during: command, detail: reply, transient, source: None }
        }
        Pop3Error::Io(source) => ConnError::Protocol {
            protocol: P,
            during: "I/O",
            detail: format!("connection lost: {source}"),
            transient,
            source: Some(Box::new(source)),
        },
        Pop3Error::InvalidInput(detail) => {
            ConnError::Settings { reason: StatusReason::ProtocolError, detail }
        }
        other => ConnError::Protocol {
            protocol: P,
            during: "RETR",
            detail: other.to_string(),
            transient,
            source: Some(Box::new(other)),
        },
    }
}

/// Connects, logs in, counts the maildrop (STAT), reads CAPA, and quits. Downloads and
/// deletes nothing.
pub async fn test_inbound_pop3(ep: &ServerEndpoint, creds: &Credentials) -> Result<InboundProbe, ConnError> {
    let mut pop = connect(ep).await?;
    login(&mut pop, creds, &ep.host).await?;
    let (count, _size) = pop.stat().await.map_err(|e| classify_error(e, &ep.host))?;
    let capabilities = pop.capa().await.map_err(|e| classify_error(e, &ep.host))?.lines().to_vec();
    if let Err(e) = pop.quit().await {
        tracing::debug!(error = %e, host = %ep.host, "POP3 QUIT failed after a good probe.");
    }
    Ok(InboundProbe { message_count: count, capabilities })
}
