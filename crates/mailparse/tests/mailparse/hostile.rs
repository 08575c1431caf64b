//! Hostile input: deep nesting, huge headers, many recipients, garbage, a 50 MB
//! attachment. Each must come back (Ok with problems noted, or Err with a reason) without a
//! panic, within the limits, and in bounded time.

use std::time::{Duration, Instant};

use deskmail_mailparse::{AttachmentKind, Limits, ParseError, ParsedMail, parse};
use sha2::{Digest, Sha256};

/// Debug builds are slow; this still catches anything quadratic on these sizes.
const MAX_TIME: Duration = Duration::from_secs(20);

fn timed(raw: &[u8], limits: &Limits) -> Result<ParsedMail, ParseError> {
    let t = Instant::now();
    let r = parse(raw, limits);
    let took = t.elapsed();
    assert!(took < MAX_TIME, "parse of {} bytes took {took:?}", raw.len());
    r
}

fn head(extra: &str) -> String {
    format!(
        "From: Alice <alice@example.com>\r\nTo: desk@example.com\r\nSubject: hostile\r\n\
         Message-ID: <hostile@example.com>\r\nMIME-Version: 1.0\r\n{extra}"
    )
}

#[test]
fn a_thousand_nested_multiparts_stop_at_the_depth_limit() {
    let depth = 1000;
    let mut raw = head("Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for i in 1..depth {
        raw.push_str(&format!("--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n", i - 1));
    }
    raw.push_str(&format!("--b{}\r\nContent-Type: text/plain\r\n\r\ndeep text\r\n", depth - 1));
    for i in (0..depth).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    let limits = Limits::default();
    let m = timed(raw.as_bytes(), &limits).unwrap();
    assert_eq!(m.subject, "hostile");
    assert!(
        m.problems.iter().any(|p| p.contains("nested deeper than 50")),
        "no depth problem noted: {:?}",
        m.problems
    );
    // The text is below the depth limit: not read, and not invented.
    assert!(m.text_body.as_deref().is_none_or(|t| !t.contains("deep text")));

    // The same mail with a depth limit above its depth is read to the bottom.
    let generous = Limits { max_depth: 2000, ..Limits::default() };
    let m = timed(raw.as_bytes(), &generous).unwrap();
    assert_eq!(m.text_body.as_deref().map(str::trim), Some("deep text"));
    assert!(m.problems.iter().all(|p| !p.contains("nested deeper")));
}

