//! What configd needs to know about each resource kind: its name in the store, its id and
//! name, its order, its secret fields and the other resources it refers to. The generic
//! service code (`service/crud.rs`) does the rest the same way for every kind.

use deskmail_proto::v1 as pb;
use prost::Message;

/// A reference from one resource to another: (field path, kind referred to, id).
pub struct Reference {
    pub field: &'static str,
    pub kind: Kind,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mailbox,
    Queue,
    SystemAddress,
    Company,
    Contract,
    Filter,
    Settings,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Mailbox => "mailbox",
            Kind::Queue => "queue",
            Kind::SystemAddress => "system_address",
            Kind::Company => "company",
            Kind::Contract => "contract",
            Kind::Filter => "filter",
            Kind::Settings => "settings",
        }
    }
}

/// A field violation for `google.rpc.BadRequest`: (field path, description).
pub type Violation = (String, String);

pub trait Resource: Message + Default + Clone + Send + Sync + 'static {
    const KIND: Kind;
    /// The protobuf full name, for field masks through reflection.
    const PROTO_NAME: &'static str;
    /// The name of the request field that carries it (`mailbox`), for violation paths.
    const FIELD: &'static str;

    fn id(&self) -> &str;
    fn set_id(&mut self, id: String);
    fn name(&self) -> &str;
    fn set_times(&mut self, created: Option<prost_types::Timestamp>, updated: Option<prost_types::Timestamp>);
    /// The list order; names by default.
    fn sort_key(&self) -> String {
        self.name().to_lowercase()
    }
    /// Secret field paths and mutable access to them.
    fn secret_fields(&mut self) -> Vec<(&'static str, &mut String)> {
        Vec::new()
    }
    /// Sets the `has_*` flag of a secret path.
    fn mark_secret(&mut self, _path: &str, _present: bool) {}
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    /// Checks of this resource alone (references are checked by the caller).
    fn validate(&self) -> Vec<Violation>;
    /// Fills defaults on create.
    fn defaults(&mut self) {}
    /// This kind's items in a snapshot, in list order.
    fn in_snapshot(snapshot: &pb::ConfigSnapshot) -> &[Self];
}

fn required(v: &mut Vec<Violation>, field: &str, value: &str) {
    if value.trim().is_empty() {
        v.push((field.to_owned(), "is required".to_owned()));
    }
}

fn name_rules(v: &mut Vec<Violation>, value: &str) {
    required(v, "name", value);
    if value.chars().count() > 200 {
        v.push(("name".to_owned(), "is longer than 200 characters".to_owned()));
    }
    if value.chars().any(char::is_control) {
        v.push(("name".to_owned(), "contains control characters".to_owned()));
    }
}

fn reference(field: &'static str, kind: Kind, id: &str) -> Option<Reference> {
    (!id.is_empty()).then(|| Reference { field, kind, id: id.to_owned() })
}

/// A plausible mail address: local@domain, no spaces or control characters.
pub fn is_address(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !value.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
}

fn address_rule(v: &mut Vec<Violation>, field: &str, value: &str) {
    if !value.is_empty() && !is_address(value) {
        v.push((field.to_owned(), format!("{value:?} is not a mail address")));
    }
}

fn host_rule(v: &mut Vec<Violation>, field: &str, value: &str) {
    if value.is_empty() {
        v.push((field.to_owned(), "is required".to_owned()));
    } else if value.len() > 253 || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        v.push((field.to_owned(), format!("{value:?} is not a host name or address")));
    }
}

fn port_rule(v: &mut Vec<Violation>, field: &str, value: u32) {
    if value == 0 || value > 65535 {
        v.push((field.to_owned(), format!("{value} is not a port (1-65535)")));
    }
}

