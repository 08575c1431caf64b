//! The parser: mail-parser 0.11 underneath, limits, bodies, attachments and signals on top.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::html::html_to_text;
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

use crate::dsn;
use crate::headers::{self, TopHeaders};
use crate::types::{Attachment, AttachmentKind, Limits, ParseError, ParsedMail};

/// Parse one raw mail. `Err` only when not even the headers can be read or the mail is
/// larger than `limits.max_bytes`; otherwise `Ok` with what could not be read in `problems`.
pub fn parse(raw: &[u8], limits: &Limits) -> Result<ParsedMail, ParseError> {
    if raw.len() > limits.max_bytes {
        return Err(ParseError::TooLarge { size: raw.len(), max: limits.max_bytes });
    }
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Unreadable("the mail is empty".into()));
    }
    let mut problems = Vec::new();
    let msg = match parse_guarded(raw, false) {
        Ok(Some(msg)) => msg,
        Ok(None) => return Err(ParseError::Unreadable("no header could be read".into())),
        Err(why) => {
            // Last resort: the MIME structure made mail-parser fail; keep the headers.
            problems.push(format!(
                "the MIME structure could not be read (parser failure: {why}); only the headers were read"
            ));
            match parse_guarded(raw, true) {
                Ok(Some(msg)) => msg,
                _ => {
                    return Err(ParseError::Unreadable(
                        "the headers could not be read (parser failure)".into(),
                    ));
                }
            }
        }
    };
    if msg.parts.is_empty() {
        return Err(ParseError::Unreadable("no header could be read".into()));
    }
    Ok(build(raw, &msg, limits, problems))
}

/// mail-parser with a last-resort guard. mail-parser 0.11 has `debug_assert!(false, ..)`s
/// on some corrupted structures (multipart ends inside an attached message): in a release
/// build they are no-ops and it recovers what it can; in a debug build they panic. Any
/// panic there must not take the daemon down; its message is returned.
fn parse_guarded(raw: &[u8], headers_only: bool) -> Result<Option<Message<'_>>, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let parser = MessageParser::default();
        if headers_only { parser.parse_headers(raw) } else { parser.parse(raw) }
    }))
    .map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned())
    })
}

/// Which parts of the top-level message are within the limits.
struct Walk {
    /// `allowed[i]`: part `i` of the top-level message is within the limits.
    allowed: Vec<bool>,
    /// Parts seen so far (nested messages' parts included).
    seen: usize,
    depth_hit: bool,
    parts_hit: bool,
}

impl Walk {
    fn run(msg: &Message<'_>, limits: &Limits) -> Self {
        let mut w =
            Walk { allowed: vec![false; msg.parts.len()], seen: 0, depth_hit: false, parts_hit: false };
        w.visit(msg, 0, 0, limits, true);
        w
    }

    fn visit(&mut self, msg: &Message<'_>, id: usize, depth: usize, limits: &Limits, top: bool) {
        if depth > limits.max_depth {
            self.depth_hit = true;
            return;
        }
        if self.seen >= limits.max_parts {
            self.parts_hit = true;
            return;
        }
        let Some(part) = msg.parts.get(id) else {
            return;
        };
        self.seen += 1;
        if top && let Some(a) = self.allowed.get_mut(id) {
            *a = true;
        }
        match &part.body {
            PartType::Multipart(children) => {
                for &c in children {
                    // mail-parser's ids grow; a child at or before its parent would loop.
                    if (c as usize) > id {
                        self.visit(msg, c as usize, depth + 1, limits, top);
                    }
                }
            }
            PartType::Message(nested) if !nested.parts.is_empty() => {
                self.visit(nested, 0, depth + 1, limits, false);
            }
            _ => {}
        }
    }
}

