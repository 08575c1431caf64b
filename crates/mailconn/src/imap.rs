//! IMAP: connect (plain, STARTTLS, implicit TLS), log in (LOGIN or XOAUTH2), and the
//! admin's connection test. The session type is async-imap's over [`MailStream`], so the
//! fetcher goes on with SELECT, UID FETCH and IDLE on what [`login`] returns.

use std::time::Duration;

use async_imap::error::Error as ImapError;
use async_imap::imap_proto::{Response, ResponseCode, Status};
use async_imap::types::Capability;
use secrecy::ExposeSecret;

use crate::InboundProbe;
use crate::error::{ConnError, Protocol, redact};
use crate::net::{self, MailStream, bounded};
use crate::settings::{Credentials, Security, ServerEndpoint};

const P: Protocol = Protocol::Imap;

/// The stream under an IMAP session.
pub type ImapStream = MailStream;
/// A logged-in IMAP session (async-imap), for SELECT / EXAMINE, UID FETCH, IDLE.
pub type ImapSession = async_imap::Session<MailStream>;

/// A connected, not yet logged-in IMAP client: greeting read, TLS in place.
#[derive(Debug)]
pub struct ImapClient {
    client: async_imap::Client<MailStream>,
    timeout: Duration,
}

impl ImapClient {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.client.get_ref().is_tls()
    }

    /// The timeout [`login`] applies (the endpoint's).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The async-imap client, for a login method this crate does not offer.
    pub fn into_inner(self) -> async_imap::Client<MailStream> {
        self.client
    }
}

/// Connects, reads the greeting and, for [`Security::StartTls`], upgrades the stream with
/// STARTTLS (refusing to go on in clear text when the server does not offer it).
pub async fn connect(ep: &ServerEndpoint) -> Result<ImapClient, ConnError> {
    let tcp = net::connect_tcp(ep, P).await?;
    let stream = match ep.security {
        Security::Tls => net::tls_handshake(tcp, ep, P).await?,
        Security::None | Security::StartTls => MailStream::Plain(tcp),
    };
    let mut client = async_imap::Client::new(stream);
    let greeting_caps = bounded(P, "greeting", ep.timeout, read_greeting(&mut client)).await?;
    if ep.security == Security::StartTls {
        if greeting_caps.as_ref().is_some_and(|caps| !caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")))
        {
            return Err(tls_error(ep, "server does not offer STARTTLS; refusing to continue in clear text"));
        }
        bounded(P, "STARTTLS", ep.timeout, async {
            client.run_command_and_check_ok("STARTTLS", None).await.map_err(|e| match e {
                ImapError::No(s) => tls_error(ep, &format!("server refused STARTTLS: {}", words("NO", &s))),
                ImapError::Bad(s) => tls_error(ep, &format!("server refused STARTTLS: {}", words("BAD", &s))),
                other => classify_error(other, "STARTTLS"),
            })
        })
        .await?;
        // Anything the server sent after its OK is dropped with the plain-text buffer:
        // bytes from before the handshake must never pass as protected.
        let MailStream::Plain(tcp) = client.into_inner() else {
            return Err(tls_error(ep, "stream already encrypted before STARTTLS"));
        };
        client = async_imap::Client::new(net::tls_handshake(tcp, ep, P).await?);
    }
    Ok(ImapClient { client, timeout: ep.timeout })
}

fn tls_error(ep: &ServerEndpoint, detail: &str) -> ConnError {
    ConnError::Tls { protocol: P, host: ep.host.clone(), detail: detail.to_string(), source: None }
}

/// Reads `* OK ...`; returns the capabilities when the greeting lists them.
async fn read_greeting(
    client: &mut async_imap::Client<MailStream>,
) -> Result<Option<Vec<String>>, ConnError> {
    let lost = |detail: String| ConnError::Protocol {
        protocol: P,
        during: "greeting",
        detail,
        transient: true,
        source: None,
    };
    let response = client
        .read_response()
        .await
        .map_err(|e| lost(format!("connection lost: {e}")))?
        .ok_or_else(|| lost("connection closed before the greeting".into()))?;
    match response.parsed() {
        Response::Data { status: Status::Ok | Status::PreAuth, outcome } => match &outcome.code {
            Some(ResponseCode::Capabilities(caps)) => {
                Ok(Some(caps.iter().map(|c| capability_name(&Capability::from(c))).collect()))
            }
            _ => Ok(None),
        },
        Response::Data { status: Status::Bye, outcome } => {
            Err(lost(format!("* BYE {}", outcome.information.as_deref().unwrap_or(""))))
        }
        other => Err(ConnError::Protocol {
            protocol: P,
            during: "greeting",
            detail: format!("not an IMAP greeting: {other:?}"),
            transient: false,
            source: None,
        }),
    }
}

/// XOAUTH2 (Google, Microsoft): the bearer payload first; a second challenge is the
/// server's error JSON, answered with an empty line as the mechanism requires.
struct XOAuth2<'a> {
    user: &'a str,
    token: &'a str,
    sent: bool,
    server_error: Option<String>,
}

