//! Building the mail of a job with lettre's builder (never by string concatenation): From,
//! `Sender:` when From is not the login, Reply-To, the envelope sender, read receipt, footer,
//! Message-ID on the box's domain, threading headers, the ticket number in the subject,
//! bodies, attachments and inline images, all UTF-8 and encoded by lettre. Pure: the
//! Message-ID and the time come in.

use std::time::SystemTime;

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};

use crate::boxes::OutboundBox;
use crate::job::ValidJob;

/// The header that carries the job id in every mail, for tracing a mail back to its job.
pub const JOB_ID_HEADER: &str = "X-Deskmail-Job-Id";

/// A mail ready for SMTP.
#[derive(Debug, Clone)]
pub struct Built {
    /// The RFC 5322 bytes, CRLF line ends.
    pub raw: Vec<u8>,
    pub envelope: Envelope,
    /// With angle brackets.
    pub message_id: String,
    /// `Some(login)` when a `Sender:` header was added because From is not the login.
    pub sender_header: Option<Address>,
    /// The subject as sent (ticket number included).
    pub subject: String,
}

/// Why a valid job cannot go out through this box.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(
        "from: {from} may not be used with box {mailbox:?}: only addresses on {allowed} (the box's sender or login domain)"
    )]
    ForeignFrom { from: String, mailbox: String, allowed: String },
    #[error("the mail cannot be built: {0}")]
    Lettre(String),
}

/// The namespace of [`message_id_for`]'s name-based UUIDs.
const MESSAGE_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6465_736b_6d61_696c_8000_6a6f_625f_6964);

/// `<uuid@domain>` on the box's sender domain, the UUID derived from the job id (RFC 9562
/// version 5): every attempt at one job carries the same Message-ID. A mail sent twice
/// because a crash fell between the server's 250 and the sent-log record (RFC 5321 section
/// 6.1) is then one message to the recipient, who can drop the copy, and the `mail.sent`
/// event names the Message-ID that arrived.
pub fn message_id_for(job_id: &str, b: &OutboundBox) -> String {
    format!(
        "<{}@{}>",
        uuid::Uuid::new_v5(&MESSAGE_ID_NAMESPACE, job_id.as_bytes()).simple(),
        b.from.email.domain()
    )
}

/// `[Ticket#N] subject` unless the subject already names `Ticket#N`.
pub fn subject_with_ticket(subject: &str, hook: &str, number: Option<&str>) -> String {
    let hook = if hook.trim().is_empty() { "Ticket#" } else { hook.trim() };
    match number.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) if !subject.contains(&format!("{hook}{n}")) => {
            if subject.is_empty() {
                format!("[{hook}{n}]")
            } else {
                format!("[{hook}{n}] {subject}")
            }
        }
        _ => subject.to_owned(),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("<br>\n"),
            c => out.push(c),
        }
    }
    out
}

fn text_with_footer(text: &str, footer: Option<&str>) -> String {
    match footer {
        Some(f) => format!("{}\n\n-- \n{f}\n", text.trim_end_matches(['\r', '\n'])),
        None => text.to_owned(),
    }
}

