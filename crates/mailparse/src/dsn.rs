//! Delivery status notifications (RFC 3464) and the non-standard bounces of older MTAs.

use mail_parser::{HeaderValue, MessageParser, MessagePart, PartType};

use crate::parse::content_type_of;
use crate::types::{Bounce, ParsedMail};

/// The bounce this mail is, when it is one: a delivery report, or a mail from the mailer
/// daemon that returns the original message.
pub(crate) fn bounce(out: &ParsedMail, parts: &[&MessagePart<'_>]) -> Option<Bounce> {
    let sig = &out.loop_signals;
    let mut b = Bounce::default();
    let mut has_status_part = false;
    let mut returned = false;
    for p in parts {
        let ct = content_type_of(p);
        match ct.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                has_status_part = true;
                read_status(&String::from_utf8_lossy(p.contents()), &mut b);
            }
            "message/rfc822" | "message/global" => {
                returned = true;
                if b.original_message_id.is_none() {
                    b.original_message_id = match &p.body {
                        PartType::Message(m) => m.message_id().map(clean_id),
                        _ => header_message_id(p.contents()),
                    };
                }
            }
            "text/rfc822-headers" | "text/global-headers" => {
                returned = true;
                if b.original_message_id.is_none() {
                    b.original_message_id = header_message_id(p.contents());
                }
            }
            _ => {}
        }
    }
    let is_bounce = has_status_part || sig.delivery_report || (sig.mailer_daemon && returned);
    // Older MTAs (qmail, some Exim set-ups) send a plain text bounce from the mailer daemon.
    let plain_bounce = !is_bounce && sig.mailer_daemon && looks_like_failure(out);
    if !is_bounce && !plain_bounce {
        return None;
    }
    if b.original_message_id.is_none()
        && let Some(text) = out.text_body.as_deref()
    {
        b.original_message_id = message_id_in_text(text);
    }
    if b.failed_recipients.is_empty() {
        for v in out.header_all("X-Failed-Recipients") {
            b.failed_recipients
                .extend(v.split(',').map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()));
        }
    }
    if b.status.is_none()
        && let Some(text) = out.text_body.as_deref()
    {
        b.status = status_in_text(text);
    }
    Some(b)
}

fn clean_id(s: &str) -> String {
    s.trim().trim_start_matches('<').trim_end_matches('>').trim().to_owned()
}

fn header_message_id(bytes: &[u8]) -> Option<String> {
    // The returned headers often end at the boundary, without the blank line.
    let mut block = bytes.to_vec();
    block.extend_from_slice(b"\r\n\r\n");
    let m = MessageParser::default().parse_headers(&block)?;
    match m
        .parts
        .first()
        .and_then(|p| p.headers.iter().find(|h| h.name == mail_parser::HeaderName::MessageId))
    {
        Some(h) => match &h.value {
            HeaderValue::Text(s) => Some(clean_id(s)),
            HeaderValue::TextList(l) => l.first().map(|s| clean_id(s)),
            _ => None,
        },
        None => None,
    }
}

/// Reads the per-message and per-recipient fields of a message/delivery-status body.
fn read_status(text: &str, b: &mut Bounce) {
    // Unfold: a line starting with white space continues the previous field.
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            fields.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut final_recipients = Vec::new();
    let mut original_recipients = Vec::new();
    for (n, v) in fields {
        match n.as_str() {
            "final-recipient" => final_recipients.push(recipient(&v)),
            "original-recipient" => original_recipients.push(recipient(&v)),
            "status" if b.status.is_none() => {
                let code = v.split_whitespace().next().unwrap_or("").to_owned();
                if !code.is_empty() {
                    b.status = Some(code);
                }
            }
            "diagnostic-code" if b.diagnostic.is_none() && !v.is_empty() => {
                b.diagnostic = Some(v);
            }
            _ => {}
        }
    }
    let list = if final_recipients.is_empty() { original_recipients } else { final_recipients };
    for r in list {
        if !r.is_empty() && !b.failed_recipients.contains(&r) {
            b.failed_recipients.push(r);
        }
    }
}

/// `rfc822; a@b` -> `a@b`, lowercased.
fn recipient(v: &str) -> String {
    let addr = v.split_once(';').map_or(v, |(_, a)| a).trim();
    addr.trim_start_matches('<').trim_end_matches('>').trim().to_lowercase()
}

fn looks_like_failure(out: &ParsedMail) -> bool {
    let s = out.subject.to_ascii_lowercase();
    [
        "undeliver",
        "delivery fail",
        "delivery status",
        "returned mail",
        "failure notice",
        "mail delivery",
        "delivery problem",
        "not delivered",
    ]
    .iter()
    .any(|w| s.contains(w))
}

/// The first `Message-ID: <...>` line quoted in a plain bounce text.
fn message_id_in_text(text: &str) -> Option<String> {
    for line in text.lines() {
        let l = line.trim_start_matches(['>', ' ', '\t']);
        if l.len() > 11 && l.get(..11).is_some_and(|p| p.eq_ignore_ascii_case("message-id:")) {
            let v = l.get(11..).unwrap_or("").trim();
            let id = clean_id(v.split_whitespace().next().unwrap_or(""));
            if !id.is_empty() {
                return Some(id);
            }
        }
    }
    None
}

/// The first enhanced status code (`5.1.1`) in a plain bounce text.
fn status_in_text(text: &str) -> Option<String> {
    for word in text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',') {
        let w = word.trim_end_matches(['.', ':', ';']);
        let mut it = w.split('.');
        let (Some(a), Some(b), Some(c), None) = (it.next(), it.next(), it.next(), it.next()) else {
            continue;
        };
        let digits =
            |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
        if matches!(a, "2" | "4" | "5") && digits(b, 3) && digits(c, 3) {
            return Some(w.to_owned());
        }
    }
    None
}
