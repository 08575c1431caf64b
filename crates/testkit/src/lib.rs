//! Dev-only test kit: every test gets its own real, isolated services and tears them down.
//!
//! - [`rabbit::Vhost`]: a RabbitMQ vhost of its own on the local broker (management HTTP API).
//! - [`pg::Database`]: a PostgreSQL database of its own on the local server.
//! - [`process::DaemonProcess`]: a daemon binary run as its own process (logs, signals).
//! - [`samples`]: realistic test mails from a seed (charsets, attachments, follow-ups).
//! - [`mail::MailStack`]: private Dovecot (IMAP, IMAPS, POP3, POP3S) and Postfix (SMTP with
//!   AUTH over STARTTLS and implicit TLS) instances on free high ports.
//!
//! Nothing here is a fake: a test that cannot reach a service fails with an error saying
//! which one and how to start it (`make services`). Never skip.
//! Must not be a dependency of any daemon crate (dev-dependencies only).

pub mod mail;
pub mod pg;
pub mod process;
pub mod rabbit;
pub mod samples;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique to this process and call, safe for vhosts, databases and queue prefixes:
/// `deskmail-test-<prefix>-<pid>-<counter>-<random>` with only `[a-z0-9_-]`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let clean: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    format!("deskmail-test-{clean}-{}-{n}-{:x}", std::process::id(), nanos & 0xffff)
}
