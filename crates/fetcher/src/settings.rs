//! An inbound mailbox as the fetcher uses it: configd's `pb::Mailbox` turned into plain
//! settings (endpoint, credentials source, folder, mode, limits), with every unusable value
//! named.

use std::time::Duration;

use deskmail_core::StatusReason;
use deskmail_mailconn::{OAuth2Settings, Security, ServerEndpoint, TlsPolicy};
use deskmail_proto::v1 as pb;
use secrecy::SecretString;

/// Which protocol a box is fetched over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Imap,
    Pop3,
}

/// How the fetcher logs in to a box.
#[derive(Debug, Clone)]
pub(crate) enum Login {
    Password { username: String, password: SecretString },
    OAuth2 { username: String, oauth: OAuth2Settings },
}

/// One inbound mailbox, ready to poll.
#[derive(Debug, Clone)]
pub(crate) struct BoxSettings {
    pub id: String,
    pub name: String,
    pub proto: Proto,
    pub endpoint: ServerEndpoint,
    pub login: Login,
    /// IMAP folder (INBOX by default).
    pub folder: String,
    /// Wait between polls when IDLE is not in use.
    pub poll_interval: Duration,
    /// Keep mail on the server (`\Seen` / remembered UIDL) instead of deleting it.
    pub keep: bool,
    /// Mails larger than this stay on the server.
    pub max_size: Option<u64>,
}

/// Why a box's settings cannot be used; reported as its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingsProblem {
    pub reason: StatusReason,
    pub detail: String,
}

fn problem(reason: StatusReason, detail: impl Into<String>) -> SettingsProblem {
    SettingsProblem { reason, detail: detail.into() }
}

/// Default poll interval when the box does not set one.
const DEFAULT_POLL: Duration = Duration::from_secs(60);

/// True when the fetcher should poll this mailbox (enabled, with an inbound part).
pub(crate) fn is_fetchable(mb: &pb::Mailbox) -> bool {
    mb.enabled.unwrap_or(true)
        && mb.inbound.as_ref().is_some_and(|i| {
            matches!(pb::Protocol::try_from(i.protocol), Ok(pb::Protocol::Imap | pb::Protocol::Pop3))
        })
}

/// What decides whether a running mailbox task must restart: everything but the timestamps
/// and the OAuth2 refresh token (which the task itself rotates; see `worker`).
pub(crate) fn restart_key(mb: &pb::Mailbox) -> pb::Mailbox {
    let mut key = mb.clone();
    key.create_time = None;
    key.update_time = None;
    key.outbound = None;
    if let Some(o) = key.inbound.as_mut().and_then(|i| i.oauth2.as_mut()) {
        o.refresh_token.clear();
    }
    key
}

/// The refresh token configd holds for the box, if it uses OAuth2.
pub(crate) fn refresh_token_of(mb: &pb::Mailbox) -> Option<String> {
    mb.inbound
        .as_ref()
        .and_then(|i| i.oauth2.as_ref())
        .map(|o| o.refresh_token.clone())
        .filter(|t| !t.is_empty())
}

