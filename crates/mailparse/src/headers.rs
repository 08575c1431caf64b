//! Top-level headers: every header decoded, addresses, thread ids, and the loop signals.

use mail_parser::parsers::MessageStream;
use mail_parser::{Addr, HeaderName, HeaderValue, Message, MessagePart, MimeHeaders};

use crate::parse::{content_type_of, truncate_str};
use crate::types::{Address, Limits, LoopSignals, ParsedMail};

/// What is read from the top-level header block.
pub(crate) struct TopHeaders {
    headers: Vec<(String, String)>,
    message_id: Option<String>,
    in_reply_to: Vec<String>,
    references: Vec<String>,
    from: Vec<Address>,
    reply_to: Vec<Address>,
    sender: Vec<Address>,
    to: Vec<Address>,
    cc: Vec<Address>,
    delivered_to: Vec<String>,
    x_original_to: Vec<String>,
    subject: String,
    date: Option<i64>,
}

impl TopHeaders {
    pub(crate) fn read(raw: &[u8], msg: &Message<'_>, limits: &Limits, problems: &mut Vec<String>) -> Self {
        let mut t = TopHeaders {
            headers: Vec::new(),
            message_id: None,
            in_reply_to: Vec::new(),
            references: Vec::new(),
            from: Vec::new(),
            reply_to: Vec::new(),
            sender: Vec::new(),
            to: Vec::new(),
            cc: Vec::new(),
            delivered_to: Vec::new(),
            x_original_to: Vec::new(),
            subject: String::new(),
            date: None,
        };
        let Some(root) = msg.parts.first() else {
            return t;
        };
        // Guessed only when some header needs it (chardetng is not free).
        let mut fallback: Option<FallbackCharset> = None;
        for h in &root.headers {
            let field = h.offset_field as usize;
            let start = h.offset_start as usize;
            let end = h.offset_end as usize;
            let name_raw = raw.get(field..start).unwrap_or_default();
            let name = String::from_utf8_lossy(name_raw)
                .trim_end_matches(|c: char| c == ':' || c.is_whitespace())
                .trim_start()
                .to_owned();
            let name = if name.is_empty() { h.name.as_str().to_owned() } else { name };
            let mut value_raw = raw.get(start..end).unwrap_or_default();
            let cut_buf: Vec<u8>;
            let oversized = value_raw.len() > limits.max_header_bytes;
            if oversized {
                problems.push(format!(
                    "header {} is {} bytes, more than the limit of {}; only the first {} bytes were read",
                    truncate_str(&name, 64),
                    value_raw.len(),
                    limits.max_header_bytes,
                    limits.max_header_bytes
                ));
                // Cut before a UTF-8 continuation byte, not inside a character.
                let mut cut = limits.max_header_bytes;
                while cut > 0 && value_raw.get(cut).is_some_and(|b| (0x80..0xc0).contains(b)) {
                    cut -= 1;
                }
                // mail-parser's field parsers read up to the line end: give them one.
                cut_buf = [value_raw.get(..cut).unwrap_or_default(), b"\r\n"].concat();
                value_raw = &cut_buf;
            }
            // Raw 8-bit header text (no encoded words) is read in the mail's charset;
            // mail-parser would read it as UTF-8 with replacement characters.
            // Only when reading it as UTF-8 fails (8-bit bytes inside an encoded word are
            // fine: the word names their charset).
            let mut value = decode_unstructured(value_raw);
            let recoded: Option<Vec<u8>> =
                if value.contains('\u{fffd}') && std::str::from_utf8(value_raw).is_err() {
                    let bytes = fallback
                        .get_or_insert_with(|| FallbackCharset::of(raw, msg))
                        .decode(value_raw)
                        .into_bytes();
                    let again = decode_unstructured(&bytes);
                    if again.contains('\u{fffd}') {
                        None
                    } else {
                        value = again;
                        Some(bytes)
                    }
                } else {
                    None
                };
            if value.len() > limits.max_header_bytes {
                value = truncate_str(&value, limits.max_header_bytes).to_owned();
            }
            let reparse = oversized || recoded.is_some();
            let value_bytes: &[u8] = recoded.as_deref().unwrap_or(value_raw);
            let value_bytes_nl: Vec<u8>;
            let value_bytes: &[u8] = if value_bytes.ends_with(b"\n") {
                value_bytes
            } else {
                value_bytes_nl = [value_bytes, b"\r\n"].concat();
                &value_bytes_nl
            };

            // Structured fields: mail-parser's value, or the capped/recoded value parsed again.
            let addrs = |hv: &HeaderValue<'_>| -> Vec<Address> {
                if reparse {
                    addresses(&MessageStream::new(value_bytes).parse_address())
                } else {
                    addresses(hv)
                }
            };
            match &h.name {
                HeaderName::MessageId if t.message_id.is_none() => {
                    t.message_id = ids(&h.value).into_iter().next();
                }
                HeaderName::InReplyTo => t.in_reply_to.extend(ids(&h.value)),
                HeaderName::References => t.references.extend(ids(&h.value)),
                HeaderName::From => t.from.extend(addrs(&h.value)),
                HeaderName::ReplyTo => t.reply_to.extend(addrs(&h.value)),
                HeaderName::Sender => t.sender.extend(addrs(&h.value)),
                HeaderName::To => t.to.extend(addrs(&h.value)),
                HeaderName::Cc => t.cc.extend(addrs(&h.value)),
                HeaderName::Subject if t.subject.is_empty() => {
                    t.subject = match &h.value {
                        HeaderValue::Text(s) if !reparse => s.trim().to_owned(),
                        _ => value.clone(),
                    };
                }
                HeaderName::Date if t.date.is_none() => {
                    if let HeaderValue::DateTime(d) = &h.value
                        && d.is_valid()
                    {
                        t.date = Some(d.to_timestamp());
                    }
                }
                n if n.as_str().eq_ignore_ascii_case("Delivered-To") => {
                    t.delivered_to.extend(plain_addresses(&value));
                }
                n if n.as_str().eq_ignore_ascii_case("X-Original-To") => {
                    t.x_original_to.extend(plain_addresses(&value));
                }
                _ => {}
            }
            t.headers.push((name, value));
        }
        t
    }

    pub(crate) fn fill(self, out: &mut ParsedMail) {
        out.headers = self.headers;
        out.message_id = self.message_id;
        out.in_reply_to = self.in_reply_to;
        out.references = self.references;
        // The first From address that has an address (a broken first one, as in
        // `From: "x" <>, "y" <y@example.com>`, is passed over); else the first entry.
        out.from = self
            .from
            .iter()
            .find(|a| a.address.as_deref().is_some_and(|x| x.contains('@')))
            .or_else(|| self.from.first())
            .cloned();
        out.reply_to = self.reply_to;
        out.sender = self.sender.into_iter().next();
        out.to = self.to;
        out.cc = self.cc;
        out.delivered_to = self.delivered_to;
        out.x_original_to = self.x_original_to;
        out.subject = self.subject;
        out.date = self.date;
    }
}