fn build(raw: &[u8], msg: &Message<'_>, limits: &Limits, mut problems: Vec<String>) -> ParsedMail {
    let walk = Walk::run(msg, limits);
    if walk.depth_hit {
        problems.push(format!("MIME parts nested deeper than {} levels were not read", limits.max_depth));
    }
    if walk.parts_hit {
        problems.push(format!(
            "the mail has more than {} MIME parts; only the first {} were read",
            limits.max_parts, limits.max_parts
        ));
    }
    let allowed = |id: u32| walk.allowed.get(id as usize).copied().unwrap_or(false);

    let top = TopHeaders::read(raw, msg, limits, &mut problems);
    let mut out = ParsedMail { part_count: msg.parts.len(), ..ParsedMail::default() };
    top.fill(&mut out);

    // Bodies.
    let mut texts: Vec<Cow<'_, str>> = Vec::new();
    let mut htmls: Vec<Cow<'_, str>> = Vec::new();
    let mut body_ids: Vec<u32> = Vec::new();
    for &id in &msg.text_body {
        if !allowed(id) {
            continue;
        }
        if let Some(p) = msg.parts.get(id as usize)
            && let PartType::Text(t) = &p.body
        {
            texts.push(body_text_of(raw, p, t, &mut problems));
            body_ids.push(id);
        }
    }
    // The HTML body parts; an HTML part under text_body (no plain alternative) too.
    for &id in msg.html_body.iter().chain(msg.text_body.iter()) {
        if !allowed(id) || body_ids.contains(&id) {
            continue;
        }
        if let Some(p) = msg.parts.get(id as usize)
            && let PartType::Html(h) = &p.body
        {
            htmls.push(body_text_of(raw, p, h, &mut problems));
            body_ids.push(id);
        }
    }
    if !htmls.is_empty() {
        out.html_body = Some(join(&htmls));
    }
    // A blank plain part beside a real HTML part (some mailers send that): the HTML's
    // text is the body.
    let blank_plain = texts.iter().all(|t| t.trim().is_empty()) && htmls.iter().any(|h| !h.trim().is_empty());
    out.text_body = if !texts.is_empty() && !blank_plain {
        Some(join(&texts))
    } else {
        out.html_body.as_deref().map(html_to_text)
    };

    // Attachments and per-part problems.
    for (id, part) in msg.parts.iter().enumerate() {
        let id32 = u32::try_from(id).unwrap_or(u32::MAX);
        if !allowed(id32) {
            continue;
        }
        note_part_problems(id, part, &mut problems);
    }
    for &id in &msg.attachments {
        if !allowed(id) || body_ids.contains(&id) {
            continue;
        }
        let Some(part) = msg.parts.get(id as usize) else {
            continue;
        };
        if matches!(part.body, PartType::Text(_)) && content_type_of(part).starts_with("multipart/") {
            // A multipart whose boundary never came: not an attachment; what text it has
            // (boundary lines left out) is the body when there is no other.
            problems.push(format!(
                "part {id} is a {} without any part (boundary missing); read as text",
                content_type_of(part)
            ));
            let text = match &part.body {
                PartType::Text(t) => body_text_of(raw, part, t, &mut problems),
                _ => Cow::Borrowed(""),
            };
            let text: String = text
                .lines()
                .filter(|l| !l.starts_with("--") || l.trim().contains(' '))
                .collect::<Vec<_>>()
                .join("\n");
            if out.text_body.is_none() && !text.trim().is_empty() {
                out.text_body = Some(text);
            }
            continue;
        }
        if let Some(att) = attachment(raw, part) {
            out.attachments.push(att);
        }
    }

    // Signals and the delivery report.
    let parts_in_limits: Vec<&MessagePart<'_>> = msg
        .parts
        .iter()
        .enumerate()
        .filter(|(i, _)| walk.allowed.get(*i).copied().unwrap_or(false))
        .map(|(_, p)| p)
        .collect();
    out.loop_signals = headers::loop_signals(&out, msg, &parts_in_limits);
    out.bounce = dsn::bounce(&out, &parts_in_limits);
    out.problems = problems;
    out
}

/// The text of a body part; when it declares no charset (or one nobody knows) and is not
/// UTF-8 (mail-parser then reads it with replacement characters), read again in the
/// charset guessed.
fn body_text_of<'a>(
    raw: &[u8],
    part: &MessagePart<'_>,
    text: &'a str,
    problems: &mut Vec<String>,
) -> Cow<'a, str> {
    if !text.contains('\u{fffd}') {
        return Cow::Borrowed(text);
    }
    let declared = part
        .content_type()
        .and_then(|ct| ct.attribute("charset"))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !matches!(c.as_str(), "" | "us-ascii" | "ascii"));
    // A charset that is declared and known is trusted (its replacement characters are the
    // sender's); an unknown one (`unknown-8bit`, a typo) is guessed like a missing one.
    if declared
        .as_deref()
        .is_some_and(|c| matches!(c, "utf-8" | "utf8") || charset_decoder(c.as_bytes()).is_some())
    {
        return Cow::Borrowed(text);
    }
    let bytes: Cow<'_, [u8]> = match original_bytes(raw, part) {
        Some(b) => b,
        None => match raw.get(part.offset_body as usize..part.offset_end as usize) {
            Some(b) => Cow::Borrowed(b),
            None => return Cow::Borrowed(text),
        },
    };
    if std::str::from_utf8(&bytes).is_ok() {
        return Cow::Borrowed(text);
    }
    let again = crate::headers::guess_decode(&bytes);
    problems.push("a body part declares no known charset and is not UTF-8; its charset was guessed".into());
    Cow::Owned(again)
}

fn join(parts: &[Cow<'_, str>]) -> String {
    if parts.len() == 1 {
        return parts.first().map(|s| s.to_string()).unwrap_or_default();
    }
    let mut s = String::new();
    for p in parts {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(p);
    }
    s
}

/// `type/subtype` of a part, lowercased, with mail-parser's defaults for a missing header.
pub(crate) fn content_type_of(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(st) => format!("{}/{}", ct.ctype(), st).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => match &part.body {
            PartType::Text(_) => "text/plain".into(),
            PartType::Html(_) => "text/html".into(),
            PartType::Message(_) => "message/rfc822".into(),
            PartType::Multipart(_) => "multipart/mixed".into(),
            PartType::Binary(_) | PartType::InlineBinary(_) => "application/octet-stream".into(),
        },
    }
}

