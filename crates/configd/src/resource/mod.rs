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

/// A client's value quoted for an error message: at most [`QUOTE_MAX`] characters of it, so
/// that a 1 MB value does not come back as a 1 MB status (which no client's metadata limit
/// takes: the connection is torn down instead).
pub fn quote(value: &str) -> String {
    let count = value.chars().count();
    if count <= QUOTE_MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(QUOTE_MAX).collect();
        format!("{head:?}... ({count} characters)")
    }
}

/// See [`quote`].
pub const QUOTE_MAX: usize = 64;

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
        v.push((field.to_owned(), format!("{} is not a mail address", quote(value))));
    }
}

fn host_rule(v: &mut Vec<Violation>, field: &str, value: &str) {
    if value.is_empty() {
        v.push((field.to_owned(), "is required".to_owned()));
    } else if value.len() > 253 || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        v.push((field.to_owned(), format!("{} is not a host name or address", quote(value))));
    }
}

fn port_rule(v: &mut Vec<Violation>, field: &str, value: u32) {
    if value == 0 || value > 65535 {
        v.push((field.to_owned(), format!("{value} is not a port (1-65535)")));
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

mod mailbox;

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
                v.push((format!("domains[{i}]"), format!("{} is not a domain", quote(d))));
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
            v.push(("header".to_owned(), format!("{} is not a header name", quote(&self.header))));
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
                format!("{} may not contain spaces or brackets", quote(&self.ticket_hook)),
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