fn oauth2_rules(v: &mut Vec<Violation>, prefix: &str, o: Option<&pb::OAuth2>, has_token: bool) {
    let Some(o) = o else {
        v.push((format!("{prefix}.oauth2"), "is required when auth is OAUTH2".to_owned()));
        return;
    };
    required(v, &format!("{prefix}.oauth2.client_id"), &o.client_id);
    if !(o.token_url.starts_with("https://") || o.token_url.starts_with("http://")) {
        v.push((format!("{prefix}.oauth2.token_url"), format!("{:?} is not an http(s) URL", o.token_url)));
    }
    if !has_token {
        v.push((format!("{prefix}.oauth2.refresh_token"), "is required when auth is OAUTH2".to_owned()));
    }
}

/// The accessors every resource but the settings has the same way (`id`, a name field,
/// `create_time`, `update_time`).
macro_rules! common_accessors {
    ($name:ident) => {
        fn id(&self) -> &str {
            &self.id
        }
        fn set_id(&mut self, id: String) {
            self.id = id;
        }
        fn name(&self) -> &str {
            &self.$name
        }
        fn set_times(
            &mut self,
            created: Option<prost_types::Timestamp>,
            updated: Option<prost_types::Timestamp>,
        ) {
            self.create_time = created;
            self.update_time = updated;
        }
    };
}

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

impl Resource for pb::Queue {
    fn in_snapshot(snapshot: &pb::ConfigSnapshot) -> &[Self] {
        &snapshot.queues
    }
    const KIND: Kind = Kind::Queue;
    const PROTO_NAME: &'static str = "deskmail.v1.Queue";
    const FIELD: &'static str = "queue";

    common_accessors!(name);
    fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        name_rules(&mut v, &self.name);
        if self.auto_reply_subject.chars().any(char::is_control) {
            v.push(("auto_reply_subject".to_owned(), "contains control characters".to_owned()));
        }
        v
    }
}

impl Resource for pb::SystemAddress {
    fn in_snapshot(snapshot: &pb::ConfigSnapshot) -> &[Self] {
        &snapshot.system_addresses
    }
    const KIND: Kind = Kind::SystemAddress;
    const PROTO_NAME: &'static str = "deskmail.v1.SystemAddress";
    const FIELD: &'static str = "system_address";

    common_accessors!(address);
    fn defaults(&mut self) {
        self.address = self.address.trim().to_lowercase();
    }
    fn references(&self) -> Vec<Reference> {
        reference("queue_id", Kind::Queue, &self.queue_id).into_iter().collect()
    }
    fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        required(&mut v, "address", &self.address);
        address_rule(&mut v, "address", &self.address);
        required(&mut v, "queue_id", &self.queue_id);
        v
    }
}

impl Resource for pb::Company {
    fn in_snapshot(snapshot: &pb::ConfigSnapshot) -> &[Self] {
        &snapshot.companies
    }
    const KIND: Kind = Kind::Company;
    const PROTO_NAME: &'static str = "deskmail.v1.Company";
    const FIELD: &'static str = "company";

    common_accessors!(name);
    fn defaults(&mut self) {
        for d in &mut self.domains {
            *d = d.trim().trim_start_matches('@').to_lowercase();
        }
    }
    fn references(&self) -> Vec<Reference> {
        reference("outbound_mailbox_id", Kind::Mailbox, &self.outbound_mailbox_id).into_iter().collect()
    }
    fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        name_rules(&mut v, &self.name);
        for (i, d) in self.domains.iter().enumerate() {
            if !d.contains('.') || d.chars().any(|c| c.is_whitespace() || c == '@' || c.is_control()) {
                v.push((format!("domains[{i}]"), format!("{d:?} is not a domain")));
            }
        }
        v
    }
}

impl Resource for pb::Contract {
    fn in_snapshot(snapshot: &pb::ConfigSnapshot) -> &[Self] {
        &snapshot.contracts
    }
    const KIND: Kind = Kind::Contract;
    const PROTO_NAME: &'static str = "deskmail.v1.Contract";
    const FIELD: &'static str = "contract";