fn html_with_footer(html: &str, footer: Option<&str>) -> String {
    let Some(f) = footer else { return html.to_owned() };
    let block = format!("<div class=\"deskmail-footer\"><br>-- <br>\n{}</div>", html_escape(f));
    match html.to_ascii_lowercase().rfind("</body>") {
        Some(at) => format!("{}{block}{}", &html[..at], &html[at..]),
        None => format!("{html}{block}"),
    }
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// The login as an address, when it is one.
fn login_address(b: &OutboundBox) -> Option<Address> {
    b.auth.username().and_then(|u| u.trim().parse::<Address>().ok())
}

/// Whether the box may send with `from`: the box's own sender domain or its login's domain.
fn from_allowed(b: &OutboundBox, from: &Mailbox) -> Result<(), BuildError> {
    let mut domains = vec![b.from.email.domain().to_ascii_lowercase()];
    if let Some(login) = login_address(b) {
        domains.push(login.domain().to_ascii_lowercase());
    }
    domains.dedup();
    if domains.contains(&from.email.domain().to_ascii_lowercase()) {
        return Ok(());
    }
    Err(BuildError::ForeignFrom {
        from: from.email.to_string(),
        mailbox: b.name.clone(),
        allowed: domains.join(", "),
    })
}

/// Builds the mail of `job` for box `b`.
pub fn build(
    job: &ValidJob,
    b: &OutboundBox,
    ticket_hook: &str,
    message_id: String,
    now: SystemTime,
) -> Result<Built, BuildError> {
    let from = match &job.from {
        Some(f) => {
            from_allowed(b, f)?;
            f.clone()
        }
        None => b.from.clone(),
    };
    let subject = subject_with_ticket(&job.job.subject, ticket_hook, job.job.ticket_number.as_deref());
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .subject(subject.clone())
        .date(now)
        .message_id(Some(message_id.clone()));
    let sender_header = login_address(b)
        .filter(|login| !AsRef::<str>::as_ref(login).eq_ignore_ascii_case(from.email.as_ref()));
    if let Some(login) = &sender_header {
        builder = builder.sender(Mailbox::new(None, login.clone()));
    }
    for m in &job.to {
        builder = builder.to(m.clone());
    }
    for m in &job.cc {
        builder = builder.cc(m.clone());
    }
    for m in &job.bcc {
        builder = builder.bcc(m.clone());
    }
    if let Some(r) = job.reply_to.as_ref().or(b.reply_to.as_ref()) {
        builder = builder.reply_to(r.clone());
    }
    if let Some(id) = &job.in_reply_to {
        builder = builder.in_reply_to(id.clone());
    }
    if !job.references.is_empty() {
        builder = builder.references(job.references.join(" "));
    }
    if job.job.read_receipt {
        let to = b.read_receipt_to.as_ref().map_or(&from.email, |m| &m.email);
        builder = builder.raw_header(raw_header("Disposition-Notification-To", to.to_string()));
    }
    builder = builder.raw_header(raw_header(JOB_ID_HEADER, job.job.job_id.clone()));
    for (name, value) in &job.headers {
        builder = builder.raw_header(HeaderValue::new(name.clone(), value.clone()));
    }
    // The envelope: MAIL FROM is the box's return path, else the login (what servers that
    // check the envelope want), else From; RCPT TO is every recipient, Bcc included.
    let mail_from =
        b.return_path.clone().or_else(|| sender_header.clone()).unwrap_or_else(|| from.email.clone());
    let rcpts: Vec<Address> = job.to.iter().chain(&job.cc).chain(&job.bcc).map(|m| m.email.clone()).collect();
    let envelope = Envelope::new(Some(mail_from), rcpts).map_err(|e| BuildError::Lettre(e.to_string()))?;
    builder = builder.envelope(envelope.clone());

    let footer = b.footer.as_deref();
    let text = job.job.text.as_deref().filter(|t| !t.trim().is_empty()).map(|t| text_with_footer(t, footer));
    let html = job.job.html.as_deref().filter(|t| !t.trim().is_empty()).map(|h| html_with_footer(h, footer));
    let (inline, files): (Vec<_>, Vec<_>) =
        job.attachments.iter().partition(|a| a.content_id.is_some() && html.is_some());
    let html_part = html.map(|h| {
        if inline.is_empty() {
            Err(SinglePart::html(crate::encode::text_body(h)))
        } else {
            let mut related = MultiPart::related().singlepart(SinglePart::html(crate::encode::text_body(h)));
            for a in &inline {
                let cid = a.content_id.clone().unwrap_or_default();
                related = related.singlepart(
                    Attachment::new_inline_with_name(cid, a.filename.clone())
                        .body(a.content.clone(), a.content_type.clone()),
                );
            }
            Ok(related)
        }
    });
    // Body: text, html (with its inline parts), or both as alternatives.
    enum Body {
        Single(SinglePart),
        Multi(MultiPart),
    }
    let body = match (text, html_part) {
        (Some(t), None) => Body::Single(SinglePart::plain(crate::encode::text_body(t))),
        (None, Some(Err(h))) => Body::Single(h),
        (None, Some(Ok(related))) => Body::Multi(related),
        (Some(t), Some(h)) => {
            let alt = MultiPart::alternative().singlepart(SinglePart::plain(crate::encode::text_body(t)));
            Body::Multi(match h {
                Err(single) => alt.singlepart(single),
                Ok(related) => alt.multipart(related),
            })
        }
        (None, None) => return Err(BuildError::Lettre("no body".into())),
    };
    let message = if files.is_empty() {
        match body {
            Body::Single(s) => builder.singlepart(s),
            Body::Multi(m) => builder.multipart(m),
        }
    } else {
        let mut mixed = match body {
            Body::Single(s) => MultiPart::mixed().singlepart(s),
            Body::Multi(m) => MultiPart::mixed().multipart(m),
        };
        for a in files {
            mixed = mixed.singlepart(
                Attachment::new(a.filename.clone()).body(a.content.clone(), a.content_type.clone()),
            );
        }
        builder.multipart(mixed)
    }
    .map_err(|e| BuildError::Lettre(e.to_string()))?;
    Ok(Built { raw: message.formatted(), envelope, message_id, sender_header, subject })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deskmail_core::{JobAttachment, OutboundJob};
    use deskmail_proto::v1 as pb;

    use super::*;
    use crate::boxes::outbound_box;
    use crate::job::validate;

    fn the_box(footer: bool) -> OutboundBox {
        let m = pb::Mailbox {
            id: "m1".into(),
            name: "support".into(),
            outbound: Some(pb::OutboundSettings {
                host: "127.0.0.1".into(),
                port: 25,
                security: pb::Security::None as i32,
                auth: pb::AuthMethod::Password as i32,
                username: "relay-user@desk.test".into(),
                password: "pw".into(),
                from_address: "support@desk.test".into(),
                from_name: "Support Désk".into(),
                footer: "Acme Support\nhttps://desk.test".into(),
                append_footer: footer,
                return_path: "bounces@desk.test".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        outbound_box(&m, Duration::from_secs(5)).unwrap()
    }

    fn text(raw: &[u8]) -> String {
        String::from_utf8_lossy(raw).into_owned()
    }

    #[test]
    fn headers_envelope_and_footer() {
        let job = validate(OutboundJob {
            job_id: "job-42".into(),
            to: vec!["Kunde Müller <customer@client.test>".into()],
            bcc: vec!["hidden@client.test".into()],
            subject: "Grüße".into(),
            text: Some("Hallo".into()),
            html: Some("<html><body><p>Hallo</p></body></html>".into()),
            ticket_number: Some("2026112901000017".into()),
            in_reply_to: Some("orig@client.test".into()),
            references: vec!["a@client.test".into(), "orig@client.test".into()],
            read_receipt: true,
            headers: [("X-Custom".to_owned(), "Wert ä".to_owned())].into(),
            ..Default::default()
        })
        .unwrap();
        let b = the_box(true);
        let built = build(&job, &b, "Ticket#", "<id1@desk.test>".into(), SystemTime::UNIX_EPOCH).unwrap();
        let raw = text(&built.raw);
        assert!(raw.contains("Message-ID: <id1@desk.test>\r\n"), "{raw}");
        assert!(raw.contains("Sender: relay-user@desk.test\r\n"), "{raw}");
        assert!(raw.contains("In-Reply-To: <orig@client.test>\r\n"), "{raw}");
        assert!(raw.contains("References: <a@client.test> <orig@client.test>\r\n"), "{raw}");
        assert!(raw.contains("Disposition-Notification-To: support@desk.test\r\n"), "{raw}");
        assert!(raw.contains("X-Deskmail-Job-Id: job-42\r\n"), "{raw}");
        assert!(!raw.contains("hidden@client.test"), "Bcc must not be in the headers: {raw}");
        assert!(raw.contains("=?utf-8?"), "non-ASCII headers are encoded: {raw}");
        assert!(!raw.contains("Grüße"), "{raw}");
        assert_eq!(built.subject, "[Ticket#2026112901000017] Grüße");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert_eq!(built.envelope.from().map(ToString::to_string).as_deref(), Some("bounces@desk.test"));
        let rcpts: Vec<String> = built.envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(rcpts, ["customer@client.test", "hidden@client.test"]);
        assert!(raw.contains("Acme Support"), "footer: {raw}");
        assert_eq!(built.sender_header.map(|a| a.to_string()).as_deref(), Some("relay-user@desk.test"));
    }

    #[test]
    fn message_id_is_the_same_for_every_attempt_at_a_job() {
        let b = the_box(false);
        let first = message_id_for("job-42", &b);
        assert_eq!(first, message_id_for("job-42", &b));
        assert_ne!(first, message_id_for("job-43", &b));
        assert!(first.starts_with('<') && first.ends_with("@desk.test>"), "{first}");
        assert_eq!(first.len(), "<".len() + 32 + "@desk.test>".len(), "{first}");
    }

    #[test]
    fn ticket_subject_rules() {
        assert_eq!(subject_with_ticket("Hi", "Ticket#", Some("7")), "[Ticket#7] Hi");
        assert_eq!(subject_with_ticket("Re: [Ticket#7] Hi", "Ticket#", Some("7")), "Re: [Ticket#7] Hi");
        assert_eq!(subject_with_ticket("Hi", "", Some("7")), "[Ticket#7] Hi");
        assert_eq!(subject_with_ticket("Hi", "Case:", Some("7")), "[Case:7] Hi");
        assert_eq!(subject_with_ticket("Hi", "Ticket#", None), "Hi");
    }

    #[test]
    fn footer_goes_before_the_closing_body_tag() {
        let h = html_with_footer("<html><BODY><p>x</p></BODY></html>", Some("A & B"));
        assert!(h.ends_with("A &amp; B</div></BODY></html>"), "{h}");
        assert_eq!(text_with_footer("x\n", Some("F")), "x\n\n-- \nF\n");
    }

    #[test]
    fn foreign_from_is_refused_and_own_domain_allowed() {
        let b = the_box(false);
        let mut job = OutboundJob {
            job_id: "j".into(),
            to: vec!["c@client.test".into()],
            text: Some("x".into()),
            from: Some("Agent <agent@desk.test>".into()),
            ..Default::default()
        };
        let built =
            build(&validate(job.clone()).unwrap(), &b, "", "<a@desk.test>".into(), SystemTime::UNIX_EPOCH)
                .unwrap();
        assert!(text(&built.raw).contains("From: Agent <agent@desk.test>"));
        job.from = Some("ceo@elsewhere.test".into());
        let err = build(&validate(job).unwrap(), &b, "", "<a@desk.test>".into(), SystemTime::UNIX_EPOCH)
            .unwrap_err();
        assert!(err.to_string().contains("ceo@elsewhere.test may not be used"), "{err}");
    }

    #[test]
    fn attachments_and_inline_images() {
        let job = validate(OutboundJob {
            job_id: "j".into(),
            to: vec!["c@client.test".into()],
            html: Some("<p><img src=\"cid:logo\"></p>".into()),
            attachments: vec![
                JobAttachment {
                    filename: "logo.png".into(),
                    content_type: Some("image/png".into()),
                    content_base64: "iVBORw0KGgo=".into(),
                    content_id: Some("logo".into()),
                },
                JobAttachment {
                    filename: "Rechnung ä.pdf".into(),
                    content_base64: "JVBERi0=".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .unwrap();
        let built = build(&job, &the_box(false), "", "<a@desk.test>".into(), SystemTime::UNIX_EPOCH).unwrap();
        let raw = text(&built.raw);
        for want in [
            "multipart/mixed",
            "multipart/related",
            "Content-ID: <logo>",
            "application/octet-stream",
            "iVBORw0KGgo=",
        ] {
            assert!(raw.contains(want), "{want} missing: {raw}");
        }
    }
}
