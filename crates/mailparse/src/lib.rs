//! deskmail-mailparse: raw RFC 5322 mail to what a ticket needs.
//!
//! [`parse`] turns the raw bytes of one mail into a [`ParsedMail`]: addresses, thread ids,
//! the decoded subject, a plain and an HTML body, attachments (with SHA-256), every header,
//! the signals that tell an auto-response or a bounce apart from a person's mail, and the
//! parsed delivery status notification (RFC 3464) of a bounce. It enforces [`Limits`] itself
//! and never panics on hostile input: what it could not read is listed in
//! [`ParsedMail::problems`].

mod dsn;
mod headers;
mod parse;
mod types;
mod uu;

pub use parse::parse;
pub use types::*;
