//! What the parser reads, one feature at a time, on small hand-made mails: loop signals,
//! delivery reports, attachment kinds, file names, thread ids, header lookup.

use deskmail_mailparse::{AttachmentKind, Limits, ParseError, parse};

fn p(raw: &str) -> deskmail_mailparse::ParsedMail {
    parse(raw.as_bytes(), &Limits::default()).unwrap()
}

const BASE: &str = "From: Alice <alice@example.com>\r\nTo: desk@example.com\r\n\
    Subject: hello\r\nMessage-ID: <m1@example.com>\r\n";

#[test]
fn a_person_s_mail_has_no_loop_signal() {
    let m = p(&format!("{BASE}Auto-Submitted: no\r\n\r\nhi\r\n"));
    assert!(!m.loop_signals.is_auto_response());
    assert!(!m.loop_signals.suppresses_auto_reply());
    assert!(m.bounce.is_none());
}

#[test]
fn each_auto_response_signal_is_seen() {
    for (header, auto_submitted, precedence) in [
        ("Auto-Submitted: auto-replied", true, None),
        ("Auto-Submitted: auto-generated; owner-email=x@y", true, None),
        ("X-Autoreply: yes", true, None),
        ("X-Autorespond: yes", true, None),
        ("X-Auto-Response-Suppress: All", true, None),
        ("Precedence: bulk", false, Some("bulk")),
        ("Precedence: JUNK", false, Some("junk")),
        ("Precedence: list", false, Some("list")),
    ] {
        let m = p(&format!("{BASE}{header}\r\n\r\nhi\r\n"));
        assert_eq!(m.loop_signals.auto_submitted, auto_submitted, "{header}");
        assert_eq!(m.loop_signals.precedence.as_deref(), precedence, "{header}");
        assert!(m.loop_signals.is_auto_response(), "{header}");
        assert!(m.loop_signals.suppresses_auto_reply(), "{header}");
    }
    // A list mail: no auto-reply to it, but it is a person's mail.
    let m = p(&format!("{BASE}List-Id: <users.lists.example.com>\r\n\r\nhi\r\n"));
    assert!(m.loop_signals.list_id);
    assert!(!m.loop_signals.is_auto_response());
    assert!(m.loop_signals.suppresses_auto_reply());
    // The mailer daemon, by address or by an empty Return-Path.
    let m = p("From: MAILER-DAEMON@mx.example.com\r\nSubject: x\r\n\r\nhi\r\n");
    assert!(m.loop_signals.mailer_daemon && m.loop_signals.is_auto_response());
    let m = p(&format!("Return-Path: <>\r\n{BASE}\r\nhi\r\n"));
    assert!(m.loop_signals.mailer_daemon);
}

const DSN: &str = "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n\
To: desk@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n\
Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\n\
Reporting-MTA: dns; mx.example.com\r\n\r\n\
Final-Recipient: rfc822; Nobody@Customer.example\r\nOriginal-Recipient: rfc822;nobody@customer.example\r\n\
Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <nobody@customer.example>:\r\n\
\x20Recipient address rejected: User unknown\r\n\r\n\
Final-Recipient: rfc822; second@customer.example\r\nAction: failed\r\nStatus: 5.2.2\r\n\r\n\
--B\r\nContent-Type: message/rfc822\r\n\r\n\
From: desk@example.com\r\nTo: nobody@customer.example\r\nSubject: Your ticket\r\n\
Message-ID: <ticket-42.article-7@desk.example.com>\r\n\r\nHello\r\n\
--B--\r\n";

#[test]
fn a_delivery_report_gives_the_original_and_the_failed_recipients() {
    let m = p(DSN);
    assert!(m.loop_signals.delivery_report && m.loop_signals.is_auto_response());
    let b = m.bounce.expect("a bounce");
    assert_eq!(b.original_message_id.as_deref(), Some("ticket-42.article-7@desk.example.com"));
    assert_eq!(b.failed_recipients, vec!["nobody@customer.example", "second@customer.example"]);
    assert_eq!(b.status.as_deref(), Some("5.1.1"));
    assert_eq!(
        b.diagnostic.as_deref(),
        Some("smtp; 550 5.1.1 <nobody@customer.example>: Recipient address rejected: User unknown")
    );
    let att = m.attachments.iter().find(|a| a.kind == AttachmentKind::Message).unwrap();
    assert!(String::from_utf8_lossy(&att.content).contains("ticket-42.article-7"));
}

