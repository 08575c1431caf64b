//! Outbound boxes from configd's snapshot: which box a job goes through (the design's
//! order), and a box's settings as plain Rust values. Pure: no I/O.

use std::time::Duration;

use deskmail_core::OutboundJob;
use deskmail_mailconn::{OAuth2Settings, Security, ServerEndpoint, TlsPolicy};
use deskmail_proto::v1 as pb;
use lettre::Address;
use lettre::message::Mailbox;
use secrecy::SecretString;

/// How a box logs in.
#[derive(Clone, Debug)]
pub enum BoxAuth {
    None,
    Password { username: String, password: SecretString },
    OAuth2 { username: String, settings: OAuth2Settings },
}

impl BoxAuth {
    /// The login name, if any.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::None => None,
            Self::Password { username, .. } | Self::OAuth2 { username, .. } => Some(username),
        }
    }
}

/// One outbound box, ready to use.
#[derive(Clone, Debug)]
pub struct OutboundBox {
    pub id: String,
    pub name: String,
    pub endpoint: ServerEndpoint,
    pub auth: BoxAuth,
    /// The box's sender address and name.
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    /// The envelope sender (MAIL FROM), when set.
    pub return_path: Option<Address>,
    /// Where read receipts go (default: the From address).
    pub read_receipt_to: Option<Mailbox>,
    /// Appended to text and HTML bodies, when set and enabled.
    pub footer: Option<String>,
    /// Records and logs, sends nothing.
    pub dry_run: bool,
    /// Messages per minute; 0 = no limit.
    pub rate_limit_per_minute: u32,
    /// The settings this was made from: a change means new SMTP sessions.
    pub source: pb::OutboundSettings,
}

/// Why no box could be used for a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown mailbox {0:?}: no mailbox has that id or name")]
    UnknownMailbox(String),
    #[error("mailbox {0:?} has no outbound (SMTP) part")]
    NotOutbound(String),
    #[error("mailbox {0:?} is disabled")]
    Disabled(String),
    #[error("unknown contract {0:?}: no contract has that id or name")]
    UnknownContract(String),
    #[error("unknown company {0:?}: no company has that id or name")]
    UnknownCompany(String),
    #[error(
        "no outbound box: the job names no mailbox, its contract and company have no outbound box, and settings.default_outbound_mailbox_id is not set"
    )]
    NoBox,
    #[error("mailbox {mailbox:?}: {problem}")]
    BadBox { mailbox: String, problem: String },
}

/// Where the box came from, for logs and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Job,
    Contract,
    Company,
    Default,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Job => "job",
            Via::Contract => "contract",
            Via::Company => "company",
            Via::Default => "default",
        }
    }
}

fn by_id_or_name<'a, T>(
    items: &'a [T],
    key: &str,
    id: fn(&T) -> &str,
    name: fn(&T) -> &str,
) -> Option<&'a T> {
    items.iter().find(|t| id(t) == key).or_else(|| items.iter().find(|t| name(t) == key))
}

/// The box for `job`: its `mailbox_id`, else its contract's outbound box (a contract without
/// one uses its company's), else its company's, else the system default.
pub fn resolve<'a>(
    job: &OutboundJob,
    snap: &'a pb::ConfigSnapshot,
) -> Result<(&'a pb::Mailbox, Via), ResolveError> {
    let mailbox = |key: &str| {
        by_id_or_name(&snap.mailboxes, key, |m| &m.id, |m| &m.name)
            .ok_or_else(|| ResolveError::UnknownMailbox(key.to_owned()))
    };
    let company = |key: &str| {
        by_id_or_name(&snap.companies, key, |c| &c.id, |c| &c.name)
            .ok_or_else(|| ResolveError::UnknownCompany(key.to_owned()))
    };
    let nonempty =
        |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let picked = if let Some(key) = nonempty(&job.mailbox_id) {
        Some((mailbox(&key)?, Via::Job))
    } else {
        let mut found = None;
        let mut company_key = nonempty(&job.company);
        if let Some(key) = nonempty(&job.contract) {
            let contract = by_id_or_name(&snap.contracts, &key, |c| &c.id, |c| &c.name)
                .ok_or_else(|| ResolveError::UnknownContract(key.clone()))?;
            if !contract.outbound_mailbox_id.is_empty() {
                found = Some((mailbox(&contract.outbound_mailbox_id)?, Via::Contract));
            } else if company_key.is_none() && !contract.company_id.is_empty() {
                company_key = Some(contract.company_id.clone());
            }
        }
        if found.is_none()
            && let Some(key) = company_key
        {
            let company = company(&key)?;
            if !company.outbound_mailbox_id.is_empty() {
                found = Some((mailbox(&company.outbound_mailbox_id)?, Via::Company));
            }
        }
        if found.is_none()
            && let Some(settings) = &snap.settings
            && !settings.default_outbound_mailbox_id.is_empty()
        {
            found = Some((mailbox(&settings.default_outbound_mailbox_id)?, Via::Default));
        }
        found
    };
    let (m, via) = picked.ok_or(ResolveError::NoBox)?;
    if m.outbound.is_none() {
        return Err(ResolveError::NotOutbound(m.name.clone()));
    }
    if m.enabled == Some(false) {
        return Err(ResolveError::Disabled(m.name.clone()));
    }
    Ok((m, via))
}