fn note_part_problems(id: usize, part: &MessagePart<'_>, problems: &mut Vec<String>) {
    if part.is_encoding_problem {
        problems.push(format!(
            "part {id} ({}) could not be decoded as declared; kept as it was written",
            content_type_of(part)
        ));
    }
    if matches!(part.body, PartType::Text(_) | PartType::Html(_))
        && let Some(cs) = part.content_type().and_then(|ct| ct.attribute("charset"))
    {
        let l = cs.trim().to_ascii_lowercase();
        let known_utf8 = matches!(
            l.as_str(),
            "utf-8" | "utf8" | "us-ascii" | "ascii" | "" | "unicode-1-1-utf-8" | "x-unknown"
        );
        if !known_utf8 && charset_decoder(cs.trim().as_bytes()).is_none() {
            problems.push(format!(
                "part {id}: unknown charset {:?}; read as UTF-8 with replacement characters",
                truncate_str(cs, 64)
            ));
        }
    }
}

pub(crate) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

fn attachment(raw: &[u8], part: &MessagePart<'_>) -> Option<Attachment> {
    let content_type = content_type_of(part);
    let filename = part.attachment_name().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let content_id = part
        .content_id()
        .map(|c| c.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
        .filter(|c| !c.is_empty());
    let disposition = part.content_disposition();
    let disp_attachment = disposition.is_some_and(|d| d.is_attachment());
    let disp_inline = disposition.is_some_and(|d| d.is_inline());
    let is_winmail = content_type == "application/ms-tnef"
        || content_type == "application/vnd.ms-tnef"
        || filename.as_deref().is_some_and(|f| f.eq_ignore_ascii_case("winmail.dat"));

    let (kind, content): (AttachmentKind, Cow<'_, [u8]>) = match &part.body {
        PartType::Multipart(_) => return None,
        PartType::Message(m) => (AttachmentKind::Message, Cow::Borrowed(m.raw_message())),
        PartType::Text(_) | PartType::Html(_) => {
            let kind = if filename.is_none() && !disp_attachment {
                AttachmentKind::Alternative
            } else {
                AttachmentKind::File
            };
            // A file keeps its bytes as sent (transfer-decoded, not charset-converted);
            // an alternative body part is kept as UTF-8 text.
            let bytes = if kind == AttachmentKind::File {
                original_bytes(raw, part).unwrap_or(Cow::Borrowed(part.contents()))
            } else {
                Cow::Borrowed(part.contents())
            };
            (kind, bytes)
        }
        PartType::Binary(b) | PartType::InlineBinary(b) => {
            let shown_inline =
                disp_inline || matches!(part.body, PartType::InlineBinary(_)) && !disp_attachment;
            let kind = if is_winmail {
                AttachmentKind::Winmail
            } else if content_type.starts_with("image/")
                && !disp_attachment
                && (content_id.is_some() || shown_inline)
            {
                AttachmentKind::InlineImage
            } else {
                AttachmentKind::File
            };
            (kind, Cow::Borrowed(b.as_ref()))
        }
    };
    let inline = match kind {
        AttachmentKind::InlineImage => true,
        AttachmentKind::Alternative => false,
        _ => disp_inline || matches!(part.body, PartType::InlineBinary(_)) && !disp_attachment,
    };
    // x-uuencode (old Outlook and Eudora): decode it here, mail-parser keeps it as is.
    let (content, filename) = match uuencoded(part) {
        true => match crate::uu::decode(&content) {
            Some((bytes, name)) => (Cow::Owned(bytes), filename.or(name)),
            None => (content, filename),
        },
        false => (content, filename),
    };
    let sha256 = hex::encode(Sha256::digest(&content));
    Some(Attachment {
        filename,
        content_type,
        size: content.len(),
        content_id,
        inline,
        sha256,
        kind,
        content: content.into_owned(),
    })
}

fn uuencoded(part: &MessagePart<'_>) -> bool {
    part.content_transfer_encoding().is_some_and(|e| {
        let e = e.trim();
        e.eq_ignore_ascii_case("x-uuencode")
            || e.eq_ignore_ascii_case("uuencode")
            || e.eq_ignore_ascii_case("x-uue")
    })
}

/// The transfer-decoded bytes of a text part before charset conversion, read again from
/// the raw mail (mail-parser keeps only the converted text).
fn original_bytes<'a>(raw: &'a [u8], part: &MessagePart<'_>) -> Option<Cow<'a, [u8]>> {
    let start = part.offset_body as usize;
    let end = part.offset_end as usize;
    let body = raw.get(start..end)?;
    match part.encoding {
        mail_parser::Encoding::Base64 => mail_parser::decoders::base64::base64_decode(body).map(Cow::Owned),
        mail_parser::Encoding::QuotedPrintable => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body).map(Cow::Owned)
        }
        mail_parser::Encoding::None => {
            // Already identical unless a charset conversion happened.
            None
        }
    }
}
