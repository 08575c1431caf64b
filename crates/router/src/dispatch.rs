//! The pure part of routing: one raw mail and the rules in, a [`Plan`] out. No broker, no
//! database, no clock. What needs the tickets store (is this number or Message-ID known? how
//! many auto-replies did this sender get today?) is left as data for the store's transaction
//! (`store::batch`), which finishes the design's dispatch order:
//!
//! 1. dedup on the source id (store) 2. parse 3. trusted `X-Deskmail-*` headers
//! 4. postmaster filters 5. follow-up by number, else by Message-ID (store)
//! 6. new ticket queue: filter/header, else by mailbox, else by recipient, else fallback
//! 7. auto-reply unless a loop rule says no (the daily limit is counted in the store).

use deskmail_mailparse::{Attachment, AttachmentKind, Limits, ParseError, ParsedMail};
use regex::Regex;

use crate::autoreply::{self, AutoReplyDraft};
use crate::rules::{Dispatch, Rules};

/// Longest Message-ID kept (and looked up); PostgreSQL cannot index arbitrarily long text.
pub const MAX_MESSAGE_ID: usize = 250;

/// What to do with one mail.
#[derive(Debug)]
pub enum Plan {
    /// Store an article (follow-up or new ticket, decided in the transaction).
    Article(Box<ArticlePlan>),
    /// No ticket, no article: log the source id with the raw mail and the reason.
    Ignore { reason: String },
    /// Cannot be stored at all: dead-letter to `<prefix>.inbound.dead` with the reason.
    Dead { reason: String },
}

/// An article to store, with what the transaction needs to place it.
#[derive(Debug, Default)]
pub struct ArticlePlan {
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub from_address: String,
    pub from_name: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Parse errors and problems, in words.
    pub parse_error: Option<String>,
    pub is_auto_response: bool,
    pub is_bounce: bool,
    pub bounce_info: Option<String>,
    /// Step 5: the ticket number in the subject (after the hook).
    pub followup_number: Option<String>,
    /// Step 5: Message-IDs that may belong to a known ticket, most telling first (a bounce's
    /// original, then In-Reply-To, then References newest first).
    pub thread_ids: Vec<String>,
    /// Step 6: the queue of a new ticket (`None`: no rule gave one).
    pub queue_id: Option<String>,
    /// Priority from a header or filter (1-5).
    pub priority: Option<i32>,
    pub customer_address: String,
    pub customer_name: String,
    pub company_id: Option<String>,
    /// Set when a new ticket must not be opened (`ignore_unknown_senders`); a follow-up
    /// still lands on its ticket.
    pub ignore_if_new: Option<String>,
    /// Step 7: the auto-reply to send if this opens a new ticket and the daily limit allows.
    pub auto_reply: Option<AutoReplyDraft>,
    /// Why no auto-reply (for the log), when there is none.
    pub no_auto_reply: Option<&'static str>,
}

/// Parses and plans one mail.
pub fn plan(raw: &[u8], mailbox_id: Option<&str>, rules: &Rules, limits: &Limits) -> Plan {
    plan_timed(raw, mailbox_id, rules, limits).0
}

/// [`plan`], also returning the time spent parsing and the time spent applying the rules
/// (for the router's phase profile).
pub fn plan_timed(
    raw: &[u8],
    mailbox_id: Option<&str>,
    rules: &Rules,
    limits: &Limits,
) -> (Plan, std::time::Duration, std::time::Duration) {
    let start = std::time::Instant::now();
    let parsed = deskmail_mailparse::parse(raw, limits);
    let parsed_at = std::time::Instant::now();
    let plan = match parsed {
        Ok(mail) => plan_parsed(mail, raw, mailbox_id, rules),
        Err(e @ ParseError::TooLarge { .. }) => Plan::Dead { reason: e.to_string() },
        Err(e) => Plan::Article(Box::new(unparsable(&e.to_string(), mailbox_id, rules))),
    };
    (plan, parsed_at - start, parsed_at.elapsed())
}

