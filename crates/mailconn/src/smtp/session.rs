//! Opening one SMTP session ourselves: our own TCP socket (TCP_NODELAY) and, for implicit
//! TLS, our own handshake, handed to lettre through `connect_with_transport`; then
//! STARTTLS and AUTH. Each step is bounded and classified on its own.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use deskmail_core::StatusReason;
use lettre::transport::smtp::authentication::{Credentials as LettreCredentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::transport::smtp::response::Response;
use secrecy::ExposeSecret;

use super::SmtpReply;
use crate::error::{ConnError, Protocol, redact};
use crate::net::{self, MailStream, bounded};
use crate::settings::{Credentials, Security, ServerEndpoint};
use crate::tls;

const P: Protocol = Protocol::Smtp;

/// The EHLO name: the given one, else lettre's default (this machine's host name).
pub(crate) fn client_id(hello_name: Option<&str>) -> ClientId {
    hello_name.map_or_else(ClientId::default, |n| ClientId::Domain(n.to_string()))
}

/// Opens a session ready for MAIL FROM: connected (TCP_NODELAY), greeted, EHLO sent,
/// TLS in place as the endpoint asks (STARTTLS is required, never skipped), logged in.
pub async fn connect(
    ep: &ServerEndpoint,
    creds: &Credentials,
    hello: &ClientId,
) -> Result<AsyncSmtpConnection, ConnError> {
    connect_with_keywords(ep, creds, hello, false).await.map(|(conn, _)| conn)
}

/// Like [`connect`]; with `want_keywords`, also sends EHLO once more just before AUTH (after
/// TLS, where EHLO is allowed anyway) and returns its keywords (`PIPELINING`, `SIZE 52428800`,
/// ...), which lettre's `ServerInfo` does not keep. One round trip more per session.
pub async fn connect_with_keywords(
    ep: &ServerEndpoint,
    creds: &Credentials,
    hello: &ClientId,
    want_keywords: bool,
) -> Result<(AsyncSmtpConnection, Vec<String>), ConnError> {
    // Unusable TLS settings fail before any traffic.
    let starttls = match ep.security {
        Security::StartTls => Some(tls::lettre_parameters(&ep.tls, &ep.host)?),
        Security::None | Security::Tls => None,
    };
    let tcp = net::connect_tcp(ep, P).await?;
    let stream = match ep.security {
        Security::Tls => net::tls_handshake(tcp, ep, P).await?,
        Security::None | Security::StartTls => MailStream::Plain(tcp),
    };
    let mut conn = bounded(P, "greeting and EHLO", ep.timeout, async {
        AsyncSmtpConnection::connect_with_transport(Box::new(stream), hello)
            .await
            .map_err(|e| classify_error(e, "greeting and EHLO", &[]))
    })
    .await?;
    if let Some(params) = starttls {
        if !conn.server_info().supports_feature(Extension::StartTls) {
            return Err(tls_error(
                ep,
                "server does not offer STARTTLS; refusing to continue in clear text".into(),
            ));
        }
        bounded(P, "STARTTLS", ep.timeout, async {
            conn.starttls(params, hello).await.map_err(|e| {
                let detail = match SmtpReply::from_error(&e) {
                    Some(reply) => format!("server refused STARTTLS: {reply}"),
                    None => format!("STARTTLS: {e}"),
                };
                ConnError::Tls { protocol: P, host: ep.host.clone(), detail, source: Some(Box::new(e)) }
            })
        })
        .await?;
    }
    let mut keywords = Vec::new();
    if want_keywords {
        let ehlo = bounded(P, "EHLO", ep.timeout, async {
            conn.command(lettre::transport::smtp::commands::Ehlo::new(hello.clone()))
                .await
                .map_err(|e| classify_error(e, "EHLO", &[]))
        })
        .await?;
        keywords = ehlo.message().skip(1).map(str::to_string).collect();
    }
    authenticate(&mut conn, ep, creds).await?;
    Ok((conn, keywords))
}

fn tls_error(ep: &ServerEndpoint, detail: String) -> ConnError {
    ConnError::Tls { protocol: P, host: ep.host.clone(), detail, source: None }
}

async fn authenticate(
    conn: &mut AsyncSmtpConnection,
    ep: &ServerEndpoint,
    creds: &Credentials,
) -> Result<(), ConnError> {
    let offered = |mech: Mechanism| conn.server_info().supports_auth_mechanism(mech);
    match creds {
        Credentials::None => Ok(()),
        Credentials::Password { username, password } => {
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            if !mechanisms.into_iter().any(offered) {
                return Err(ConnError::Settings {
                    reason: StatusReason::AuthFailed,
                    detail: format!("{} offers neither AUTH PLAIN nor AUTH LOGIN", ep.addr()),
                });
            }
            let secret = password.expose_secret();
            let lettre_creds = LettreCredentials::new(username.clone(), secret.to_string());
            bounded(P, "AUTH", ep.timeout, async {
                conn.auth(&mechanisms, &lettre_creds)
                    .await
                    .map(drop)
                    .map_err(|e| auth_error(e, &[secret], None))
            })
            .await
        }
        Credentials::OAuth2Token { username, access_token } => {
            if !offered(Mechanism::Xoauth2) {
                return Err(ConnError::Settings {
                    reason: StatusReason::AuthFailed,
                    detail: format!("{} does not offer AUTH XOAUTH2", ep.addr()),
                });
            }
            let token = access_token.expose_secret();
            bounded(P, "AUTH", ep.timeout, xoauth2(conn, username, token)).await
        }
    }
}

/// One command line, sent as is.
struct Line(String);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// AUTH XOAUTH2 by hand: on failure the server sends its error JSON as a 334 challenge
/// and expects an empty line before its final 535, which lettre's mechanism does not do
/// (it gives up with a client error and loses the server's words).
async fn xoauth2(conn: &mut AsyncSmtpConnection, user: &str, token: &str) -> Result<(), ConnError> {
    let payload = B64.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"));
    let secrets = [token, payload.as_str()];
    let first = conn.command(Line(format!("AUTH XOAUTH2 {payload}"))).await;
    let response = first.map_err(|e| auth_error(e, &secrets, None))?;
    if response.has_code(235) {
        return Ok(());
    }
    if !response.has_code(334) {
        return Err(unexpected(&response, "AUTH", &secrets));
    }
    let detail = response
        .first_word()
        .and_then(|w| B64.decode(w).ok())
        .map(|d| String::from_utf8_lossy(&d).into_owned());
    match conn.command(Line(String::new())).await {
        Err(e) => Err(auth_error(e, &secrets, detail.as_deref())),
        Ok(r) if r.has_code(235) => Ok(()),
        Ok(r) => Err(unexpected(&r, "AUTH", &secrets)),
    }
}

fn unexpected(response: &Response, during: &'static str, secrets: &[&str]) -> ConnError {
    ConnError::Protocol {
        protocol: P,
        during,
        detail: redact(&format!("unexpected reply {}", SmtpReply::from(response)), secrets),
        transient: false,
        source: None,
    }
}

/// A refused AUTH: the server's reply (plus XOAUTH2's error JSON), scrubbed of secrets.
fn auth_error(e: lettre::transport::smtp::Error, secrets: &[&str], detail: Option<&str>) -> ConnError {
    match SmtpReply::from_error(&e) {
        Some(reply) => {
            let mut text = reply.to_string();
            if let Some(d) = detail.filter(|d| !d.is_empty()) {
                text = format!("{text} ({d})");
            }
            ConnError::Auth { protocol: P, reply: redact(&text, secrets), transient: reply.is_transient() }
        }
        None => classify_error(e, "AUTH", secrets),
    }
}

/// Classifies a lettre error from any step after connect.
pub(crate) fn classify_error(
    e: lettre::transport::smtp::Error,
    during: &'static str,
    secrets: &[&str],
) -> ConnError {
    let (detail, transient) = match SmtpReply::from_error(&e) {
        Some(reply) => (reply.to_string(), reply.is_transient()),
        // Network and connection errors may pass; a garbled reply or a client-side
        // refusal will not.
        None => (e.to_string(), !(e.is_client() || e.is_response())),
    };
    ConnError::Protocol {
        protocol: P,
        during,
        detail: redact(&detail, secrets),
        transient,
        source: Some(Box::new(e)),
    }
}
