//! Reading and checking an outbound job (pure: no I/O). Every refusal is a [`JobError`] whose
//! text is the `x-deskmail-error` of the dead letter, written for a person to act on.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use deskmail_core::OutboundJob;
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName};

/// Longest accepted `job_id` (it is also the AMQP `message_id`, a short string).
pub const MAX_JOB_ID: usize = 200;
/// Most recipients (to + cc + bcc) of one job.
pub const MAX_RECIPIENTS: usize = 500;

/// Headers a job may not set through `headers`: they have fields of their own, or are the
/// sender's to write.
const STRUCTURAL: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "return-path",
    "received",
    "mime-version",
    "disposition-notification-to",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
];

/// Why a job cannot be sent, ever (it is dead-lettered with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("the job is not valid JSON: {0}")]
    NotJson(String),
    #[error("the job does not have the outbound job shape (proto/outbound-job.schema.json): {0}")]
    Shape(String),
    #[error("job_id: {0}")]
    JobId(String),
    #[error("{field}: {value:?} is not an email address ({reason})")]
    Address { field: String, value: String, reason: String },
    #[error("no recipient: to, cc and bcc are all empty")]
    NoRecipient,
    #[error("too many recipients: {0} (at most {MAX_RECIPIENTS})")]
    TooManyRecipients(usize),
    #[error("no body: give text or html (or both)")]
    NoBody,
    #[error("{0}: contains a line break (CR or LF), refused as header injection")]
    LineBreak(String),
    #[error("headers: {0}")]
    Header(String),
    #[error("attachments[{index}] ({filename:?}): {reason}")]
    Attachment { index: usize, filename: String, reason: String },
    #[error("{field}: {value:?} is not a Message-ID")]
    MessageId { field: &'static str, value: String },
}

/// An attachment with its bytes decoded.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    pub content_type: ContentType,
    pub content: Vec<u8>,
    /// `Some` for an inline part (`cid:` in the HTML).
    pub content_id: Option<String>,
}

/// A job that passed every check, with its addresses parsed.
#[derive(Debug, Clone)]
pub struct ValidJob {
    pub job: OutboundJob,
    pub from: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub attachments: Vec<Attachment>,
    pub headers: Vec<(HeaderName, String)>,
    /// With angle brackets.
    pub in_reply_to: Option<String>,
    /// With angle brackets.
    pub references: Vec<String>,
}

/// Reads the JSON body of a job.
pub fn parse(body: &[u8]) -> Result<OutboundJob, JobError> {
    match serde_json::from_slice::<OutboundJob>(body) {
        Ok(job) => Ok(job),
        Err(e) if e.is_syntax() || e.is_eof() => Err(JobError::NotJson(e.to_string())),
        Err(e) => Err(JobError::Shape(e.to_string())),
    }
}

