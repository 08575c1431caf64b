//! Connection tests and test mail through a mailbox's settings, with deskmail-mailconn.

use std::time::{Duration, Instant};

use deskmail_mailconn as mc;
use deskmail_proto::v1 as pb;
use tonic::Status;

use super::errors::bad_request;
use crate::resource::is_address;
use crate::state::AppState;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The stored mailbox with its secrets (for a test by id), or the settings given.
pub async fn resolve(state: &AppState, id: &str, given: Option<pb::Mailbox>) -> Result<pb::Mailbox, Status> {
    if let Some(mut mailbox) = given {
        crate::presets::apply(&mut mailbox);
        return Ok(mailbox);
    }
    if id.is_empty() {
        return Err(bad_request(vec![(
            "id".into(),
            "give a mailbox id or name, or mailbox settings".into(),
        )]));
    }
    let row = super::crud::find_row::<pb::Mailbox>(state, id).await?;
    let snapshot = state.snapshots.borrow().clone();
    snapshot
        .daemon
        .mailboxes
        .iter()
        .find(|m| m.id == row.id)
        .cloned()
        .ok_or_else(|| Status::unavailable("the mailbox is not in the current snapshot yet; retry"))
}

pub async fn test(mailbox: &pb::Mailbox, direction: i32) -> Vec<pb::TestResult> {
    let want = pb::Direction::try_from(direction).unwrap_or_default();
    let mut results = Vec::new();
    if let Some(i) = &mailbox.inbound
        && matches!(want, pb::Direction::Unspecified | pb::Direction::Inbound)
    {
        results.push(test_inbound(i).await);
    }
    if let Some(o) = &mailbox.outbound
        && matches!(want, pb::Direction::Unspecified | pb::Direction::Outbound)
    {
        results.push(test_outbound(o).await);
    }
    results
}

fn endpoint(host: &str, port: u32, security: i32, allow_invalid: bool) -> mc::ServerEndpoint {
    let security = match pb::Security::try_from(security).unwrap_or_default() {
        pb::Security::None => mc::Security::None,
        pb::Security::Starttls => mc::Security::StartTls,
        _ => mc::Security::Tls,
    };
    let mut ep =
        mc::ServerEndpoint::new(host, u16::try_from(port).unwrap_or(0), security).with_timeout(TIMEOUT);
    if allow_invalid {
        ep = ep.with_tls(mc::TlsPolicy::dangerous_accept_invalid_certs());
    }
    ep
}

/// The login for a part: its password, or an access token fresh from its OAuth2 token
/// endpoint (a refused refresh token is `token_expired`).
async fn credentials(
    auth: i32,
    username: &str,
    password: &str,
    oauth2: Option<&pb::OAuth2>,
) -> Result<mc::Credentials, mc::ConnError> {
    match pb::AuthMethod::try_from(auth).unwrap_or_default() {
        pb::AuthMethod::None => Ok(mc::Credentials::None),
        pb::AuthMethod::Oauth2 => {
            let o = oauth2.cloned().unwrap_or_default();
            let settings = mc::OAuth2Settings {
                token_url: o.token_url,
                client_id: o.client_id,
                client_secret: (!o.client_secret.is_empty()).then(|| o.client_secret.into()),
                refresh_token: o.refresh_token.into(),
                scopes: o.scopes,
            };
            let token = mc::refresh_access_token(&settings, TIMEOUT).await?;
            Ok(mc::Credentials::OAuth2Token {
                username: username.to_owned(),
                access_token: token.access_token,
            })
        }
        _ => Ok(mc::Credentials::password(username, password)),
    }
}

fn outcome(direction: pb::Direction, started: Instant) -> pb::TestResult {
    pb::TestResult {
        direction: direction as i32,
        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        ..Default::default()
    }
}

fn failed(mut r: pb::TestResult, e: &mc::ConnError) -> pb::TestResult {
    r.ok = false;
    r.reason = reason(e.reason());
    r.message = e.server_message();
    r
}

