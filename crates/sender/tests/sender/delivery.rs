//! Jobs through each security and auth mode arrive with the headers asked for (read back
//! over IMAP); a dry-run box sends nothing; a job id is sent once; bad TLS is refused.

use std::time::Duration;

use deskmail_proto::v1 as pb;
use mail_parser::MimeHeaders;
use serde_json::json;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_security_and_auth_mode_delivers_with_the_headers_asked_for() {
    let mut h = Harness::new("sender-modes", &[]).await;
    let mut plain = plain_box(&h.stack, "desk@desk.test");
    plain.from_name = "Desk Support".into();
    plain.reply_to = "replies@desk.test".into();
    plain.footer = "Acme Support · desk.test".into();
    plain.append_footer = true;
    let plain = h.create_box("plain", plain).await;
    let starttls = h.create_box("starttls", password_box(&h.stack, pb::Security::Starttls)).await;
    let mut tls = password_box(&h.stack, pb::Security::Tls);
    tls.from_address = "helpdesk@desk.test".into(); // differs from the login: Sender: is set
    h.create_box("tls", tls).await;
    let running = h.start_sender("").await;

    h.publish(&json!({
        "job_id": "mode-none", "mailbox_id": plain.id, "to": [format!("Kunde Müller <{CUSTOMER}>")],
        "subject": "Grüße aus dem Support", "text": "Hallo,\nwir helfen gern.", "html": "<html><body><p>Hallo</p><img src=\"cid:logo\"></body></html>",
        "ticket_number": "2026112901000042", "in_reply_to": "orig-1@client.test",
        "references": ["first@client.test", "<orig-1@client.test>"], "read_receipt": true,
        "headers": {"X-Custom": "Wert ä", "Auto-Submitted": "auto-replied"},
        "attachments": [
            {"filename": "logo.png", "content_type": "image/png", "content_base64": "iVBORw0KGgo=", "content_id": "logo"},
            {"filename": "Rechnung März.pdf", "content_type": "application/pdf", "content_base64": "JVBERi0xLjQK"}
        ],
        "correlation_id": "corr-1"
    }))
    .await;
    h.publish(&json!({"job_id": "mode-starttls", "mailbox_id": starttls.id, "to": [CUSTOMER], "subject": "via STARTTLS", "text": "x"}))
        .await;
    h.publish(&json!({"job_id": "mode-tls", "mailbox_id": "tls", "to": [CUSTOMER], "subject": "via TLS", "text": "x"})).await;

    let e = h.event_for("mode-none", T).await;
    assert_eq!(e["event"], "mail.sent", "{e}");
    assert_eq!(e["correlation_id"], "corr-1");
    assert_eq!(e["mailbox"], "plain");
    assert!(e["smtp_reply"].as_str().unwrap().starts_with("250 "), "{e}");
    h.wait_for_mail(CUSTOMER, 3, T).await;
    running.stop().await;

    let mails = h.fetch_all(CUSTOMER, CUSTOMER_PW).await;
    let find = |id: &str| {
        mails.iter().find(|m| job_id_of(m).as_deref() == Some(id)).unwrap_or_else(|| panic!("{id} missing"))
    };

    let raw = find("mode-none");
    let m = parse(raw);
    assert_eq!(m.subject(), Some("[Ticket#2026112901000042] Grüße aus dem Support"));
    let from = m.from().unwrap().first().unwrap();
    assert_eq!((from.name(), from.address()), (Some("Desk Support"), Some("desk@desk.test")));
    assert!(m.sender().is_none(), "no login, no Sender:");
    assert_eq!(m.reply_to().unwrap().first().unwrap().address(), Some("replies@desk.test"));
    assert_eq!(m.to().unwrap().first().unwrap().name(), Some("Kunde Müller"));
    let mid = m.message_id().unwrap();
    assert!(mid.ends_with("@desk.test"), "Message-ID on the box's domain: {mid}");
    assert_eq!(e["message_id"], format!("<{mid}>"));
    assert_eq!(m.in_reply_to().as_text(), Some("orig-1@client.test"));
    let refs: Vec<&str> =
        m.references().as_text_list().unwrap_or_default().iter().map(|c| c.as_ref()).collect();
    assert_eq!(refs, ["first@client.test", "orig-1@client.test"]);
    assert_eq!(m.header_raw("Disposition-Notification-To").map(str::trim), Some("desk@desk.test"));
    assert_eq!(decoded(m.header_raw("X-Custom").unwrap()), "Wert ä");
    assert_eq!(m.header_raw("Auto-Submitted").map(str::trim), Some("auto-replied"));
    let text = m.body_text(0).unwrap();
    assert!(text.contains("wir helfen gern.") && text.contains("Acme Support · desk.test"), "{text}");
    assert!(m.body_html(0).unwrap().contains("Acme Support"), "footer in HTML");
    let names: Vec<String> = m.attachments().filter_map(|a| a.attachment_name().map(str::to_owned)).collect();
    assert!(names.contains(&"Rechnung März.pdf".to_owned()), "{names:?}");
    assert!(names.contains(&"logo.png".to_owned()), "{names:?}");
    assert!(!String::from_utf8_lossy(raw).contains("Müller"), "headers are encoded, not raw UTF-8");

    let m = parse(find("mode-starttls"));
    assert_eq!(m.subject(), Some("via STARTTLS"));
    assert_eq!(m.from().unwrap().first().unwrap().address(), Some(SUPPORT));
    assert!(m.sender().is_none(), "From is the login: no Sender:");
    assert!(
        String::from_utf8_lossy(find("mode-starttls")).contains("ESMTPSA"),
        "STARTTLS + AUTH per Postfix's Received"
    );

    let raw = find("mode-tls");
    let m = parse(raw);
    assert_eq!(m.from().unwrap().first().unwrap().address(), Some("helpdesk@desk.test"));
    assert_eq!(m.sender().unwrap().first().unwrap().address(), Some(SUPPORT), "Sender: is the login");
    assert!(String::from_utf8_lossy(raw).contains("ESMTPSA"), "TLS + AUTH per Postfix's Received");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_records_without_sending_and_a_job_id_is_sent_once() {
    let mut h = Harness::new("sender-dry", &[]).await;
    let mut dry = plain_box(&h.stack, "desk@desk.test");
    dry.dry_run = true;
    let dry = h.create_box("dry", dry).await;
    let live = h.create_box("live", plain_box(&h.stack, "desk@desk.test")).await;
    let running = h.start_sender("").await;

    h.publish(
        &json!({"job_id": "dry-1", "mailbox_id": dry.id, "to": [CUSTOMER], "subject": "s", "text": "t"}),
    )
    .await;
    let e = h.event_for("dry-1", T).await;
    assert_eq!((e["event"].as_str(), e["dry_run"].as_bool()), (Some("mail.sent"), Some(true)), "{e}");

    h.publish(
        &json!({"job_id": "once-1", "mailbox_id": live.id, "to": [CUSTOMER], "subject": "s", "text": "t"}),
    )
    .await;
    h.event_for("once-1", T).await;
    // The same job again (a redelivery or a second publish): acked, not sent.
    h.publish(
        &json!({"job_id": "once-1", "mailbox_id": live.id, "to": [CUSTOMER], "subject": "s", "text": "t"}),
    )
    .await;
    h.publish(
        &json!({"job_id": "after", "mailbox_id": live.id, "to": [CUSTOMER], "subject": "s", "text": "t"}),
    )
    .await;
    h.event_for("after", T).await;
    h.wait_for_mail(CUSTOMER, 2, T).await;
    running.stop().await;
    let ids: Vec<String> =
        h.fetch_all(CUSTOMER, CUSTOMER_PW).await.iter().filter_map(|m| job_id_of(m)).collect();
    assert_eq!(ids.iter().filter(|i| *i == "once-1").count(), 1, "{ids:?}");
    assert!(!ids.contains(&"dry-1".to_owned()), "a dry-run box sends nothing: {ids:?}");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(h.vhost.wait_queue_message_count("deskmail.outbound.jobs", 0, T).await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unverified_certificates_and_missing_starttls_are_refused_and_reported() {
    let mut h = Harness::new("sender-tls", &[]).await;
    let mut strict = password_box(&h.stack, pb::Security::Tls);
    strict.allow_invalid_certs = false; // the kit's CA is not in the web roots
    let strict = h.create_box("strict", strict).await;
    // STARTTLS asked on the port that does not offer it: never goes on in clear text.
    let mut no_starttls = plain_box(&h.stack, SUPPORT);
    no_starttls.security = pb::Security::Starttls as i32;
    let no_starttls = h.create_box("no-starttls", no_starttls).await;
    let running = h.start_sender(FAST_RETRIES).await;

    h.publish(&json!({"job_id": "strict-1", "mailbox_id": strict.id, "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    h.publish(&json!({"job_id": "clear-1", "mailbox_id": no_starttls.id, "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    let s = h.wait_status(&strict.id, pb::MailboxState::Error, T).await;
    assert_eq!(s.reason, pb::StatusReason::TlsFailed as i32, "{s:?}");
    let s = h.wait_status(&no_starttls.id, pb::MailboxState::Error, T).await;
    assert_eq!(s.reason, pb::StatusReason::TlsFailed as i32, "{s:?}");
    assert!(s.message.contains("STARTTLS"), "{s:?}");
    // Both are temporary (the box, not the mail): retried, then dead with the reason.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (id, reason, _) = h.next_dead(T).await;
        assert!(reason.contains("gave up after 3 retries"), "{reason}");
        seen.push(id);
    }
    seen.sort();
    assert_eq!(seen, ["clear-1", "strict-1"]);
    running.stop().await;
    assert_eq!(h.stack.message_count(CUSTOMER, "INBOX").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_box_sends_with_xoauth2_and_keeps_the_rotated_refresh_token() {
    let mut h = Harness::with_oauth2_idp("sender-oauth2").await;
    let idp = h.stack.idp().unwrap();
    let grant = idp.issue(SUPPORT, 3600).unwrap();
    let mut o = password_box(&h.stack, pb::Security::Tls);
    o.auth = pb::AuthMethod::Oauth2 as i32;
    o.password = String::new();
    o.oauth2 = Some(pb::OAuth2 {
        client_id: "deskmail-sender".into(),
        token_url: idp.token_url(),
        refresh_token: grant.refresh_token.clone(),
        ..Default::default()
    });
    let b = h.create_box("oauth2", o).await;
    let running = h.start_sender("").await;
    h.publish(&json!({"job_id": "oauth-1", "mailbox_id": b.id, "to": [CUSTOMER], "subject": "via XOAUTH2", "text": "t"})).await;
    let e = h.event_for("oauth-1", T).await;
    assert_eq!(e["event"], "mail.sent", "{e}");
    running.stop().await;
    // The IdP rotated the refresh token at the first refresh: the old one is spent. A new
    // sender (no token in memory) can only log in if the rotated one was stored in configd.
    let deadline = std::time::Instant::now() + T;
    loop {
        let snap = h
            .configd
            .daemon()
            .await
            .watch()
            .get_snapshot(pb::GetSnapshotRequest {})
            .await
            .unwrap()
            .into_inner();
        let stored = snap
            .mailboxes
            .iter()
            .find(|m| m.id == b.id)
            .unwrap()
            .outbound
            .clone()
            .unwrap()
            .oauth2
            .unwrap()
            .refresh_token;
        if stored != grant.refresh_token {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the rotated refresh token never reached configd");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = h.start_sender("").await;
    h.publish(
        &json!({"job_id": "oauth-2", "mailbox_id": b.id, "to": [CUSTOMER], "subject": "again", "text": "t"}),
    )
    .await;
    let e = h.event_for("oauth-2", T).await;
    assert_eq!(e["event"], "mail.sent", "{e}");
    running.stop().await;
    h.wait_for_mail(CUSTOMER, 2, T).await;
    let mails = h.fetch_all(CUSTOMER, CUSTOMER_PW).await;
    assert!(mails.iter().all(|m| String::from_utf8_lossy(m).contains("ESMTPSA")), "authenticated over TLS");
    let (_, token_requests) = h.stack.idp().unwrap().stats().unwrap();
    assert_eq!(token_requests, 2, "one refresh per sender start, not per mail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_box_rate_limit_spaces_its_sends() {
    let mut h = Harness::new("sender-rate", &[]).await;
    let mut o = plain_box(&h.stack, SUPPORT);
    o.rate_limit_per_minute = 120; // one every 0.5 s
    let b = h.create_box("slow", o).await;
    let running = h.start_sender("").await;
    for i in 0..5 {
        h.publish(&json!({"job_id": format!("rate-{i}"), "mailbox_id": b.id, "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    }
    let mut times = Vec::new();
    for i in 0..5 {
        let e = h.event_for(&format!("rate-{i}"), T).await;
        assert_eq!(e["event"], "mail.sent", "{e}");
        times.push(e["time_ms"].as_u64().unwrap());
    }
    running.stop().await;
    // The limiter spaces the starts of the sends by 0.5 s; the times here are when each send
    // ended, so a gap shrinks by however much longer the earlier send took than the later
    // one: the first pays for a connection, and a send that lands on a lane not yet open
    // pays for another (up to about 150 ms on a loaded machine). No gap can shrink below
    // the slot minus that.
    times.sort_unstable();
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g >= 300), "sends at 120/min are 0.5 s apart: gaps {gaps:?} ms");
    let span = times[4] - times[0];
    assert!(span >= 1700, "5 sends at 120/min take about 2 s, took {span} ms (gaps {gaps:?})");
}
