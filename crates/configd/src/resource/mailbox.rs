//! The mailbox: an inbound part, an outbound part, or both, and the rules each must meet.

use deskmail_proto::v1 as pb;

use super::{
    Kind, Reference, Resource, Violation, address_rule, host_rule, name_rules, port_rule, reference, required,
};

impl Resource for pb::Mailbox {
    fn in_snapshot(snapshot: &pb::ConfigSnapshot) -> &[Self] {
        &snapshot.mailboxes
    }
    const KIND: Kind = Kind::Mailbox;
    const PROTO_NAME: &'static str = "deskmail.v1.Mailbox";
    const FIELD: &'static str = "mailbox";

    common_accessors!(name);
    fn secret_fields(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut out = Vec::new();
        if let Some(i) = self.inbound.as_mut() {
            out.push(("inbound.password", &mut i.password));
            if let Some(o) = i.oauth2.as_mut() {
                out.push(("inbound.oauth2.client_secret", &mut o.client_secret));
                out.push(("inbound.oauth2.refresh_token", &mut o.refresh_token));
            }
        }
        if let Some(i) = self.outbound.as_mut() {
            out.push(("outbound.password", &mut i.password));
            if let Some(o) = i.oauth2.as_mut() {
                out.push(("outbound.oauth2.client_secret", &mut o.client_secret));
                out.push(("outbound.oauth2.refresh_token", &mut o.refresh_token));
            }
        }
        out
    }
    fn mark_secret(&mut self, path: &str, present: bool) {
        match path {
            "inbound.password" => self.inbound.as_mut().map(|i| i.has_password = present),
            "outbound.password" => self.outbound.as_mut().map(|i| i.has_password = present),
            "inbound.oauth2.client_secret" => {
                oauth(self.inbound.as_mut().map(|i| &mut i.oauth2)).map(|o| o.has_client_secret = present)
            }
            "inbound.oauth2.refresh_token" => {
                oauth(self.inbound.as_mut().map(|i| &mut i.oauth2)).map(|o| o.has_refresh_token = present)
            }
            "outbound.oauth2.client_secret" => {
                oauth(self.outbound.as_mut().map(|i| &mut i.oauth2)).map(|o| o.has_client_secret = present)
            }
            "outbound.oauth2.refresh_token" => {
                oauth(self.outbound.as_mut().map(|i| &mut i.oauth2)).map(|o| o.has_refresh_token = present)
            }
            _ => None,
        };
    }
    fn references(&self) -> Vec<Reference> {
        let Some(i) = &self.inbound else { return Vec::new() };
        [
            reference("inbound.queue_id", Kind::Queue, &i.queue_id),
            reference("inbound.fallback_queue_id", Kind::Queue, &i.fallback_queue_id),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
    fn defaults(&mut self) {
        if self.enabled.is_none() {
            self.enabled = Some(true);
        }
        crate::presets::apply(self);
        if let Some(i) = self.inbound.as_mut() {
            if i.folder.is_empty() {
                i.folder = "INBOX".to_owned();
            }
            if i.poll_interval_seconds == 0 {
                i.poll_interval_seconds = 60;
            }
            if i.auth == pb::AuthMethod::Unspecified as i32 {
                i.auth = pb::AuthMethod::Password as i32;
            }
        }
        if let Some(o) = self.outbound.as_mut()
            && o.auth == pb::AuthMethod::Unspecified as i32
        {
            o.auth = pb::AuthMethod::Password as i32;
        }
    }
    fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        name_rules(&mut v, &self.name);
        if self.inbound.is_none() && self.outbound.is_none() {
            v.push((
                "inbound".to_owned(),
                "a mailbox needs an inbound or an outbound part (or both)".to_owned(),
            ));
        }
        if let Some(i) = &self.inbound {
            validate_inbound(&mut v, i);
        }
        if let Some(o) = &self.outbound {
            validate_outbound(&mut v, o);
        }
        v
    }
}

fn oauth(o: Option<&mut Option<pb::OAuth2>>) -> Option<&mut pb::OAuth2> {
    o.map(|o| o.get_or_insert_with(Default::default))
}

fn validate_inbound(v: &mut Vec<Violation>, i: &pb::InboundSettings) {
    if pb::Protocol::try_from(i.protocol).unwrap_or_default() == pb::Protocol::Unspecified {
        v.push(("inbound.protocol".to_owned(), "must be IMAP or POP3".to_owned()));
    }
    host_rule(v, "inbound.host", &i.host);
    port_rule(v, "inbound.port", i.port);
    if pb::Security::try_from(i.security).unwrap_or_default() == pb::Security::Unspecified {
        v.push(("inbound.security".to_owned(), "must be NONE, STARTTLS or TLS".to_owned()));
    }
    match pb::AuthMethod::try_from(i.auth).unwrap_or_default() {
        pb::AuthMethod::Password => {
            required(v, "inbound.username", &i.username);
            if i.password.is_empty() && !i.has_password {
                v.push(("inbound.password".to_owned(), "is required when auth is PASSWORD".to_owned()));
            }
        }
        pb::AuthMethod::Oauth2 => {
            required(v, "inbound.username", &i.username);
            let has = i.oauth2.as_ref().is_some_and(|o| !o.refresh_token.is_empty() || o.has_refresh_token);
            oauth2_rules(v, "inbound", i.oauth2.as_ref(), has);
        }
        _ => v.push(("inbound.auth".to_owned(), "must be PASSWORD or OAUTH2".to_owned())),
    }
    if i.poll_interval_seconds < 5 || i.poll_interval_seconds > 86_400 {
        v.push((
            "inbound.poll_interval_seconds".to_owned(),
            format!("{} is not between 5 and 86400", i.poll_interval_seconds),
        ));
    }
    if i.folder.chars().any(char::is_control) {
        v.push(("inbound.folder".to_owned(), "contains control characters".to_owned()));
    }
    match pb::DispatchMode::try_from(i.dispatch_mode).unwrap_or_default() {
        pb::DispatchMode::ByQueue => required(v, "inbound.queue_id", &i.queue_id),
        pb::DispatchMode::ByRecipient => required(v, "inbound.fallback_queue_id", &i.fallback_queue_id),
        pb::DispatchMode::Unspecified => {
            v.push(("inbound.dispatch_mode".to_owned(), "must be BY_QUEUE or BY_RECIPIENT".to_owned()));
        }
    }
}

fn validate_outbound(v: &mut Vec<Violation>, o: &pb::OutboundSettings) {
    host_rule(v, "outbound.host", &o.host);
    port_rule(v, "outbound.port", o.port);
    if pb::Security::try_from(o.security).unwrap_or_default() == pb::Security::Unspecified {
        v.push(("outbound.security".to_owned(), "must be NONE, STARTTLS or TLS".to_owned()));
    }
    match pb::AuthMethod::try_from(o.auth).unwrap_or_default() {
        pb::AuthMethod::None => {}
        pb::AuthMethod::Password => {
            required(v, "outbound.username", &o.username);
            if o.password.is_empty() && !o.has_password {
                v.push(("outbound.password".to_owned(), "is required when auth is PASSWORD".to_owned()));
            }
        }
        pb::AuthMethod::Oauth2 => {
            required(v, "outbound.username", &o.username);
            let has = o.oauth2.as_ref().is_some_and(|a| !a.refresh_token.is_empty() || a.has_refresh_token);
            oauth2_rules(v, "outbound", o.oauth2.as_ref(), has);
        }
        pb::AuthMethod::Unspecified => {
            v.push(("outbound.auth".to_owned(), "must be NONE, PASSWORD or OAUTH2".to_owned()))
        }
    }
    required(v, "outbound.from_address", &o.from_address);
    for (field, value) in [
        ("outbound.from_address", &o.from_address),
        ("outbound.reply_to", &o.reply_to),
        ("outbound.return_path", &o.return_path),
        ("outbound.read_receipt_to", &o.read_receipt_to),
    ] {
        address_rule(v, field, value);
    }
    if o.from_name.chars().any(char::is_control) {
        v.push((
            "outbound.from_name".to_owned(),
            "contains control characters (a header injection?)".to_owned(),
        ));
    }
}

fn oauth2_rules(v: &mut Vec<Violation>, prefix: &str, o: Option<&pb::OAuth2>, has_token: bool) {
    let Some(o) = o else {
        v.push((format!("{prefix}.oauth2"), "is required when auth is OAUTH2".to_owned()));
        return;
    };
    required(v, &format!("{prefix}.oauth2.client_id"), &o.client_id);
    if !(o.token_url.starts_with("https://") || o.token_url.starts_with("http://")) {
        v.push((
            format!("{prefix}.oauth2.token_url"),
            format!("{} is not an http(s) URL", super::quote(&o.token_url)),
        ));
    }
    if !has_token {
        v.push((format!("{prefix}.oauth2.refresh_token"), "is required when auth is OAUTH2".to_owned()));
    }
}
