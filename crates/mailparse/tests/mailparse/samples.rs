//! The test kit's generated mails (`deskmail_testkit::samples`) parse back to what they
//! were made of: every charset, shape and encoding the generator uses.

use deskmail_mailparse::{AttachmentKind, Limits, parse};
use deskmail_testkit::samples::{SampleGen, Shape, fixed_size};

#[test]
fn generated_mails_parse_back_to_what_they_were_made_of() {
    let mut g = SampleGen::new(2025).to("support@desk.example");
    let mut shapes = std::collections::BTreeMap::new();
    let mut charsets = std::collections::BTreeMap::new();
    for s in g.mails(300) {
        let m = parse(&s.raw, &Limits::default()).unwrap();
        let ctx = format!("{} ({:?}, {})", s.message_id, s.shape, s.charset);
        assert_eq!(m.subject, s.subject, "{ctx}");
        assert_eq!(m.message_id.as_deref(), Some(s.message_id.as_str()), "{ctx}");
        assert_eq!(m.from.as_ref().and_then(|a| a.address.as_deref()), Some(s.from.as_str()));
        assert!(m.from.as_ref().and_then(|a| a.name.as_deref()).is_some_and(|n| !n.contains("=?")));
        assert_eq!(m.to[0].address.as_deref(), Some("support@desk.example"));
        let body = m.body_text().replace("\r\n", "\n");
        assert!(body.starts_with(&s.body_start), "{ctx}: body starts {:?}", &body[..body.len().min(60)]);
        assert!(!body.contains('\u{fffd}'), "{ctx}: replacement character in the body");
        let files: Vec<_> = m.attachments.iter().filter(|a| a.kind != AttachmentKind::Alternative).collect();
        assert_eq!(files.len(), s.attachments.len(), "{ctx}: {:?}", m.attachments);
        for (got, want) in files.iter().zip(&s.attachments) {
            assert_eq!(got.filename.as_deref(), Some(want.filename.as_str()), "{ctx}");
            assert_eq!(got.content_type, want.content_type, "{ctx}");
            assert_eq!(got.size, want.size, "{ctx}");
            assert_eq!(got.content_id, want.content_id, "{ctx}");
            let kind =
                if want.content_id.is_some() { AttachmentKind::InlineImage } else { AttachmentKind::File };
            assert_eq!(got.kind, kind, "{ctx}");
        }
        if matches!(s.shape, Shape::Html | Shape::Alternative | Shape::Related) {
            assert!(m.html_body.is_some(), "{ctx}: no HTML body");
        }
        assert!(m.problems.is_empty(), "{ctx}: {:?}", m.problems);
        *shapes.entry(format!("{:?}", s.shape)).or_insert(0) += 1;
        *charsets.entry(s.charset).or_insert(0) += 1;
    }
    // The generator covers what it promises.
    assert_eq!(shapes.len(), 5, "{shapes:?}");
    assert_eq!(charsets.len(), 5, "{charsets:?}");
}

#[test]
fn followups_and_replies_carry_their_thread() {
    let mut g = SampleGen::new(9);
    let first = g.mail();
    let f = parse(&g.followup(4711).raw, &Limits::default()).unwrap();
    assert!(f.subject.starts_with("Re: [Ticket#4711] "), "{}", f.subject);
    let r = parse(&g.reply(&first.message_id).raw, &Limits::default()).unwrap();
    assert_eq!(r.in_reply_to, vec![first.message_id.clone()]);
    assert_eq!(r.references, vec![first.message_id]);
    let p = parse(&fixed_size(10_000), &Limits::default()).unwrap();
    assert_eq!(p.subject, "Throughput test mail");
    assert!(p.body_text().len() > 9000);
}