impl async_imap::Authenticator for &mut XOAuth2<'_> {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        if self.sent {
            self.server_error = Some(String::from_utf8_lossy(challenge).into_owned());
            return Vec::new();
        }
        self.sent = true;
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token).into_bytes()
    }
}

/// Logs in: LOGIN for a password, AUTHENTICATE XOAUTH2 for an OAuth2 token.
pub async fn login(client: ImapClient, creds: &Credentials) -> Result<ImapSession, ConnError> {
    let ImapClient { client, timeout } = client;
    match creds {
        Credentials::Password { username, password } => {
            let secret = password.expose_secret();
            bounded(P, "LOGIN", timeout, async {
                client.login(username, secret).await.map_err(|(e, _)| login_error(e, &[secret], None))
            })
            .await
        }
        Credentials::OAuth2Token { username, access_token } => {
            let token = access_token.expose_secret();
            let mut auth = XOAuth2 { user: username, token, sent: false, server_error: None };
            let attempt = tokio::time::timeout(timeout, client.authenticate("XOAUTH2", &mut auth)).await;
            match attempt {
                Ok(Ok(session)) => Ok(session),
                Ok(Err((e, _))) => Err(login_error(e, &[token], auth.server_error.as_deref())),
                Err(_) => Err(ConnError::Timeout { protocol: P, during: "AUTHENTICATE", after: timeout }),
            }
        }
        Credentials::None => Err(ConnError::Settings {
            reason: deskmail_core::StatusReason::AuthFailed,
            detail: "IMAP needs credentials (a password or an OAuth2 token)".into(),
        }),
    }
}

/// A refused login: the server's words (plus XOAUTH2's error JSON), scrubbed of secrets.
fn login_error(e: ImapError, secrets: &[&str], detail: Option<&str>) -> ConnError {
    let refused = |status: &str, raw: &str| {
        let mut reply = words(status, raw);
        if let Some(d) = detail.filter(|d| !d.is_empty()) {
            reply = format!("{reply} ({d})");
        }
        let reply = redact(&reply, secrets);
        ConnError::Auth { protocol: P, transient: is_temporary(&reply), reply }
    };
    match e {
        ImapError::No(s) => refused("NO", &s),
        ImapError::Bad(s) => refused("BAD", &s),
        ImapError::Validate(v) => ConnError::Settings {
            reason: deskmail_core::StatusReason::AuthFailed,
            detail: format!("user name or secret cannot be sent: {v}"),
        },
        other => classify_error(other, "login"),
    }
}

/// RFC 5530 codes that mean "not now" rather than "no".
fn is_temporary(reply: &str) -> bool {
    ["[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]"].iter().any(|c| reply.contains(c))
}

/// Classifies an async-imap error from any command after login (`during` names it).
/// For SELECT / EXAMINE use [`classify_open_error`], which knows about missing folders.
pub fn classify_error(e: ImapError, during: &'static str) -> ConnError {
    let protocol = |detail: String, transient: bool, source: Option<ImapError>| ConnError::Protocol {
        protocol: P,
        during,
        detail,
        transient,
        source: source.map(|s| Box::new(s) as _),
    };
    match e {
        ImapError::No(s) => {
            let reply = words("NO", &s);
            let transient = is_temporary(&reply);
            protocol(reply, transient, None)
        }
        ImapError::Bad(s) => protocol(words("BAD", &s), false, None),
        ImapError::ConnectionLost => protocol("connection closed by the server".into(), true, None),
        ImapError::Io(io) => protocol(format!("connection lost: {io}"), true, Some(ImapError::Io(io))),
        other => protocol(other.to_string(), false, Some(other)),
    }
}

/// Classifies an error from SELECT or EXAMINE of `folder`: a refusal is
/// [`ConnError::MailboxNotFound`] unless the server marked it temporary.
pub fn classify_open_error(e: ImapError, folder: &str) -> ConnError {
    match e {
        ImapError::No(s) if !is_temporary(&s) => {
            ConnError::MailboxNotFound { folder: folder.to_string(), reply: words("NO", &s) }
        }
        ImapError::Bad(s) => {
            ConnError::MailboxNotFound { folder: folder.to_string(), reply: words("BAD", &s) }
        }
        other => classify_error(other, "EXAMINE"),
    }
}