    common_accessors!(name);
    fn references(&self) -> Vec<Reference> {
        [
            reference("company_id", Kind::Company, &self.company_id),
            reference("outbound_mailbox_id", Kind::Mailbox, &self.outbound_mailbox_id),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
    fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        name_rules(&mut v, &self.name);
        required(&mut v, "company_id", &self.company_id);
        v
    }
}

impl Resource for pb::Filter {
    fn in_snapshot(snapshot: &pb::ConfigSnapshot) -> &[Self] {
        &snapshot.filters
    }
    const KIND: Kind = Kind::Filter;
    const PROTO_NAME: &'static str = "deskmail.v1.Filter";
    const FIELD: &'static str = "filter";

    common_accessors!(name);
    fn sort_key(&self) -> String {
        // Order by position (signed, so offset into u32 range), then name.
        let pos = i64::from(self.position) + i64::from(i32::MAX) + 1;
        format!("{pos:010}:{}", self.name.to_lowercase())
    }
    fn defaults(&mut self) {
        if self.enabled.is_none() {
            self.enabled = Some(true);
        }
    }
    fn references(&self) -> Vec<Reference> {
        let id = self.action.as_ref().map(|a| a.set_queue_id.as_str()).unwrap_or("");
        reference("action.set_queue_id", Kind::Queue, id).into_iter().collect()
    }
    fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        name_rules(&mut v, &self.name);
        required(&mut v, "header", &self.header);
        if self.header.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control()) {
            v.push(("header".to_owned(), format!("{:?} is not a header name", self.header)));
        }
        if let Err(e) = regex::RegexBuilder::new(&self.pattern).size_limit(1 << 20).build() {
            v.push(("pattern".to_owned(), format!("not a regular expression: {e}")));
        }
        match &self.action {
            None => v.push(("action".to_owned(), "is required".to_owned())),
            Some(a) => {
                if a.set_priority > 5 {
                    v.push((
                        "action.set_priority".to_owned(),
                        format!("{} is not a priority (1-5)", a.set_priority),
                    ));
                }
                if a.set_queue_id.is_empty() && a.set_priority == 0 && !a.ignore {
                    v.push((
                        "action".to_owned(),
                        "does nothing: set a queue, a priority or ignore".to_owned(),
                    ));
                }
            }
        }
        v
    }
}

impl Resource for pb::Settings {
    fn in_snapshot(snapshot: &pb::ConfigSnapshot) -> &[Self] {
        snapshot.settings.as_slice()
    }
    const KIND: Kind = Kind::Settings;
    const PROTO_NAME: &'static str = "deskmail.v1.Settings";
    const FIELD: &'static str = "settings";

    fn id(&self) -> &str {
        "settings"
    }
    fn set_id(&mut self, _id: String) {}
    fn name(&self) -> &str {
        "settings"
    }
    fn set_times(
        &mut self,
        _created: Option<prost_types::Timestamp>,
        updated: Option<prost_types::Timestamp>,
    ) {
        self.update_time = updated;
    }
    fn references(&self) -> Vec<Reference> {
        reference("default_outbound_mailbox_id", Kind::Mailbox, &self.default_outbound_mailbox_id)
            .into_iter()
            .collect()
    }
    fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        required(&mut v, "ticket_hook", &self.ticket_hook);
        if self.ticket_hook.chars().any(|c| c.is_whitespace() || c.is_control() || c == '[' || c == ']') {
            v.push((
                "ticket_hook".to_owned(),
                format!("{:?} may not contain spaces or brackets", self.ticket_hook),
            ));
        }
        if self.system_id > 99 {
            v.push(("system_id".to_owned(), format!("{} is not a 2-digit system id (0-99)", self.system_id)));
        }
        if pb::NumberFormat::try_from(self.number_format).unwrap_or_default() == pb::NumberFormat::Unspecified
        {
            v.push(("number_format".to_owned(), "must be DATE or AUTO_INCREMENT".to_owned()));
        }
        v
    }
}

/// The settings a fresh installation starts with.
pub fn default_settings() -> pb::Settings {
    pb::Settings {
        ticket_hook: "Ticket#".to_owned(),
        number_format: pb::NumberFormat::Date as i32,
        system_id: 10,
        default_outbound_mailbox_id: String::new(),
        auto_reply_limit_per_day: 10,
        ignore_unknown_senders: false,
        update_time: None,
    }
}