/// An article for a mail that could not be parsed: the raw mail is kept, the error noted.
fn unparsable(error: &str, mailbox_id: Option<&str>, rules: &Rules) -> ArticlePlan {
    ArticlePlan {
        parse_error: Some(clean(error)),
        queue_id: mailbox_queue(mailbox_id, rules, None),
        no_auto_reply: Some("unparsable"),
        ..ArticlePlan::default()
    }
}

/// The queue by mailbox: its queue (by queue), else the recipient's queue, else its fallback.
fn mailbox_queue(mailbox_id: Option<&str>, rules: &Rules, recipient_queue: Option<String>) -> Option<String> {
    match mailbox_id.and_then(|id| rules.mailboxes.get(id)).map(|m| &m.dispatch) {
        Some(Dispatch::ByQueue(q)) => Some(q.clone()),
        Some(Dispatch::ByRecipient { fallback }) => recipient_queue.or_else(|| fallback.clone()),
        None => recipient_queue,
    }
}

/// Takes the parsed mail by value: its attachments' bytes move into the plan, not a copy.
fn plan_parsed(mut mail: ParsedMail, _raw: &[u8], mailbox_id: Option<&str>, rules: &Rules) -> Plan {
    let mailbox = mailbox_id.and_then(|id| rules.mailboxes.get(id));
    let mut queue_override: Option<String> = None;
    let mut priority: Option<i32> = None;
    let from_address =
        mail.from.as_ref().and_then(|a| a.address.clone()).map(|a| clean(&a)).unwrap_or_default();
    let from_name = mail.from.as_ref().and_then(|a| a.name.clone()).map(|a| clean(&a)).unwrap_or_default();
    let mut customer_address = from_address.clone();

    // 3. Trusted mailbox: X-Deskmail-* headers.
    if mailbox.is_some_and(|m| m.trusted) {
        if let Some(v) = mail.header("X-Deskmail-Ignore")
            && is_yes(v)
        {
            return Plan::Ignore { reason: "X-Deskmail-Ignore header".to_owned() };
        }
        if let Some(q) = mail.header("X-Deskmail-Queue").and_then(|v| rules.queue_by_id_or_name(v)) {
            queue_override = Some(q);
        }
        if let Some(p) = mail.header("X-Deskmail-Priority").and_then(|v| v.trim().parse::<i32>().ok())
            && (1..=5).contains(&p)
        {
            priority = Some(p);
        }
        if let Some(c) = mail.header("X-Deskmail-Customer").map(str::trim).filter(|c| c.contains('@')) {
            customer_address = clean(c.trim_matches(|ch| ch == '<' || ch == '>'));
        }
    }

    // 4. Postmaster filters.
    for f in &rules.filters {
        let matched = mail.header_all(&f.header).iter().any(|v| f.pattern.is_match(v));
        if !matched {
            continue;
        }
        if f.ignore {
            return Plan::Ignore { reason: format!("filter {:?}", f.name) };
        }
        if let Some(q) = &f.set_queue_id {
            queue_override = Some(q.clone());
        }
        if let Some(p) = f.set_priority {
            priority = Some(p);
        }
        if f.stop {
            break;
        }
    }

    // 5. Follow-up candidates (resolved against the store).
    let followup_number = ticket_number_in(&mail.subject, &rules.settings.ticket_hook);
    let mut thread_ids = Vec::new();
    if let Some(original) = mail.bounce.as_ref().and_then(|b| b.original_message_id.as_deref()) {
        thread_ids.push(message_id(original));
    }
    thread_ids.extend(mail.in_reply_to.iter().rev().map(|m| message_id(m)));
    thread_ids.extend(mail.references.iter().rev().map(|m| message_id(m)));
    thread_ids.retain(|m| !m.is_empty());
    thread_ids.dedup();

    // 6. The queue of a new ticket.
    let recipient = first_system_recipient(&mail, rules);
    let recipient_queue = recipient.and_then(|a| a.queue_id.clone());
    let queue_id = queue_override.or_else(|| mailbox_queue(mailbox_id, rules, recipient_queue));
    let company_id = rules.company_of(&customer_address);
    let ignore_if_new = (rules.settings.ignore_unknown_senders && company_id.is_none())
        .then(|| format!("sender {customer_address:?} belongs to no company (ignore_unknown_senders)"));

    // 7. Auto-reply, unless a loop rule says no.
    let (auto_reply, no_auto_reply) =
        match autoreply::draft(&mail, rules, queue_id.as_deref(), recipient, mailbox) {
            Ok(d) => (Some(d), None),
            Err(why) => (None, Some(why)),
        };

    let problems = (!mail.problems.is_empty()).then(|| clean(&mail.problems.join("; ")));
    let bounce_info = mail.bounce.as_ref().map(|b| {
        let mut parts = Vec::new();
        if let Some(s) = &b.status {
            parts.push(format!("status {s}"));
        }
        if let Some(d) = &b.diagnostic {
            parts.push(d.clone());
        }
        if !b.failed_recipients.is_empty() {
            parts.push(format!("failed: {}", b.failed_recipients.join(", ")));
        }
        clean(&parts.join("; "))
    });
    Plan::Article(Box::new(ArticlePlan {
        message_id: mail.message_id.as_deref().map(message_id).filter(|m| !m.is_empty()),
        in_reply_to: mail.in_reply_to.iter().map(|m| clean(m)).collect(),
        references: mail.references.iter().map(|m| clean(m)).collect(),
        from_address,
        from_name,
        to: mail.to.iter().map(display).collect(),
        cc: mail.cc.iter().map(display).collect(),
        subject: clean(&mail.subject),
        body_text: clean(mail.body_text()),
        body_html: mail.html_body.as_deref().map(clean),
        attachments: std::mem::take(&mut mail.attachments),
        parse_error: problems,
        is_auto_response: mail.loop_signals.is_auto_response(),
        is_bounce: mail.bounce.is_some() || mail.loop_signals.delivery_report,
        bounce_info,
        followup_number,
        thread_ids,
        queue_id,
        priority,
        customer_address,
        customer_name: from_name_or_empty(&mail),
        company_id,
        ignore_if_new,
        auto_reply,
        no_auto_reply,
    }))
}

