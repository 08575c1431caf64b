//! The dispatch rules, built once per config snapshot from configd's `Watch` stream: the
//! router's own view of mailboxes, queues, system addresses, companies, filters and settings
//! (no prost type leaves this module).

use std::collections::HashMap;

use deskmail_proto::v1 as pb;
use regex::Regex;

/// How a mailbox's mail finds its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Every mail to this queue.
    ByQueue(String),
    /// Match the recipients against the system addresses; else the fallback queue.
    ByRecipient { fallback: Option<String> },
}

/// One inbound mailbox's dispatch settings.
#[derive(Debug, Clone)]
pub struct MailboxRules {
    pub id: String,
    pub name: String,
    pub dispatch: Dispatch,
    /// Honour `X-Deskmail-*` headers.
    pub trusted: bool,
    /// Whether it has an outbound (SMTP) part, so auto-replies can go out through it.
    pub has_outbound: bool,
}

/// One queue and its auto-reply.
#[derive(Debug, Clone)]
pub struct QueueRules {
    pub id: String,
    pub name: String,
    pub auto_reply: bool,
    pub auto_reply_subject: String,
    pub auto_reply_body: String,
}

/// An address mail is sent to, and its queue.
#[derive(Debug, Clone)]
pub struct SystemAddress {
    /// Lowercased.
    pub address: String,
    pub display_name: String,
    pub queue_id: Option<String>,
}

/// A postmaster filter, compiled.
#[derive(Debug, Clone)]
pub struct FilterRule {
    pub name: String,
    pub header: String,
    pub pattern: Regex,
    pub set_queue_id: Option<String>,
    pub set_priority: Option<i32>,
    pub ignore: bool,
    pub stop: bool,
}

/// Ticket numbers: date-based or a plain counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberFormat {
    /// `YYYYMMDD` + 2-digit system id + counter (at least 4 digits), per day.
    Date,
    AutoIncrement,
}

/// The global settings the router uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ticket_hook: String,
    pub number_format: NumberFormat,
    pub system_id: u32,
    pub auto_reply_limit_per_day: u32,
    pub ignore_unknown_senders: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ticket_hook: "Ticket#".to_owned(),
            number_format: NumberFormat::Date,
            system_id: 10,
            auto_reply_limit_per_day: 10,
            ignore_unknown_senders: false,
        }
    }
}

/// Everything dispatch needs, from one config snapshot.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub revision: u64,
    pub mailboxes: HashMap<String, MailboxRules>,
    pub queues: HashMap<String, QueueRules>,
    /// Lowercased queue name -> id, for `X-Deskmail-Queue: <name>`.
    pub queue_names: HashMap<String, String>,
    /// Lowercased address -> system address.
    pub addresses: HashMap<String, SystemAddress>,
    /// Lowercased domain -> company id.
    pub company_domains: HashMap<String, String>,
    /// Enabled filters in evaluation order.
    pub filters: Vec<FilterRule>,
    pub settings: Settings,
    /// Filters whose pattern did not compile (configd validates them; kept for the log).
    pub broken_filters: Vec<String>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_owned())
}

impl Rules {
    /// Builds the rules from a snapshot.
    pub fn from_snapshot(s: &pb::ConfigSnapshot) -> Rules {
        let mut rules = Rules { revision: s.revision, ..Rules::default() };
        for m in &s.mailboxes {
            let Some(inbound) = &m.inbound else { continue };
            let dispatch = if inbound.dispatch_mode == pb::DispatchMode::ByQueue as i32
                && let Some(q) = non_empty(&inbound.queue_id)
            {
                Dispatch::ByQueue(q)
            } else {
                Dispatch::ByRecipient {
                    fallback: non_empty(&inbound.fallback_queue_id).or_else(|| non_empty(&inbound.queue_id)),
                }
            };
            let has_outbound = m.outbound.as_ref().is_some_and(|o| !o.host.is_empty());
            rules.mailboxes.insert(
                m.id.clone(),
                MailboxRules {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    dispatch,
                    trusted: inbound.trusted,
                    has_outbound,
                },
            );
        }
        for q in &s.queues {
            rules.queue_names.insert(q.name.to_lowercase(), q.id.clone());
            rules.queues.insert(
                q.id.clone(),
                QueueRules {
                    id: q.id.clone(),
                    name: q.name.clone(),
                    auto_reply: q.auto_reply,
                    auto_reply_subject: q.auto_reply_subject.clone(),
                    auto_reply_body: q.auto_reply_body.clone(),
                },
            );
        }
        for a in &s.system_addresses {
            let address = a.address.trim().to_lowercase();
            rules.addresses.insert(
                address.clone(),
                SystemAddress {
                    address,
                    display_name: a.display_name.clone(),
                    queue_id: non_empty(&a.queue_id),
                },
            );
        }
        for c in &s.companies {
            for d in &c.domains {
                let domain = d.trim().trim_start_matches('@').to_lowercase();
                if !domain.is_empty() {
                    rules.company_domains.entry(domain).or_insert_with(|| c.id.clone());
                }
            }
        }
        let mut filters: Vec<&pb::Filter> = s.filters.iter().filter(|f| f.enabled.unwrap_or(true)).collect();
        filters.sort_by(|a, b| a.position.cmp(&b.position).then_with(|| a.name.cmp(&b.name)));
        for f in filters {
            match Regex::new(&f.pattern) {
                Ok(pattern) => {
                    let action = f.action.clone().unwrap_or_default();
                    rules.filters.push(FilterRule {
                        name: f.name.clone(),
                        header: f.header.clone(),
                        pattern,
                        set_queue_id: non_empty(&action.set_queue_id),
                        set_priority: (1..=5)
                            .contains(&action.set_priority)
                            .then_some(action.set_priority as i32),
                        ignore: action.ignore,
                        stop: f.stop,
                    });
                }
                Err(_) => rules.broken_filters.push(f.name.clone()),
            }
        }
        if let Some(st) = &s.settings {
            let d = Settings::default();
            rules.settings = Settings {
                ticket_hook: non_empty(&st.ticket_hook).unwrap_or(d.ticket_hook),
                number_format: if st.number_format == pb::NumberFormat::AutoIncrement as i32 {
                    NumberFormat::AutoIncrement
                } else {
                    NumberFormat::Date
                },
                system_id: st.system_id.min(99),
                auto_reply_limit_per_day: st.auto_reply_limit_per_day,
                ignore_unknown_senders: st.ignore_unknown_senders,
            };
        }
        rules
    }

    /// A queue id from an `X-Deskmail-Queue` value: an id or a name (case-insensitive).
    pub fn queue_by_id_or_name(&self, v: &str) -> Option<String> {
        let v = v.trim();
        if self.queues.contains_key(v) {
            return Some(v.to_owned());
        }
        self.queue_names.get(&v.to_lowercase()).cloned()
    }

    /// The company claiming the domain of `address`.
    pub fn company_of(&self, address: &str) -> Option<String> {
        let domain = address.rsplit_once('@')?.1.trim().to_lowercase();
        self.company_domains.get(&domain).cloned()
    }
}