#[test]
fn a_report_with_only_the_returned_headers() {
    let raw = DSN
        .replace("Content-Type: message/rfc822", "Content-Type: text/rfc822-headers")
        .replace("\r\n\r\nHello\r\n", "\r\n");
    let b = p(&raw).bounce.unwrap();
    assert_eq!(b.original_message_id.as_deref(), Some("ticket-42.article-7@desk.example.com"));
}

#[test]
fn a_plain_text_bounce_from_an_old_mta() {
    let m = p("From: MAILER-DAEMON@old.example\r\nTo: desk@example.com\r\n\
        Subject: failure notice\r\nX-Failed-Recipients: gone@customer.example\r\n\r\n\
        Hi. This is the qmail-send program. I couldn't deliver your message.\r\n\
        <gone@customer.example>: 550 5.1.1 no mailbox here\r\n\r\n\
        --- Below this line is a copy of the message.\r\n\r\n\
        Message-ID: <orig-1@desk.example.com>\r\nSubject: Re: [Ticket#7] x\r\n");
    let b = m.bounce.unwrap();
    assert_eq!(b.original_message_id.as_deref(), Some("orig-1@desk.example.com"));
    assert_eq!(b.failed_recipients, vec!["gone@customer.example"]);
    assert_eq!(b.status.as_deref(), Some("5.1.1"));
}

#[test]
fn attachment_kinds_names_and_ids() {
    let raw = "From: a@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"M\"\r\n\r\n\
--M\r\nContent-Type: multipart/related; boundary=\"R\"\r\n\r\n\
--R\r\nContent-Type: multipart/alternative; boundary=\"A\"\r\n\r\n\
--A\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain text\r\n\
--A\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML <img src=\"cid:logo@x\"></p>\r\n\
--A--\r\n\
--R\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n\
--R--\r\n\
--M\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename*0*=utf-8''%C3%9Cbersicht%20;\r\n filename*1=\"2025.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n\
--M\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\neJ8+IgAA\r\n\
--M\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n\
--M\r\nContent-Type: text/plain; name=\"=?iso-8859-1?Q?Gr=FC=DFe.txt?=\"\r\nContent-Disposition: attachment\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe\r\n\
--M--\r\n";
    let m = p(raw);
    assert_eq!(m.text_body.as_deref().map(str::trim), Some("Plain text"));
    assert!(m.html_body.as_deref().unwrap().contains("cid:logo@x"));
    let kinds: Vec<_> = m.attachments.iter().map(|a| (a.kind, a.filename.as_deref())).collect();
    assert_eq!(
        kinds,
        vec![
            (AttachmentKind::InlineImage, None),
            (AttachmentKind::File, Some("Übersicht 2025.pdf")),
            (AttachmentKind::Winmail, Some("winmail.dat")),
            (AttachmentKind::Alternative, None),
            (AttachmentKind::File, Some("Grüße.txt")),
        ]
    );
    let img = &m.attachments[0];
    assert_eq!(img.content_id.as_deref(), Some("logo@x"));
    assert!(img.inline);
    assert_eq!(img.content, b"\x89PNG\r\n\x1a\n");
    assert_eq!(m.attachments[1].content, b"%PDF-1.4\n");
    assert_eq!(m.attachments[3].content_type, "text/calendar");
    // A text file keeps its bytes as sent (ISO-8859-1), not converted to UTF-8.
    assert_eq!(m.attachments[4].content, b"Gr\xfc\xdfe");
    assert!(m.problems.is_empty(), "{:?}", m.problems);
}

