//! deskmail's domain types, shared by the daemons: ids, the stable source id of an inbound
//! mail, and mailbox status codes. No I/O, no async, no dependency on another deskmail crate.

pub mod job;
mod source;
mod status;

pub use job::{JobAttachment, OutboundJob};
pub use source::SourceId;
pub use status::{MailboxState, StatusReason};
