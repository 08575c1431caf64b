//! Provider presets: host, port and security for both directions of well-known providers.
//! Applied on create to the parts the admin left empty; the admin can change them after.

use deskmail_proto::v1 as pb;

pub fn all() -> Vec<pb::PresetSettings> {
    use pb::{Preset as P, Protocol as Pr, Security as S};
    let entry = |preset: P, name: &str, ih: &str, oh: &str, token_url: &str| pb::PresetSettings {
        preset: preset as i32,
        name: name.to_owned(),
        inbound_protocol: Pr::Imap as i32,
        inbound_host: ih.to_owned(),
        inbound_port: 993,
        inbound_security: S::Tls as i32,
        outbound_host: oh.to_owned(),
        outbound_port: 587,
        outbound_security: S::Starttls as i32,
        oauth2_token_url: token_url.to_owned(),
    };
    vec![
        entry(P::Gmail, "Gmail", "imap.gmail.com", "smtp.gmail.com", "https://oauth2.googleapis.com/token"),
        entry(
            P::Outlook,
            "Outlook / Microsoft 365",
            "outlook.office365.com",
            "smtp.office365.com",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        ),
        entry(
            P::Yahoo,
            "Yahoo",
            "imap.mail.yahoo.com",
            "smtp.mail.yahoo.com",
            "https://api.login.yahoo.com/oauth2/get_token",
        ),
        pb::PresetSettings { preset: P::Custom as i32, name: "Custom".to_owned(), ..Default::default() },
    ]
}

/// Fills empty host, port and security (and the OAuth2 token URL) from the mailbox's preset.
pub fn apply(mailbox: &mut pb::Mailbox) {
    let Some(p) = all().into_iter().find(|p| p.preset == mailbox.preset && !p.inbound_host.is_empty()) else {
        return;
    };
    if let Some(i) = mailbox.inbound.as_mut() {
        if i.host.is_empty() {
            i.host = p.inbound_host.clone();
        }
        if i.port == 0 {
            i.port = p.inbound_port;
        }
        if i.security == 0 {
            i.security = p.inbound_security;
        }
        if i.protocol == 0 {
            i.protocol = p.inbound_protocol;
        }
        if let Some(o) = i.oauth2.as_mut()
            && o.token_url.is_empty()
        {
            o.token_url = p.oauth2_token_url.clone();
        }
    }
    if let Some(o) = mailbox.outbound.as_mut() {
        if o.host.is_empty() {
            o.host = p.outbound_host.clone();
        }
        if o.port == 0 {
            o.port = p.outbound_port;
        }
        if o.security == 0 {
            o.security = p.outbound_security;
        }
        if let Some(a) = o.oauth2.as_mut()
            && a.token_url.is_empty()
        {
            a.token_url = p.oauth2_token_url.clone();
        }
    }
}
