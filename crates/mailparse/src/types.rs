//! The public types of the parser.

/// Limits on what one mail may cost to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest raw mail accepted; larger ones are refused with [`ParseError::TooLarge`].
    pub max_bytes: usize,
    /// The most MIME parts (containers included) looked at; the rest are skipped and noted.
    pub max_parts: usize,
    /// The deepest nesting of multiparts and attached messages looked into.
    pub max_depth: usize,
    /// The most bytes of one header field (name and value, folded lines included); longer
    /// fields are cut and noted.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 * 1024, max_parts: 2000, max_depth: 50, max_header_bytes: 1024 * 1024 }
    }
}

/// One mail, parsed into what a ticket needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedMail {
    /// The Message-ID, without `<>`.
    pub message_id: Option<String>,
    /// The In-Reply-To ids, without `<>`.
    pub in_reply_to: Vec<String>,
    /// The References ids, without `<>`, oldest first.
    pub references: Vec<String>,
    /// The first From address (the first one with an address when the first is broken).
    pub from: Option<Address>,
    /// The Reply-To addresses.
    pub reply_to: Vec<Address>,
    /// The Sender address.
    pub sender: Option<Address>,
    /// The To addresses (members of groups included).
    pub to: Vec<Address>,
    /// The Cc addresses (members of groups included).
    pub cc: Vec<Address>,
    /// Every Delivered-To address, lowercased.
    pub delivered_to: Vec<String>,
    /// Every X-Original-To address, lowercased.
    pub x_original_to: Vec<String>,
    /// The subject, decoded (RFC 2047); `""` when there is none.
    pub subject: String,
    /// The Date, in unix seconds.
    pub date: Option<i64>,
    /// The plain-text body; derived from the HTML body when the mail has no plain part.
    pub text_body: Option<String>,
    /// The HTML body, when the mail has one.
    pub html_body: Option<String>,
    /// Every part that is not the chosen body: files, inline images, attached messages,
    /// winmail.dat, and body alternatives not chosen.
    pub attachments: Vec<Attachment>,
    /// Every top-level header: the name as written and the decoded value.
    pub headers: Vec<(String, String)>,
    /// What tells an automatic mail apart.
    pub loop_signals: LoopSignals,
    /// The delivery status notification, when this mail is a bounce.
    pub bounce: Option<Bounce>,
    /// What could not be read, in words (limits hit, bad charset, ...).
    pub problems: Vec<String>,
    /// How many MIME parts the top-level message has, containers included (the parts of
    /// attached messages not counted).
    pub part_count: usize,
}

impl ParsedMail {
    /// The value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The values of every header with this name (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The address to treat as the author: the From address; when From has none (missing
    /// or `<>`), the first Reply-To address, then the Sender.
    pub fn author(&self) -> Option<&Address> {
        let has = |a: &&Address| a.address.as_deref().is_some_and(|x| x.contains('@'));
        self.from
            .as_ref()
            .filter(has)
            .or_else(|| self.reply_to.iter().find(has))
            .or_else(|| self.sender.as_ref().filter(has))
    }

    /// The plain body, or `""` when the mail has none.
    pub fn body_text(&self) -> &str {
        self.text_body.as_deref().unwrap_or("")
    }
}

/// One mail address with its display name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    /// The address as written; `None` for a group name or a broken address.
    pub address: Option<String>,
    /// The display name, decoded.
    pub name: Option<String>,
}

impl Address {
    /// The address lowercased, when there is one.
    pub fn address_lowercase(&self) -> Option<String> {
        self.address.as_ref().map(|a| a.to_lowercase())
    }
}

/// One part of a mail that is not its chosen body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    /// The file name (RFC 2231 and RFC 2047 decoded), when given.
    pub filename: Option<String>,
    /// `type/subtype`, lowercased.
    pub content_type: String,
    /// The decoded size in bytes.
    pub size: usize,
    /// The Content-ID, without `<>`.
    pub content_id: Option<String>,
    /// Whether the part is meant to be shown inline (Content-Disposition: inline, or an
    /// image referenced by Content-ID).
    pub inline: bool,
    /// SHA-256 of the decoded content, lowercase hex.
    pub sha256: String,
    /// What kind of part this is.
    pub kind: AttachmentKind,
    /// The decoded content.
    pub content: Vec<u8>,
}

/// What kind of part an [`Attachment`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachmentKind {
    /// A file.
    #[default]
    File,
    /// An image shown inside the HTML body (it has a Content-ID or is inline).
    InlineImage,
    /// An attached mail (message/rfc822), content is the raw mail.
    Message,
    /// A Microsoft TNEF part (application/ms-tnef or winmail.dat), kept undecoded.
    Winmail,
    /// An extra body part not chosen as the body (e.g. a second HTML or a calendar part).
    Alternative,
}

/// The headers and structure that tell an automatic mail apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoopSignals {
    /// RFC 3834 Auto-Submitted other than "no", or X-Autoreply, X-Autorespond,
    /// X-Auto-Response-Suppress present.
    pub auto_submitted: bool,
    /// Precedence: bulk, junk or list (lowercased).
    pub precedence: Option<String>,
    /// A List-Id header is present.
    pub list_id: bool,
    /// A delivery report: multipart/report; report-type=delivery-status, or a
    /// message/delivery-status part.
    pub delivery_report: bool,
    /// From mailer-daemon@ or postmaster@, or an empty Return-Path `<>`.
    pub mailer_daemon: bool,
}

impl LoopSignals {
    /// Whether the mail was written by a machine in answer to another mail (an
    /// auto-reply, a bounce, a list or bulk mail).
    pub fn is_auto_response(&self) -> bool {
        self.auto_submitted || self.precedence.is_some() || self.delivery_report || self.mailer_daemon
    }

    /// Whether no automatic answer may be sent to this mail (RFC 3834 section 2): any
    /// auto-response signal or a mailing list.
    pub fn suppresses_auto_reply(&self) -> bool {
        self.is_auto_response() || self.list_id
    }
}

/// What a delivery status notification (RFC 3464) says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bounce {
    /// The Message-ID (without `<>`) of the mail that could not be delivered, from the
    /// returned message or its headers.
    pub original_message_id: Option<String>,
    /// The recipients that failed (Final-Recipient or Original-Recipient), lowercased.
    pub failed_recipients: Vec<String>,
    /// The first Status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The first Diagnostic-Code, e.g. `smtp; 550 5.1.1 user unknown`.
    pub diagnostic: Option<String>,
}

/// Why a mail could not be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The raw mail is larger than [`Limits::max_bytes`].
    #[error("mail is {size} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// The size of the raw mail.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not even the headers could be read.
    #[error("mail is unreadable: {0}")]
    Unreadable(String),
}