impl BoxSettings {
    /// Turns configd's mailbox into settings; `timeout` bounds every network step.
    pub(crate) fn from_pb(mb: &pb::Mailbox, timeout: Duration) -> Result<Self, SettingsProblem> {
        let inbound = mb
            .inbound
            .as_ref()
            .ok_or_else(|| problem(StatusReason::ProtocolError, "mailbox has no inbound settings"))?;
        let proto = match pb::Protocol::try_from(inbound.protocol) {
            Ok(pb::Protocol::Imap) => Proto::Imap,
            Ok(pb::Protocol::Pop3) => Proto::Pop3,
            _ => return Err(problem(StatusReason::ProtocolError, "inbound.protocol must be IMAP or POP3")),
        };
        let security = match pb::Security::try_from(inbound.security) {
            Ok(pb::Security::None) => Security::None,
            Ok(pb::Security::Starttls) => Security::StartTls,
            Ok(pb::Security::Tls | pb::Security::Unspecified) | Err(_) => Security::Tls,
        };
        if inbound.host.trim().is_empty() {
            return Err(problem(StatusReason::ConnectFailed, "inbound.host is empty"));
        }
        let port = match u16::try_from(inbound.port) {
            Ok(0) => match (proto, security) {
                (Proto::Imap, Security::Tls) => 993,
                (Proto::Imap, _) => 143,
                (Proto::Pop3, Security::Tls) => 995,
                (Proto::Pop3, _) => 110,
            },
            Ok(p) => p,
            Err(_) => {
                return Err(problem(
                    StatusReason::ConnectFailed,
                    format!("inbound.port {} is not a port (1-65535)", inbound.port),
                ));
            }
        };
        let tls = if inbound.allow_invalid_certs {
            TlsPolicy::dangerous_accept_invalid_certs()
        } else {
            TlsPolicy::default()
        };
        let endpoint =
            ServerEndpoint::new(inbound.host.trim(), port, security).with_tls(tls).with_timeout(timeout);
        let username = inbound.username.clone();
        if username.is_empty() {
            return Err(problem(StatusReason::AuthFailed, "inbound.username is empty"));
        }
        let login = match pb::AuthMethod::try_from(inbound.auth) {
            Ok(pb::AuthMethod::Oauth2) => {
                let o = inbound
                    .oauth2
                    .as_ref()
                    .ok_or_else(|| problem(StatusReason::TokenExpired, "inbound.oauth2 is not set"))?;
                if o.refresh_token.is_empty() {
                    return Err(problem(
                        StatusReason::TokenExpired,
                        "inbound.oauth2 has no refresh token: authorize the mailbox",
                    ));
                }
                if o.token_url.is_empty() {
                    return Err(problem(StatusReason::ProtocolError, "inbound.oauth2.token_url is empty"));
                }
                Login::OAuth2 {
                    username,
                    oauth: OAuth2Settings {
                        token_url: o.token_url.clone(),
                        client_id: o.client_id.clone(),
                        client_secret: Some(o.client_secret.clone())
                            .filter(|s| !s.is_empty())
                            .map(SecretString::from),
                        refresh_token: SecretString::from(o.refresh_token.clone()),
                        scopes: o.scopes.clone(),
                    },
                }
            }
            Ok(pb::AuthMethod::None) => {
                return Err(problem(StatusReason::AuthFailed, "inbound.auth NONE: a mailbox needs a login"));
            }
            _ => {
                if inbound.password.is_empty() {
                    return Err(problem(StatusReason::AuthFailed, "inbound.password is not set"));
                }
                Login::Password { username, password: SecretString::from(inbound.password.clone()) }
            }
        };
        let folder = match inbound.folder.trim() {
            "" => "INBOX".to_owned(),
            f => f.to_owned(),
        };
        let poll_interval = match inbound.poll_interval_seconds {
            0 => DEFAULT_POLL,
            s => Duration::from_secs(u64::from(s)),
        };
        Ok(Self {
            id: mb.id.clone(),
            name: mb.name.clone(),
            proto,
            endpoint,
            login,
            folder,
            poll_interval,
            keep: inbound.keep_on_server,
            max_size: Some(inbound.max_message_size).filter(|m| *m > 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imap(f: impl FnOnce(&mut pb::InboundSettings)) -> pb::Mailbox {
        let mut inbound = pb::InboundSettings {
            protocol: pb::Protocol::Imap as i32,
            host: "mail.test".into(),
            security: pb::Security::Tls as i32,
            auth: pb::AuthMethod::Password as i32,
            username: "u@x.test".into(),
            password: "pw".into(),
            ..Default::default()
        };
        f(&mut inbound);
        pb::Mailbox { id: "m1".into(), name: "box".into(), inbound: Some(inbound), ..Default::default() }
    }

    #[test]
    fn defaults_and_ports() {
        let table = [
            (pb::Protocol::Imap, pb::Security::Tls, 993),
            (pb::Protocol::Imap, pb::Security::Starttls, 143),
            (pb::Protocol::Imap, pb::Security::None, 143),
            (pb::Protocol::Pop3, pb::Security::Tls, 995),
            (pb::Protocol::Pop3, pb::Security::None, 110),
        ];
        for (proto, sec, port) in table {
            let mb = imap(|i| {
                i.protocol = proto as i32;
                i.security = sec as i32;
            });
            let s = BoxSettings::from_pb(&mb, Duration::from_secs(5)).unwrap();
            assert_eq!(s.endpoint.port, port, "{proto:?} {sec:?}");
            assert_eq!(s.folder, "INBOX");
            assert_eq!(s.poll_interval, DEFAULT_POLL);
            assert_eq!(s.max_size, None);
        }
    }

    #[test]
    fn unusable_settings_are_named() {
        type Edit = fn(&mut pb::InboundSettings);
        let table: [(Edit, StatusReason, &str); 4] = [
            (|i| i.password.clear(), StatusReason::AuthFailed, "inbound.password"),
            (|i| i.host.clear(), StatusReason::ConnectFailed, "inbound.host"),
            (|i| i.port = 70000, StatusReason::ConnectFailed, "inbound.port"),
            (|i| i.auth = pb::AuthMethod::Oauth2 as i32, StatusReason::TokenExpired, "inbound.oauth2"),
        ];
        for (edit, reason, needle) in table {
            let e = BoxSettings::from_pb(&imap(edit), Duration::from_secs(5)).unwrap_err();
            assert_eq!(e.reason, reason, "{e:?}");
            assert!(e.detail.contains(needle), "{e:?}");
        }
    }

    #[test]
    fn restart_key_ignores_refresh_token_and_times() {
        let with = |t: &str| {
            let mut mb = imap(|i| {
                i.oauth2 = Some(pb::OAuth2 { refresh_token: t.into(), ..Default::default() });
            });
            mb.update_time = Some(prost_types_now(t.len() as i64));
            mb
        };
        assert_eq!(restart_key(&with("a")), restart_key(&with("bb")));
        let mut other = with("a");
        if let Some(i) = other.inbound.as_mut() {
            i.folder = "Other".into();
        }
        assert_ne!(restart_key(&with("a")), restart_key(&other));
        assert_eq!(refresh_token_of(&with("bb")).as_deref(), Some("bb"));
    }

    fn prost_types_now(seconds: i64) -> ::prost_types::Timestamp {
        ::prost_types::Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn fetchable() {
        assert!(is_fetchable(&imap(|_| {})));
        let mut off = imap(|_| {});
        off.enabled = Some(false);
        assert!(!is_fetchable(&off));
        assert!(!is_fetchable(&pb::Mailbox::default()));
    }
}