fn from_name_or_empty(mail: &ParsedMail) -> String {
    mail.from.as_ref().and_then(|a| a.name.clone()).map(|n| clean(&n)).unwrap_or_default()
}

/// The first system address among To, Cc, Delivered-To, X-Original-To, in that order.
pub fn first_system_recipient<'r>(
    mail: &ParsedMail,
    rules: &'r Rules,
) -> Option<&'r crate::rules::SystemAddress> {
    let listed = mail.to.iter().chain(mail.cc.iter()).filter_map(|a| a.address_lowercase());
    let delivered = envelope_recipients(mail, &mail.delivered_to, "Delivered-To")
        .into_iter()
        .chain(envelope_recipients(mail, &mail.x_original_to, "X-Original-To"));
    listed.chain(delivered).find_map(|a| rules.addresses.get(a.trim()))
}

/// The parser's list of a trace header's addresses, or (when it has none) the addresses read
/// from the raw header values.
fn envelope_recipients(mail: &ParsedMail, parsed: &[String], header: &str) -> Vec<String> {
    if !parsed.is_empty() {
        return parsed.iter().map(|a| a.to_lowercase()).collect();
    }
    mail.header_all(header)
        .iter()
        .flat_map(|v| v.split(','))
        .map(|a| {
            let a = a.trim();
            let a = match (a.find('<'), a.rfind('>')) {
                (Some(s), Some(e)) if s < e => &a[s + 1..e],
                _ => a,
            };
            a.trim().to_lowercase()
        })
        .filter(|a| a.contains('@'))
        .collect()
}

/// `Name <address>` or `address`.
fn display(a: &deskmail_mailparse::Address) -> String {
    match (&a.name, &a.address) {
        (Some(n), Some(addr)) if !n.is_empty() => clean(&format!("{n} <{addr}>")),
        (_, Some(addr)) => clean(addr),
        (Some(n), None) => clean(n),
        (None, None) => String::new(),
    }
}