/// Connects, logs in, EXAMINEs `folder` (read-only: no flag changes), counts its messages,
/// and logs out. Downloads nothing.
pub async fn test_inbound_imap(
    ep: &ServerEndpoint,
    creds: &Credentials,
    folder: &str,
) -> Result<InboundProbe, ConnError> {
    let client = connect(ep).await?;
    let mut session = login(client, creds).await?;
    let capabilities = bounded(P, "CAPABILITY", ep.timeout, async {
        let caps = session.capabilities().await.map_err(|e| classify_error(e, "CAPABILITY"))?;
        let mut names: Vec<String> = caps.iter().map(capability_name).collect();
        names.sort();
        Ok(names)
    })
    .await?;
    let mailbox = bounded(P, "EXAMINE", ep.timeout, async {
        session.examine(folder).await.map_err(|e| classify_open_error(e, folder))
    })
    .await?;
    // The probe has its answer; a failed LOGOUT does not change it.
    if let Err(e) = bounded(P, "LOGOUT", ep.timeout, async {
        session.logout().await.map_err(|e| classify_error(e, "LOGOUT"))
    })
    .await
    {
        tracing::debug!(error = %e, host = %ep.host, "IMAP LOGOUT failed after a good probe.");
    }
    Ok(InboundProbe { message_count: mailbox.exists, capabilities })
}

fn capability_name(c: &Capability) -> String {
    match c {
        Capability::Imap4rev1 => "IMAP4rev1".to_string(),
        Capability::Auth(m) => format!("AUTH={m}"),
        Capability::Atom(a) => a.clone(),
    }
}

/// Turns async-imap's `No`/`Bad` text (`code: Some(Alert), info: Some("text")`, or
/// `code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")` for codes
/// imap-proto does not know) back into the server's line: `NO [ALERT] text`.
pub(crate) fn words(status: &str, raw: &str) -> String {
    // Two shapes: `code: C, info: I` (login, STARTTLS) and
    // `outcome: Outcome { code: C, information: I }` (SELECT, EXAMINE, ...).
    let parts = match raw.strip_prefix("outcome: Outcome { code: ") {
        Some(rest) => rest.strip_suffix(" }").and_then(|r| r.split_once(", information: ")),
        None => raw.strip_prefix("code: ").and_then(|r| r.split_once(", info: ")),
    };
    let Some((code, info)) = parts else {
        return format!("{status} {raw}");
    };
    let mut out = status.to_string();
    if let Some(code) = code.strip_prefix("Some(").and_then(|c| c.strip_suffix(')')) {
        let atom: String = code.chars().take_while(char::is_ascii_alphanumeric).collect();
        if !atom.is_empty() {
            out.push_str(&format!(" [{}]", atom.to_ascii_uppercase()));
        }
    }
    if let Some(text) = info.strip_prefix("Some(\"").and_then(|i| i.strip_suffix("\")")) {
        out.push(' ');
        out.push_str(&unescape_debug(text));
    }
    out
}

/// Undoes `{:?}` escaping of a string.
fn unescape_debug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let hex: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_words_are_rebuilt() {
        let table = [
            (
                "NO",
                r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#,
                "NO [AUTHENTICATIONFAILED] Authentication failed.",
            ),
            ("NO", r#"code: Some(Alert), info: Some("say \"hi\"\\")"#, r#"NO [ALERT] say "hi"\"#),
            ("BAD", r#"code: Some(Capabilities([Imap4rev1])), info: None"#, "BAD [CAPABILITIES]"),
            ("NO", r#"code: None, info: Some("caf\u{e9}")"#, "NO café"),
            (
                "NO",
                r#"outcome: Outcome { code: None, information: Some("Mailbox doesn't exist: X (0.001 + 0.001 secs).") }"#,
                "NO Mailbox doesn't exist: X (0.001 + 0.001 secs).",
            ),
            ("NO", r#"outcome: Outcome { code: Some(TryCreate), information: None }"#, "NO [TRYCREATE]"),
            ("NO", "something else", "NO something else"),
        ];
        for (status, raw, want) in table {
            assert_eq!(words(status, raw), want, "{raw}");
        }
    }

    #[test]
    fn open_errors() {
        let e =
            classify_open_error(ImapError::No("code: None, info: Some(\"[NONEXISTENT] gone\")".into()), "X");
        assert_eq!(e.reason(), deskmail_core::StatusReason::MailboxNotFound);
        assert_eq!(e.server_message(), "NO [NONEXISTENT] gone");
        let e =
            classify_open_error(ImapError::No("code: None, info: Some(\"[UNAVAILABLE] later\")".into()), "X");
        assert_eq!(e.reason(), deskmail_core::StatusReason::ProtocolError);
        assert!(e.is_transient());
    }
}