#[test]
fn many_parts_stop_at_the_parts_limit() {
    let n = 5000;
    let mut raw = head("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
    for i in 0..n {
        raw.push_str(&format!(
            "--b\r\nContent-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"f{i}.bin\"\r\n\r\nx{i}\r\n"
        ));
    }
    raw.push_str("--b--\r\n");
    let limits = Limits::default();
    let m = timed(raw.as_bytes(), &limits).unwrap();
    assert!(m.problems.iter().any(|p| p.contains("more than 2000 MIME parts")), "{:?}", m.problems);
    // The root part counts as one of the 2000.
    assert_eq!(m.attachments.len(), limits.max_parts - 1);
    assert_eq!(m.attachments[0].filename.as_deref(), Some("f0.bin"));
    assert_eq!(m.part_count, n + 1);
}

#[test]
fn a_one_megabyte_header_line_is_cut_at_the_header_limit() {
    let long = "x".repeat(1024 * 1024 + 10);
    let raw = head(&format!("X-Long: {long}\r\nContent-Type: text/plain\r\n\r\nbody\r\n"));
    let m = timed(raw.as_bytes(), &Limits::default()).unwrap();
    let v = m.header("X-Long").unwrap();
    assert!(v.len() <= Limits::default().max_header_bytes, "{}", v.len());
    assert!(v.len() > 1000);
    assert!(m.problems.iter().any(|p| p.contains("header X-Long")), "{:?}", m.problems);
    assert_eq!(m.text_body.as_deref().map(str::trim), Some("body"));

    // A long subject: cut to the limit, no panic on a char boundary.
    let small = Limits { max_header_bytes: 1001, ..Limits::default() };
    let subject = "ä".repeat(5000);
    let raw = head("Content-Type: text/plain\r\n\r\nbody\r\n")
        .replace("Subject: hostile", &format!("Subject: {subject}"));
    let m = timed(raw.as_bytes(), &small).unwrap();
    assert!(m.subject.len() <= 1001 && m.subject.starts_with("ää"), "{}", m.subject.len());
}

#[test]
fn ten_thousand_recipients_are_all_read() {
    let to: Vec<String> = (0..10_000).map(|i| format!("User {i} <user{i}@example.com>")).collect();
    let raw = head("Content-Type: text/plain\r\n\r\nhi\r\n")
        .replace("To: desk@example.com", &format!("To: {}", to.join(",\r\n ")));
    let m = timed(raw.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(m.to.len(), 10_000);
    assert_eq!(m.to[9_999].address.as_deref(), Some("user9999@example.com"));
    assert_eq!(m.to[0].name.as_deref(), Some("User 0"));

    // Past the header limit: the recipients in the first max_header_bytes are kept.
    let small = Limits { max_header_bytes: 64 * 1024, ..Limits::default() };
    let m = timed(raw.as_bytes(), &small).unwrap();
    assert!(m.to.len() > 1000 && m.to.len() < 10_000, "{}", m.to.len());
    assert!(m.problems.iter().any(|p| p.contains("header To")));
}

/// A small deterministic generator (xorshift) so the garbage is the same every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_bytes_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let limits = Limits::default();
    let mut ok = 0;
    for round in 0..300 {
        let len = (rng.next() % 20_000) as usize;
        let mut raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Every third one looks like a mail at first.
        if round % 3 == 0 {
            let mut h =
                b"Content-Type: multipart/mixed; boundary=\"\x00\xff\"\r\n\r\n--\x00\xff\r\n".to_vec();
            h.extend_from_slice(&raw);
            raw = h;
        }
        match timed(&raw, &limits) {
            Ok(_) => ok += 1,
            Err(ParseError::Unreadable(reason)) => assert!(!reason.is_empty()),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(ok > 0);
    // Empty input and white space only are refused with a reason.
    assert!(matches!(parse(b"", &limits), Err(ParseError::Unreadable(_))));
    assert!(matches!(parse(b"\r\n\r\n  ", &limits), Err(ParseError::Unreadable(_))));
}

fn base64_lines(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 8);
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        out.push(T[(b[0] >> 2) as usize] as char);
        out.push(T[(((b[0] & 3) << 4) | (b[1] >> 4)) as usize] as char);
        out.push(if c.len() > 1 { T[(((b[1] & 15) << 2) | (b[2] >> 6)) as usize] as char } else { '=' });
        out.push(if c.len() > 2 { T[(b[2] & 63) as usize] as char } else { '=' });
    }
    out.push_str("\r\n");
    out
}

#[test]
fn a_fifty_megabyte_attachment() {
    let size = 50 * 1024 * 1024;
    let mut rng = Rng(42);
    let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    let mut raw = head("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
    raw.push_str("--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n");
    raw.push_str(
        "--b\r\nContent-Type: application/pdf; name=\"big.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"big.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n",
    );
    raw.push_str(&base64_lines(&data));
    raw.push_str("--b--\r\n");
    let raw = raw.into_bytes();
    assert!(raw.len() > Limits::default().max_bytes);

    // Larger than the default 64 MiB once encoded: refused with the sizes.
    match parse(&raw, &Limits::default()) {
        Err(ParseError::TooLarge { size, max }) => {
            assert_eq!(size, raw.len());
            assert_eq!(max, 64 * 1024 * 1024);
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|m| m.subject)),
    }

    // Within a larger limit: read whole, checksum right.
    let limits = Limits { max_bytes: 128 * 1024 * 1024, ..Limits::default() };
    let m = timed(&raw, &limits).unwrap();
    assert_eq!(m.attachments.len(), 1);
    let a = &m.attachments[0];
    assert_eq!(a.filename.as_deref(), Some("big.pdf"));
    assert_eq!(a.kind, AttachmentKind::File);
    assert_eq!(a.size, size);
    assert_eq!(a.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(m.text_body.as_deref().map(str::trim), Some("see attached"));
}