#[test]
fn html_only_mail_gets_a_text_body() {
    let m = p("From: a@example.com\r\nSubject: h\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
        <html><body><p>Hello <b>desk</b></p><p>line two</p></body></html>\r\n");
    let t = m.text_body.unwrap();
    assert!(t.contains("Hello desk") && t.contains("line two") && !t.contains('<'), "{t}");
    assert!(m.html_body.is_some());
}

#[test]
fn thread_ids_addresses_and_headers() {
    let m = p("From: \"=?utf-8?B?SsO8cmdlbg==?=\" <J.Mueller@Customer.example>\r\n\
        To: desk@example.com, Team: a@example.com, b@example.com;\r\n\
        Cc: undisclosed-recipients:;\r\nReply-To: <reply@customer.example>\r\n\
        Delivered-To: Support@Desk.Example\r\nX-Original-To: <Inbox@Desk.Example>\r\n\
        Subject: =?iso-8859-1?Q?Gr=FC=DFe?= aus =?utf-8?B?5p2x5Lqs?=\r\n\
        In-Reply-To: <a@x>\r\nReferences: <r1@x> <r2@x>\r\n\
        Date: Mon, 3 Mar 2025 10:00:00 +0100\r\nX-Deskmail-Queue: billing\r\n\r\nbody\r\n");
    let from = m.from.as_ref().unwrap();
    assert_eq!(from.address.as_deref(), Some("J.Mueller@Customer.example"));
    assert_eq!(from.name.as_deref(), Some("Jürgen"));
    assert_eq!(m.to.len(), 3);
    assert_eq!(m.to[2].address.as_deref(), Some("b@example.com"));
    assert_eq!(m.cc.len(), 1);
    assert_eq!(m.cc[0].address, None);
    assert_eq!(m.delivered_to, vec!["support@desk.example"]);
    assert_eq!(m.x_original_to, vec!["inbox@desk.example"]);
    assert_eq!(m.subject, "Grüße aus 東京");
    assert_eq!(m.in_reply_to, vec!["a@x"]);
    assert_eq!(m.references, vec!["r1@x", "r2@x"]);
    assert_eq!(m.date, Some(1_740_992_400));
    assert_eq!(m.header("x-deskmail-queue"), Some("billing"));
    assert_eq!(m.header("SUBJECT"), Some("Grüße aus 東京"));
    assert_eq!(m.header_all("references"), vec!["<r1@x> <r2@x>"]);
    assert_eq!(m.author().and_then(|a| a.address.as_deref()), Some("J.Mueller@Customer.example"));
}

#[test]
fn raw_8bit_headers_and_unlabelled_bodies_are_read_in_their_charset() {
    // GBK bytes with no charset anywhere (common in spam and old Chinese mailers).
    let mut raw = b"From: ".to_vec();
    raw.extend_from_slice(b"\xce\xe4\xc0\xbc\xb3\xc9 <w@example.cn>\r\nSubject: ");
    raw.extend_from_slice(b"\xd7\xaa\xb7\xa2\xa3\xba\xd5\xfb\xcc\xe5\xcc\xe1\xc9\xfd\xc6\xf3\xd2\xb5\xb7\xfe\xce\xf1\xcb\xae\xc6\xbd\r\n\r\n");
    raw.extend_from_slice(b"\xc4\xfa\xba\xc3\xa3\xac\xce\xd2\xc3\xc7\xb9\xab\xcb\xbe\xb5\xc4\xd3\xca\xbc\xfe\xb7\xfe\xce\xf1\xc6\xf7\r\n");
    let m = parse(&raw, &Limits::default()).unwrap();
    assert_eq!(m.subject, "转发：整体提升企业服务水平");
    assert_eq!(m.from.as_ref().unwrap().name.as_deref(), Some("武兰成"));
    assert!(m.body_text().starts_with("您好，我们公司的邮件服务器"), "{}", m.body_text());
    assert!(m.problems.iter().any(|p| p.contains("charset was guessed")));
}

#[test]
fn unknown_charsets_and_limits_are_noted() {
    let m = p(
        "From: a@example.com\r\nSubject: x\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\nqapla\r\n",
    );
    assert_eq!(m.text_body.as_deref().map(str::trim), Some("qapla"));
    assert!(m.problems.iter().any(|p| p.contains("unknown charset")), "{:?}", m.problems);
    // unknown-8bit: nobody knows it, so the bytes are guessed (here windows-1252).
    let raw = b"From: a@example.com\r\nSubject: x\r\nContent-Type: text/plain; charset=unknown-8bit\r\n\r\n\
        Sch\xf6ne Gr\xfc\xdfe aus K\xf6ln, wir w\xfcrden uns \xfcber eine Antwort freuen.\r\n";
    let m = parse(raw, &Limits::default()).unwrap();
    assert!(m.body_text().starts_with("Schöne Grüße aus Köln"), "{}", m.body_text());
    let too_small = Limits { max_bytes: 10, ..Limits::default() };
    let raw = b"From: a@example.com\r\n\r\nhello";
    assert_eq!(parse(raw, &too_small), Err(ParseError::TooLarge { size: raw.len(), max: 10 }));
}