/// A box's settings as plain values; `timeout` bounds each network step.
pub fn outbound_box(m: &pb::Mailbox, timeout: Duration) -> Result<OutboundBox, ResolveError> {
    let bad = |problem: String| ResolveError::BadBox { mailbox: m.name.clone(), problem };
    let o = m.outbound.as_ref().ok_or_else(|| ResolveError::NotOutbound(m.name.clone()))?;
    let security = match pb::Security::try_from(o.security).unwrap_or_default() {
        pb::Security::None => Security::None,
        pb::Security::Starttls => Security::StartTls,
        pb::Security::Tls => Security::Tls,
        pb::Security::Unspecified => return Err(bad("outbound.security is not set".into())),
    };
    let port = u16::try_from(o.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("outbound.port {} is not a port", o.port)))?;
    let mut endpoint = ServerEndpoint::new(o.host.clone(), port, security).with_timeout(timeout);
    if o.allow_invalid_certs {
        endpoint = endpoint.with_tls(TlsPolicy::dangerous_accept_invalid_certs());
    }
    let auth = match pb::AuthMethod::try_from(o.auth).unwrap_or_default() {
        pb::AuthMethod::Password => BoxAuth::Password {
            username: o.username.clone(),
            password: SecretString::from(o.password.clone()),
        },
        pb::AuthMethod::Oauth2 => {
            let a = o.oauth2.clone().unwrap_or_default();
            BoxAuth::OAuth2 {
                username: o.username.clone(),
                settings: OAuth2Settings {
                    token_url: a.token_url,
                    client_id: a.client_id,
                    client_secret: (!a.client_secret.is_empty()).then(|| SecretString::from(a.client_secret)),
                    refresh_token: SecretString::from(a.refresh_token),
                    scopes: a.scopes,
                },
            }
        }
        pb::AuthMethod::None | pb::AuthMethod::Unspecified => BoxAuth::None,
    };
    let address = |field: &str, v: &str| -> Result<Address, ResolveError> {
        v.trim().parse::<Address>().map_err(|e| bad(format!("outbound.{field} {v:?}: {e}")))
    };
    let name = o.from_name.trim();
    let from =
        Mailbox::new((!name.is_empty()).then(|| name.to_owned()), address("from_address", &o.from_address)?);
    let opt = |field: &str, v: &str| (!v.trim().is_empty()).then(|| address(field, v)).transpose();
    let footer = (o.append_footer && !o.footer.trim().is_empty()).then(|| o.footer.clone());
    Ok(OutboundBox {
        id: m.id.clone(),
        name: m.name.clone(),
        endpoint,
        auth,
        from,
        reply_to: opt("reply_to", &o.reply_to)?.map(|a| Mailbox::new(None, a)),
        return_path: opt("return_path", &o.return_path)?,
        read_receipt_to: opt("read_receipt_to", &o.read_receipt_to)?.map(|a| Mailbox::new(None, a)),
        footer,
        dry_run: o.dry_run,
        rate_limit_per_minute: o.rate_limit_per_minute,
        source: o.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(id: &str, name: &str) -> pb::Mailbox {
        pb::Mailbox {
            id: id.into(),
            name: name.into(),
            outbound: Some(pb::OutboundSettings {
                host: "127.0.0.1".into(),
                port: 25,
                security: pb::Security::None as i32,
                from_address: format!("{name}@desk.test"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn snap() -> pb::ConfigSnapshot {
        pb::ConfigSnapshot {
            mailboxes: vec![
                mb("m1", "jobbox"),
                mb("m2", "contractbox"),
                mb("m3", "companybox"),
                mb("m4", "defaultbox"),
            ],
            companies: vec![
                pb::Company {
                    id: "co1".into(),
                    name: "Acme".into(),
                    outbound_mailbox_id: "m3".into(),
                    ..Default::default()
                },
                pb::Company { id: "co2".into(), name: "Plain".into(), ..Default::default() },
            ],
            contracts: vec![
                pb::Contract {
                    id: "ct1".into(),
                    name: "Gold".into(),
                    company_id: "co1".into(),
                    outbound_mailbox_id: "m2".into(),
                    ..Default::default()
                },
                pb::Contract {
                    id: "ct2".into(),
                    name: "Silver".into(),
                    company_id: "co1".into(),
                    ..Default::default()
                },
            ],
            settings: Some(pb::Settings { default_outbound_mailbox_id: "m4".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn job(mailbox: Option<&str>, contract: Option<&str>, company: Option<&str>) -> OutboundJob {
        OutboundJob {
            mailbox_id: mailbox.map(Into::into),
            contract: contract.map(Into::into),
            company: company.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn the_design_order() {
        let s = snap();
        let cases = [
            (job(Some("m1"), Some("Gold"), Some("Acme")), "jobbox", Via::Job),
            (job(Some("jobbox"), None, None), "jobbox", Via::Job),
            (job(None, Some("Gold"), Some("Acme")), "contractbox", Via::Contract),
            (job(None, Some("ct2"), None), "companybox", Via::Company),
            (job(None, Some("Silver"), Some("Plain")), "defaultbox", Via::Default),
            (job(None, None, Some("co1")), "companybox", Via::Company),
            (job(None, None, Some("Plain")), "defaultbox", Via::Default),
            (job(None, None, None), "defaultbox", Via::Default),
        ];
        for (j, want, via) in cases {
            let (m, v) = resolve(&j, &s).unwrap();
            assert_eq!((m.name.as_str(), v), (want, via), "{j:?}");
        }
    }

    #[test]
    fn unknown_names_and_no_box_are_errors() {
        let mut s = snap();
        assert_eq!(
            resolve(&job(Some("nope"), None, None), &s).unwrap_err(),
            ResolveError::UnknownMailbox("nope".into())
        );
        assert_eq!(
            resolve(&job(None, Some("nope"), None), &s).unwrap_err(),
            ResolveError::UnknownContract("nope".into())
        );
        assert_eq!(
            resolve(&job(None, None, Some("nope")), &s).unwrap_err(),
            ResolveError::UnknownCompany("nope".into())
        );
        s.settings = None;
        assert_eq!(resolve(&job(None, None, Some("Plain")), &s).unwrap_err(), ResolveError::NoBox);
        s.mailboxes[0].outbound = None;
        assert_eq!(
            resolve(&job(Some("m1"), None, None), &s).unwrap_err(),
            ResolveError::NotOutbound("jobbox".into())
        );
        s.mailboxes[1].enabled = Some(false);
        assert_eq!(
            resolve(&job(Some("m2"), None, None), &s).unwrap_err(),
            ResolveError::Disabled("contractbox".into())
        );
    }

    #[test]
    fn settings_become_plain_values() {
        let mut m = mb("m1", "jobbox");
        let o = m.outbound.as_mut().unwrap();
        o.from_name = "Support".into();
        o.footer = "Acme Support".into();
        o.append_footer = true;
        o.security = pb::Security::Tls as i32;
        o.allow_invalid_certs = true;
        let b = outbound_box(&m, Duration::from_secs(5)).unwrap();
        assert_eq!(b.from.to_string(), "Support <jobbox@desk.test>");
        assert_eq!(b.footer.as_deref(), Some("Acme Support"));
        assert!(b.endpoint.tls.accept_invalid_certs);
        m.outbound.as_mut().unwrap().from_address = "broken".into();
        assert!(outbound_box(&m, Duration::from_secs(5)).unwrap_err().to_string().contains("from_address"));
    }
}