/// An unstructured header value: unfolded, RFC 2047 decoded, trimmed.
pub(crate) fn decode_unstructured(value_raw: &[u8]) -> String {
    match MessageStream::new(value_raw).parse_unstructured() {
        HeaderValue::Text(s) => s.trim().to_owned(),
        _ => String::new(),
    }
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    let clean = |s: &str| s.trim().trim_start_matches('<').trim_end_matches('>').trim().to_owned();
    match v {
        HeaderValue::Text(s) => vec![clean(s)],
        HeaderValue::TextList(l) => l.iter().map(|s| clean(s)).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

fn addr(a: &Addr<'_>) -> Address {
    Address {
        address: a.address.as_ref().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
        name: a.name.as_ref().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
    }
}

/// The addresses of an address header; members of groups are listed, an empty group is
/// one entry without an address.
pub(crate) fn addresses(v: &HeaderValue<'_>) -> Vec<Address> {
    match v {
        HeaderValue::Address(mail_parser::Address::List(l)) => l.iter().map(addr).collect(),
        HeaderValue::Address(mail_parser::Address::Group(groups)) => {
            let mut out = Vec::new();
            for g in groups {
                if g.addresses.is_empty() {
                    out.push(Address { address: None, name: g.name.as_ref().map(|s| s.trim().to_owned()) });
                }
                out.extend(g.addresses.iter().map(addr));
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Bare addresses of a Delivered-To/X-Original-To style header, lowercased.
fn plain_addresses(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| {
            let s = s.trim();
            let s = match (s.find('<'), s.rfind('>')) {
                (Some(a), Some(b)) if a < b => s.get(a + 1..b).unwrap_or(s),
                _ => s,
            };
            s.trim().to_lowercase()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The loop signals of a parsed mail.
pub(crate) fn loop_signals(out: &ParsedMail, msg: &Message<'_>, parts: &[&MessagePart<'_>]) -> LoopSignals {
    let mut s = LoopSignals::default();
    for (name, value) in &out.headers {
        let lname = name.to_ascii_lowercase();
        let lvalue = value.trim().to_ascii_lowercase();
        match lname.as_str() {
            "auto-submitted" => {
                let token = lvalue.split(';').next().unwrap_or("").trim();
                if !token.is_empty() && token != "no" {
                    s.auto_submitted = true;
                }
            }
            "x-autoreply" | "x-autorespond" | "x-auto-response-suppress" | "x-autogenerated" => {
                s.auto_submitted = true;
            }
            "precedence" => {
                let token = lvalue.split([';', ' ']).next().unwrap_or("").trim();
                match token {
                    "bulk" | "junk" | "list" if s.precedence.is_none() => {
                        s.precedence = Some(token.to_owned());
                    }
                    "auto_reply" | "auto-reply" => s.auto_submitted = true,
                    _ => {}
                }
            }
            "list-id" => s.list_id = true,
            "return-path" => {
                let v: String = lvalue.chars().filter(|c| !c.is_whitespace()).collect();
                if v == "<>" {
                    s.mailer_daemon = true;
                }
            }
            _ => {}
        }
    }
    if let Some(from) = out.from.as_ref().and_then(|a| a.address.as_deref()) {
        let local = from.rsplit_once('@').map_or(from, |(l, _)| l).to_ascii_lowercase();
        if local == "mailer-daemon" || local == "postmaster" {
            s.mailer_daemon = true;
        }
    }
    if let Some(ct) = msg.parts.first().and_then(|p| p.content_type())
        && ct.ctype().eq_ignore_ascii_case("multipart")
        && ct.subtype().is_some_and(|st| st.eq_ignore_ascii_case("report"))
        && ct.attribute("report-type").is_some_and(|r| r.eq_ignore_ascii_case("delivery-status"))
    {
        s.delivery_report = true;
    }
    if parts.iter().any(|p| {
        matches!(content_type_of(p).as_str(), "message/delivery-status" | "message/global-delivery-status")
    }) {
        s.delivery_report = true;
    }
    s
}

/// The charset raw 8-bit header text (no encoded words) is read in: guessed (chardetng)
/// from all the 8-bit header text of the mail together, which tells GBK from Latin-1
/// better than any one short field would; mail-parser would read it as UTF-8.
pub(crate) struct FallbackCharset {
    encoding: &'static encoding_rs::Encoding,
}

impl FallbackCharset {
    fn of(raw: &[u8], msg: &Message<'_>) -> Self {
        let mut det = chardetng::EncodingDetector::new();
        if let Some(root) = msg.parts.first() {
            for h in &root.headers {
                let v = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or_default();
                if !v.is_ascii() && std::str::from_utf8(v).is_err() {
                    det.feed(v, false);
                }
            }
        }
        det.feed(b"", true);
        Self { encoding: det.guess(None, true) }
    }

    fn decode(&self, bytes: &[u8]) -> String {
        self.encoding.decode_without_bom_handling(bytes).0.into_owned()
    }
}

/// Text of unknown charset that is not UTF-8, read in the charset chardetng guesses.
pub(crate) fn guess_decode(bytes: &[u8]) -> String {
    let mut det = chardetng::EncodingDetector::new();
    det.feed(bytes, true);
    det.guess(None, true).decode_without_bom_handling(bytes).0.into_owned()
}