/// Checks everything that can be checked without config: ids, addresses, bodies, headers,
/// attachments, and that no header value can smuggle in a line break.
pub fn validate(job: OutboundJob) -> Result<ValidJob, JobError> {
    let id = job.job_id.trim();
    if id.is_empty() {
        return Err(JobError::JobId("is missing or empty".into()));
    }
    if job.job_id.len() > MAX_JOB_ID {
        return Err(JobError::JobId(format!("is {} bytes long (at most {MAX_JOB_ID})", job.job_id.len())));
    }
    if job.job_id.chars().any(char::is_control) {
        return Err(JobError::JobId("contains control characters".into()));
    }
    no_line_break("subject", &job.subject)?;
    if let Some(c) = &job.correlation_id {
        no_line_break("correlation_id", c)?;
    }
    if let Some(t) = &job.ticket_number {
        no_line_break("ticket_number", t)?;
    }
    let from = job.from.as_deref().map(|v| address("from", v)).transpose()?;
    let reply_to = job.reply_to.as_deref().map(|v| address("reply_to", v)).transpose()?;
    let list = |field: &str, values: &[String]| -> Result<Vec<Mailbox>, JobError> {
        values.iter().enumerate().map(|(i, v)| address(&format!("{field}[{i}]"), v)).collect()
    };
    let (to, cc, bcc) = (list("to", &job.to)?, list("cc", &job.cc)?, list("bcc", &job.bcc)?);
    let recipients = to.len() + cc.len() + bcc.len();
    if recipients == 0 {
        return Err(JobError::NoRecipient);
    }
    if recipients > MAX_RECIPIENTS {
        return Err(JobError::TooManyRecipients(recipients));
    }
    let has = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
    if !has(&job.text) && !has(&job.html) {
        return Err(JobError::NoBody);
    }
    let mut headers = Vec::with_capacity(job.headers.len());
    for (name, value) in &job.headers {
        headers.push(header(name, value)?);
    }
    let in_reply_to = job.in_reply_to.as_deref().map(|v| message_id("in_reply_to", v)).transpose()?;
    let references =
        job.references.iter().map(|v| message_id("references", v)).collect::<Result<Vec<_>, _>>()?;
    let attachments = job
        .attachments
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let bad = |reason: String| JobError::Attachment { index, filename: a.filename.clone(), reason };
            if a.filename.trim().is_empty() {
                return Err(bad("filename is empty".into()));
            }
            if a.filename.chars().any(char::is_control) {
                return Err(bad("filename contains control characters".into()));
            }
            let content = B64
                .decode(a.content_base64.trim())
                .map_err(|e| bad(format!("content_base64 is not standard base64: {e}")))?;
            let ct = a.content_type.as_deref().unwrap_or("application/octet-stream");
            let content_type =
                ContentType::parse(ct).map_err(|_| bad(format!("content_type {ct:?} is not a MIME type")))?;
            if let Some(cid) = &a.content_id
                && (cid.is_empty()
                    || cid.chars().any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>'))
            {
                return Err(bad(format!(
                    "content_id {cid:?} must be a non-empty token without <, > or spaces"
                )));
            }
            Ok(Attachment {
                filename: a.filename.clone(),
                content_type,
                content,
                content_id: a.content_id.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ValidJob { job, from, to, cc, bcc, reply_to, attachments, headers, in_reply_to, references })
}

fn no_line_break(field: &str, value: &str) -> Result<(), JobError> {
    if value.contains(['\r', '\n']) {
        return Err(JobError::LineBreak(field.to_owned()));
    }
    Ok(())
}

/// `Name <a@b>` or `a@b`.
pub fn address(field: &str, value: &str) -> Result<Mailbox, JobError> {
    no_line_break(field, value)?;
    value.trim().parse::<Mailbox>().map_err(|e| JobError::Address {
        field: field.to_owned(),
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

fn header(name: &str, value: &str) -> Result<(HeaderName, String), JobError> {
    let shown = format!("{name:?}");
    if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
        return Err(JobError::LineBreak(format!("headers[{shown}]")));
    }
    let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !valid_name {
        return Err(JobError::Header(format!(
            "{shown} is not a header name (printable ASCII without spaces or ':')"
        )));
    }
    if STRUCTURAL.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(JobError::Header(format!(
            "{shown} cannot be set through headers; use the job's own field"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(JobError::Header(format!("value of {shown} contains control characters")));
    }
    let header_name = HeaderName::new_from_ascii(name.to_owned())
        .map_err(|_| JobError::Header(format!("{shown} is not a header name (at most 76 characters)")))?;
    Ok((header_name, value.to_owned()))
}

/// A Message-ID with angle brackets: `<left@right>`, no spaces or controls.
fn message_id(field: &'static str, value: &str) -> Result<String, JobError> {
    let bad = || JobError::MessageId { field, value: value.to_owned() };
    let v = value.trim();
    let inner = v.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(v);
    if inner.is_empty()
        || !inner.contains('@')
        || inner.chars().any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>' || !c.is_ascii())
    {
        return Err(bad());
    }
    Ok(format!("<{inner}>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_job() -> OutboundJob {
        OutboundJob {
            job_id: "j1".into(),
            to: vec!["Customer <customer@client.test>".into()],
            subject: "Hello".into(),
            text: Some("body".into()),
            ..OutboundJob::default()
        }
    }

    #[test]
    fn a_minimal_job_passes() {
        let v = validate(ok_job()).unwrap();
        assert_eq!(v.to[0].email.to_string(), "customer@client.test");
    }

    #[test]
    fn every_kind_of_bad_job_is_refused_with_its_field() {
        type Change = fn(&mut OutboundJob);
        let cases: &[(Change, &str)] = &[
            (|j| j.job_id = String::new(), "job_id: is missing"),
            (|j| j.job_id = "x".repeat(300), "job_id: is 300 bytes"),
            (|j| j.to = vec!["not an address".into()], "to[0]: \"not an address\" is not an email address"),
            (|j| j.cc = vec!["a@b".into(), "@@".into()], "cc[1]"),
            (|j| j.to.clear(), "no recipient"),
            (|j| j.text = None, "no body"),
            (|j| j.text = Some("  ".into()), "no body"),
            (|j| j.subject = "Hi\r\nBcc: evil@x.test".into(), "subject: contains a line break"),
            (|j| j.from = Some("a@b.test\nBcc: e@x.test".into()), "from: contains a line break"),
            (
                |j| {
                    j.headers.insert("X-Ok".into(), "a\r\nBcc: e@x.test".into());
                },
                "headers[\"X-Ok\"]: contains a line break",
            ),
            (
                |j| {
                    j.headers.insert("X-Bad\nName".into(), "v".into());
                },
                "contains a line break",
            ),
            (
                |j| {
                    j.headers.insert("Bcc".into(), "e@x.test".into());
                },
                "\"Bcc\" cannot be set through headers",
            ),
            (
                |j| {
                    j.headers.insert("X A".into(), "v".into());
                },
                "is not a header name",
            ),
            (
                |j| {
                    j.attachments.push(deskmail_core::JobAttachment {
                        filename: "a.pdf".into(),
                        content_base64: "%%%".into(),
                        ..Default::default()
                    })
                },
                "attachments[0] (\"a.pdf\"): content_base64 is not standard base64",
            ),
            (
                |j| {
                    j.attachments.push(deskmail_core::JobAttachment {
                        filename: "a.pdf".into(),
                        content_base64: "aGk=".into(),
                        content_type: Some("nonsense".into()),
                        ..Default::default()
                    })
                },
                "content_type \"nonsense\" is not a MIME type",
            ),
            (
                |j| j.in_reply_to = Some("no-at-sign".into()),
                "in_reply_to: \"no-at-sign\" is not a Message-ID",
            ),
            (|j| j.references = vec!["<a b@c>".into()], "references"),
        ];
        for (change, want) in cases {
            let mut job = ok_job();
            change(&mut job);
            let err = validate(job).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn parse_tells_bad_json_from_a_bad_shape() {
        assert!(matches!(parse(b"{not json"), Err(JobError::NotJson(_))));
        let e = parse(br#"{"job_id":"a","to":["x@y.test"],"bogus":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        let e = parse(br#"{"job_id":"a","to":"x@y.test"}"#).unwrap_err();
        assert!(matches!(e, JobError::Shape(_)), "{e}");
    }

    #[test]
    fn message_ids_get_angle_brackets() {
        let mut job = ok_job();
        job.in_reply_to = Some("abc@host.test".into());
        job.references = vec!["<x@y.test>".into(), "z@w.test".into()];
        let v = validate(job).unwrap();
        assert_eq!(v.in_reply_to.as_deref(), Some("<abc@host.test>"));
        assert_eq!(v.references, ["<x@y.test>", "<z@w.test>"]);
    }
}
