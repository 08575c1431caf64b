//! Auto-replies: the loop rules (RFC 3834 and the design's list) and the outbound job.
//! The per-sender daily limit is counted in the store, inside the batch's transaction.

use std::collections::BTreeMap;

use deskmail_core::OutboundJob;
use deskmail_mailparse::ParsedMail;

use crate::rules::{MailboxRules, Rules, SystemAddress};

/// Everything needed to write the auto-reply once the ticket has its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoReplyDraft {
    /// The sender as counted in the auto-reply log (lowercased).
    pub sender: String,
    /// Where the reply goes (Reply-To, else From).
    pub to: String,
    /// The system address the mail reached, as `Name <address>`; `None`: the box's default.
    pub from: Option<String>,
    /// The mailbox the mail came from, when it can send (its outbound part).
    pub mailbox_id: Option<String>,
    pub subject_template: String,
    pub body_template: String,
    pub original_subject: String,
    pub customer_name: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

/// The draft of an auto-reply to `mail`, or why there is none (a loop rule, or the queue has
/// auto-replies off).
pub fn draft(
    mail: &ParsedMail,
    rules: &Rules,
    queue_id: Option<&str>,
    reached: Option<&SystemAddress>,
    mailbox: Option<&MailboxRules>,
) -> Result<AutoReplyDraft, &'static str> {
    let queue = queue_id.and_then(|q| rules.queues.get(q)).ok_or("no queue")?;
    if !queue.auto_reply {
        return Err("queue has auto-reply off");
    }
    let signals = &mail.loop_signals;
    if signals.auto_submitted {
        return Err("auto-submitted");
    }
    if signals.precedence.is_some() {
        return Err("precedence bulk/junk/list");
    }
    if signals.list_id {
        return Err("mailing list");
    }
    if signals.delivery_report || mail.bounce.is_some() {
        return Err("bounce");
    }
    if signals.mailer_daemon {
        return Err("from a mailer-daemon");
    }
    let sender = mail.from.as_ref().and_then(|a| a.address_lowercase()).ok_or("no sender address")?;
    let to = mail.reply_to.iter().find_map(|a| a.address_lowercase()).unwrap_or_else(|| sender.clone());
    if rules.addresses.contains_key(&sender) || rules.addresses.contains_key(&to) {
        return Err("from a system address");
    }
    let from = reached.map(|a| {
        if a.display_name.is_empty() {
            a.address.clone()
        } else {
            format!("{} <{}>", a.display_name, a.address)
        }
    });
    let mut references = mail.references.clone();
    if let Some(m) = &mail.message_id {
        references.push(m.clone());
    }
    Ok(AutoReplyDraft {
        sender,
        to,
        from,
        mailbox_id: mailbox.filter(|m| m.has_outbound).map(|m| m.id.clone()),
        subject_template: queue.auto_reply_subject.clone(),
        body_template: queue.auto_reply_body.clone(),
        original_subject: mail.subject.clone(),
        customer_name: mail.from.as_ref().and_then(|a| a.name.clone()).unwrap_or_default(),
        in_reply_to: mail.message_id.clone(),
        references,
    })
}

/// The job id of the auto-reply to the mail with `source_id`: the same on every redelivery,
/// so the sender sends it once.
pub fn job_id(source_id: &str) -> String {
    let id = format!("autoreply:{source_id}");
    if id.len() <= 200 { id } else { format!("autoreply:sha256:{}", crate::sha256_hex(source_id.as_bytes())) }
}

fn render(template: &str, number: &str, d: &AutoReplyDraft) -> String {
    template
        .replace("{{ticket_number}}", number)
        .replace("{{subject}}", &d.original_subject)
        .replace("{{customer_name}}", &d.customer_name)
}

/// The outbound job for a draft once the ticket number is known.
pub fn build_job(d: &AutoReplyDraft, number: &str, hook: &str, source_id: &str) -> OutboundJob {
    let subject_template =
        if d.subject_template.trim().is_empty() { "{{subject}}" } else { &d.subject_template };
    let mut subject = render(subject_template, number, d);
    if !subject.contains(&format!("{hook}{number}")) {
        subject = format!("[{hook}{number}] {subject}");
    }
    let body_template = if d.body_template.trim().is_empty() {
        "Your request has been received and is registered as ticket {{ticket_number}}.\n\
         Please keep the ticket number in the subject of further mail about it."
    } else {
        &d.body_template
    };
    let mut headers = BTreeMap::new();
    headers.insert("Auto-Submitted".to_owned(), "auto-replied".to_owned());
    OutboundJob {
        job_id: job_id(source_id),
        mailbox_id: d.mailbox_id.clone(),
        from: d.from.clone(),
        to: vec![d.to.clone()],
        subject,
        text: Some(render(body_template, number, d)),
        headers,
        in_reply_to: d.in_reply_to.clone(),
        references: d.references.clone(),
        ticket_number: Some(number.to_owned()),
        ..OutboundJob::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft_with(subject_template: &str) -> AutoReplyDraft {
        AutoReplyDraft {
            sender: "c@x.test".into(),
            to: "c@x.test".into(),
            from: Some("Support <support@desk.test>".into()),
            mailbox_id: None,
            subject_template: subject_template.into(),
            body_template: String::new(),
            original_subject: "Printer".into(),
            customer_name: "C".into(),
            in_reply_to: Some("m1@x.test".into()),
            references: vec!["m1@x.test".into()],
        }
    }

    #[test]
    fn subject_carries_the_number() {
        let j = build_job(&draft_with(""), "2026112910000001", "Ticket#", "imap:a:1:2");
        assert_eq!(j.subject, "[Ticket#2026112910000001] Printer");
        assert_eq!(j.headers.get("Auto-Submitted").map(String::as_str), Some("auto-replied"));
        assert_eq!(j.job_id, "autoreply:imap:a:1:2");
        let j = build_job(&draft_with("Re: {{subject}} [Ticket#{{ticket_number}}]"), "7", "Ticket#", "s");
        assert_eq!(j.subject, "Re: Printer [Ticket#7]");
        assert!(j.text.unwrap().contains('7'));
    }
}