fn is_yes(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on")
}

/// The number after the ticket hook in a subject (`[Ticket#2026112910000012]`), if any.
///
/// The pattern is compiled once per thread and hook (compiling it took about 1 ms, more than
/// parsing the mail).
pub fn ticket_number_in(subject: &str, hook: &str) -> Option<String> {
    thread_local! {
        static HOOK: std::cell::RefCell<Option<(String, Regex)>> = const { std::cell::RefCell::new(None) };
    }
    HOOK.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.as_ref().is_none_or(|(h, _)| h != hook) {
            let pattern = format!(r"(?i){}\s*:?\s*(\d{{1,40}})", regex::escape(hook));
            *cached = Some((hook.to_owned(), Regex::new(&pattern).ok()?));
        }
        let (_, re) = cached.as_ref()?;
        re.captures(subject).and_then(|c| c.get(1)).map(|m| m.as_str().to_owned())
    })
}

/// A Message-ID as stored and looked up: no `<>`, no NUL, at most [`MAX_MESSAGE_ID`] bytes.
pub fn message_id(m: &str) -> String {
    let m = clean(m.trim().trim_start_matches('<').trim_end_matches('>'));
    truncate(&m, MAX_MESSAGE_ID).to_owned()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Text as the store takes it: PostgreSQL refuses NUL characters in text.
pub fn clean(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{fffd}") } else { s.to_owned() }
}

/// The stored name of an attachment kind.
pub fn kind_name(k: AttachmentKind) -> &'static str {
    match k {
        AttachmentKind::File => "file",
        AttachmentKind::InlineImage => "inline_image",
        AttachmentKind::Message => "message",
        AttachmentKind::Winmail => "winmail",
        AttachmentKind::Alternative => "alternative",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_numbers_in_subjects() {
        let cases = [
            ("Re: [Ticket#2026112910000012] printer", "Ticket#", Some("2026112910000012")),
            ("AW: ticket# 42 again", "Ticket#", Some("42")),
            ("[Case:7] x", "Case:", Some("7")),
            ("no number here", "Ticket#", None),
            ("Ticket#abc", "Ticket#", None),
        ];
        for (subject, hook, want) in cases {
            assert_eq!(ticket_number_in(subject, hook).as_deref(), want, "{subject}");
        }
    }

    #[test]
    fn message_ids_are_bounded_and_bare() {
        assert_eq!(message_id("<a@b>"), "a@b");
        assert_eq!(message_id(&"x".repeat(1000)).len(), MAX_MESSAGE_ID);
        assert_eq!(clean("a\0b"), "a\u{fffd}b");
    }
}

#[cfg(test)]
mod recipient_tests {
    use super::*;
    use crate::rules::SystemAddress;

    fn rules() -> Rules {
        let mut r = Rules::default();
        for (a, q) in [("sales@desk.test", "sales"), ("support@desk.test", "support")] {
            r.addresses.insert(
                a.into(),
                SystemAddress { address: a.into(), display_name: String::new(), queue_id: Some(q.into()) },
            );
        }
        r
    }

    #[test]
    fn recipients_in_design_order() {
        let cases = [
            ("To: x@else.test\r\nCc: sales@desk.test\r\nDelivered-To: support@desk.test\r\n", Some("sales")),
            ("To: x@else.test\r\nDelivered-To: SALES@DESK.TEST\r\n", Some("sales")),
            ("To: x@else.test\r\nX-Original-To: support@desk.test\r\n", Some("support")),
            ("To: Support <SUPPORT@desk.test>\r\nCc: sales@desk.test\r\n", Some("support")),
            ("To: x@else.test\r\n", None),
        ];
        for (headers, want) in cases {
            let raw = format!("From: a@b.test\r\n{headers}Subject: s\r\n\r\nbody\r\n");
            let mail = deskmail_mailparse::parse(raw.as_bytes(), &Limits::default()).unwrap();
            let got = first_system_recipient(&mail, &rules()).and_then(|a| a.queue_id.clone());
            assert_eq!(got.as_deref(), want, "{headers}");
        }
    }
}