pub fn reason(r: deskmail_core::StatusReason) -> i32 {
    use deskmail_core::StatusReason as R;
    (match r {
        R::AuthFailed => pb::StatusReason::AuthFailed,
        R::ConnectFailed => pb::StatusReason::ConnectFailed,
        R::TlsFailed => pb::StatusReason::TlsFailed,
        R::DnsFailed => pb::StatusReason::DnsFailed,
        R::Timeout => pb::StatusReason::Timeout,
        R::TokenExpired => pb::StatusReason::TokenExpired,
        R::MailboxNotFound => pb::StatusReason::MailboxNotFound,
        R::ProtocolError => pb::StatusReason::ProtocolError,
    }) as i32
}

async fn test_inbound(i: &pb::InboundSettings) -> pb::TestResult {
    let started = Instant::now();
    let r = outcome(pb::Direction::Inbound, started);
    let creds = match credentials(i.auth, &i.username, &i.password, i.oauth2.as_ref()).await {
        Ok(c) => c,
        Err(e) => return failed(r, &e),
    };
    let ep = endpoint(&i.host, i.port, i.security, i.allow_invalid_certs);
    let probe = if i.protocol == pb::Protocol::Pop3 as i32 {
        mc::test_inbound_pop3(&ep, &creds).await
    } else {
        mc::test_inbound_imap(&ep, &creds, if i.folder.is_empty() { "INBOX" } else { &i.folder }).await
    };
    let mut r = outcome(pb::Direction::Inbound, started);
    match probe {
        Ok(p) => {
            r.ok = true;
            r.message_count = u64::from(p.message_count);
            r.capabilities = p.capabilities;
            r.message = format!("logged in; {} messages", p.message_count);
            r
        }
        Err(e) => failed(r, &e),
    }
}

async fn test_outbound(o: &pb::OutboundSettings) -> pb::TestResult {
    let started = Instant::now();
    let r = outcome(pb::Direction::Outbound, started);
    let creds = match credentials(o.auth, &o.username, &o.password, o.oauth2.as_ref()).await {
        Ok(c) => c,
        Err(e) => return failed(r, &e),
    };
    let ep = endpoint(&o.host, o.port, o.security, o.allow_invalid_certs);
    let probe = mc::test_outbound(&ep, &creds, None).await;
    let mut r = outcome(pb::Direction::Outbound, started);
    match probe {
        Ok(p) => {
            r.ok = true;
            r.capabilities = p.capabilities;
            r.message = "EHLO, TLS and AUTH accepted; nothing sent".to_owned();
            r
        }
        Err(e) => failed(r, &e),
    }
}

pub async fn send_test(
    mailbox: &pb::Mailbox,
    req: &pb::SendTestEmailRequest,
) -> Result<pb::SendTestEmailResponse, Status> {
    let Some(o) = &mailbox.outbound else {
        return Err(Status::failed_precondition(format!("mailbox {:?} has no outbound part", mailbox.name)));
    };
    if !is_address(&req.to) {
        return Err(bad_request(vec![(
            "to".into(),
            format!("{} is not a mail address", crate::resource::quote(&req.to)),
        )]));
    }
    let creds = match credentials(o.auth, &o.username, &o.password, o.oauth2.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(pb::SendTestEmailResponse {
                ok: false,
                reason: reason(e.reason()),
                message: e.server_message(),
                message_id: String::new(),
            });
        }
    };
    let subject = if req.subject.is_empty() { "deskmail test message" } else { &req.subject };
    let body = if req.body.is_empty() {
        format!("This is a test message from deskmail, sent through the mailbox {:?}.\n", mailbox.name)
    } else {
        req.body.clone()
    };
    let ep = endpoint(&o.host, o.port, o.security, o.allow_invalid_certs);
    match mc::send_test_email(&ep, &creds, &o.from_address, &req.to, subject, &body).await {
        Ok(sent) => Ok(pb::SendTestEmailResponse {
            ok: true,
            reason: 0,
            message: sent.reply,
            message_id: sent.message_id,
        }),
        Err(e) => Ok(pb::SendTestEmailResponse {
            ok: false,
            reason: reason(e.reason()),
            message: e.server_message(),
            message_id: String::new(),
        }),
    }
}
