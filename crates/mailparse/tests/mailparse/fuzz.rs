//! Property test: mutated corpus mails never make `parse` panic, never make mail-parser
//! fail (the last-resort guard in `parse` must not be what saves us), and what comes back
//! keeps its invariants. Runs `DESKMAIL_FUZZ_SECS` seconds (20 by default; e.g. 600 for a
//! long run).

use std::time::{Duration, Instant};

use deskmail_mailparse::{Limits, ParseError, parse};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sha2::{Digest, Sha256};

use crate::mail_files;

/// Pieces of MIME that make mutations interesting.
const TOKENS: &[&[u8]] = &[
    b"\r\n\r\n",
    b"\r\n",
    b"\n",
    b"--",
    b"=?utf-8?B?",
    b"=?iso-2022-jp?q?=1b$B",
    b"?=",
    b"=\r\n",
    b"Content-Type: multipart/mixed; boundary=\"x\"\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: message/delivery-status\r\n",
    b"Content-Type: text/plain; charset=gb2312\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n",
    b"Content-Disposition: attachment; filename*0*=utf-8''%e2%82; filename*1=x\r\n",
    b"\r\n--x\r\n",
    b"\r\n--x--\r\n",
    b"begin 644 a\r\n",
    b"From: \"a\" <>, <b@c>\r\n",
    b"\xff\xfe\x00",
];

/// The messages of mail-parser 0.11's `debug_assert!(false, ..)`s (parsers/message.rs).
const DEBUG_ONLY_ASSERTS: &[&str] = &[
    "Invalid part ID, could not find multipart.",
    "Invalid part ID, could not find message.",
    "Failed to restore parent message. Aborting.",
    "This should not have happened.",
];

static GUARD_HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Clone)]
enum Mutation {
    Flip { pos: usize, byte: u8 },
    Insert { pos: usize, token: usize },
    Delete { pos: usize, len: usize },
    Duplicate { pos: usize, len: usize },
    Truncate { pos: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(pos, byte)| Mutation::Flip { pos, byte }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(pos, token)| Mutation::Insert { pos, token }),
        (any::<usize>(), 0usize..200).prop_map(|(pos, len)| Mutation::Delete { pos, len }),
        (any::<usize>(), 0usize..400).prop_map(|(pos, len)| Mutation::Duplicate { pos, len }),
        any::<usize>().prop_map(|pos| Mutation::Truncate { pos }),
    ]
}

fn apply(mut raw: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = raw.len().max(1);
        match *m {
            Mutation::Flip { pos, byte } => {
                if let Some(b) = raw.get_mut(pos % n) {
                    *b = byte;
                }
            }
            Mutation::Insert { pos, token } => {
                let at = pos % (raw.len() + 1);
                raw.splice(at..at, TOKENS[token].iter().copied());
            }
            Mutation::Delete { pos, len } => {
                let at = pos % n;
                let end = (at + len).min(raw.len());
                if at < end {
                    raw.drain(at..end);
                }
            }
            Mutation::Duplicate { pos, len } => {
                let at = pos % n;
                let end = (at + len).min(raw.len());
                if at < end {
                    let piece = raw[at..end].to_vec();
                    raw.splice(at..at, piece);
                }
            }
            Mutation::Truncate { pos } => {
                // Keep at least half, so most inputs stay mail-like.
                let keep = raw.len() / 2 + pos % (raw.len() / 2 + 1);
                raw.truncate(keep);
            }
        }
    }
    raw
}

fn check(raw: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    match parse(raw, limits) {
        Ok(m) => {
            // mail-parser's `debug_assert!(false, ..)`s fire in debug builds only (release:
            // no-op, it recovers); any other panic in it is a finding.
            let failure = m.problems.iter().find(|p| p.contains("parser failure"));
            if let Some(f) = failure {
                prop_assert!(
                    cfg!(debug_assertions) && DEBUG_ONLY_ASSERTS.iter().any(|a| f.contains(a)),
                    "mail-parser failed (guard fired): {:?}",
                    m.problems
                );
                GUARD_HITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            for a in &m.attachments {
                prop_assert_eq!(a.size, a.content.len());
                prop_assert_eq!(&a.sha256, &hex::encode(Sha256::digest(&a.content)));
                prop_assert_eq!(a.content_type.to_lowercase(), a.content_type.clone());
            }
            for (_, v) in &m.headers {
                prop_assert!(v.len() <= limits.max_header_bytes);
            }
            prop_assert!(m.attachments.len() < limits.max_parts);
            if let Some(id) = &m.message_id {
                prop_assert!(!id.starts_with('<') && !id.ends_with('>'));
            }
        }
        Err(ParseError::Unreadable(reason)) => prop_assert!(!reason.is_empty()),
        Err(ParseError::TooLarge { size, max }) => prop_assert!(size > max),
    }
    Ok(())
}

#[test]
fn mutated_corpus_mails_never_break_parse() {
    let secs: u64 = std::env::var("DESKMAIL_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let files: Vec<Vec<u8>> = ["mail-parser", "zammad", "otrs", "rt"]
        .iter()
        .flat_map(|f| mail_files(f))
        .map(|p| std::fs::read(p).unwrap())
        .filter(|b| b.len() < 400 * 1024)
        .collect();
    assert!(files.len() > 200, "only {} corpus mails", files.len());
    // Smaller limits than the defaults, so the limit paths are exercised too.
    let limits = Limits { max_bytes: 1024 * 1024, max_parts: 40, max_depth: 6, max_header_bytes: 2048 };
    let strategy = (0..files.len(), prop::collection::vec(mutation(), 1..12));
    let start = Instant::now();
    let cases = std::cell::Cell::new(0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        // A fresh runner (random seed) per round: a runner counts its cases and stops.
        let mut runner =
            TestRunner::new(Config { cases: 64, failure_persistence: None, ..Config::default() });
        let result = runner.run(&strategy, |(i, muts)| {
            cases.set(cases.get() + 1);
            let raw = apply(files[i].clone(), &muts);
            check(&raw, &limits)?;
            check(&raw, &Limits::default())
        });
        if let Err(e) = result {
            panic!("after {} cases: {e}", cases.get());
        }
    }
    let rounds = cases.get();
    println!(
        "fuzz: {} mutated mails (each parsed with small and default limits) in {:?} without a failure; \
         mail-parser debug-only assertions caught by the guard: {}",
        rounds,
        start.elapsed(),
        GUARD_HITS.load(std::sync::atomic::Ordering::Relaxed)
    );
}
