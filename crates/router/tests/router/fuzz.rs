//! Parse-and-dispatch never panics: a proptest over corpus mails mutated byte-wise and
//! structurally (cut, spliced, boundaries and encoded words injected, header lines repeated).
//! `cargo test` runs 200 cases; a long run: `PROPTEST_CASES=200000 cargo nextest run -p
//! deskmail-router fuzz` (about ten minutes here).

use std::sync::OnceLock;

use deskmail_mailparse::Limits;
use deskmail_router::dispatch::{Plan, plan};
use deskmail_router::rules::{FilterRule, Rules, SystemAddress};
use proptest::prelude::*;

fn corpus() -> &'static Vec<Vec<u8>> {
    static MAILS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    MAILS.get_or_init(|| {
        let mut files = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
        let root = if root.exists() { root } else { std::path::PathBuf::from("/work/shared/corpus") };
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if !matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("json" | "yml" | "jsonl" | "md")
                ) {
                    files.push(std::fs::read(&p).unwrap());
                }
            }
        }
        assert!(files.len() > 200, "corpus not found");
        files
    })
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut r = Rules::default();
        r.addresses.insert(
            "support@desk.test".into(),
            SystemAddress {
                address: "support@desk.test".into(),
                display_name: "Desk".into(),
                queue_id: Some("q".into()),
            },
        );
        r.filters.push(FilterRule {
            name: "any".into(),
            header: "Subject".into(),
            pattern: regex::Regex::new("(?i)invoice|ticket").unwrap(),
            set_queue_id: Some("q2".into()),
            set_priority: Some(2),
            ignore: false,
            stop: false,
        });
        r
    })
}

const TOKENS: &[&[u8]] = &[
    b"\r\n--",
    b"=?utf-8?B?",
    b"=?iso-2022-jp?q?=1B$B",
    b"?=",
    b"\r\nContent-Type: multipart/mixed; boundary=\"",
    b"\r\nContent-Type: message/rfc822\r\n\r\n",
    b"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    b"\r\nContent-Disposition: attachment; filename*0*=utf-8''%E2%82",
    b"\r\n\r\n",
    b"\0",
    b"\xff\xfe",
    b"begin 644 x.bin\r\nM",
    b"[Ticket#12345678901234567890123]",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=a\r\n\r\n--a\r\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Cut(usize),
    Splice(usize, usize, usize),
    Repeat(usize, usize),
}

fn apply(mut raw: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    let mails = corpus();
    for m in mutations {
        let len = raw.len().max(1);
        match *m {
            Mutation::Flip(at, byte) => {
                if !raw.is_empty() {
                    raw[at % len] ^= byte;
                }
            }
            Mutation::Insert(at, token) => {
                let at = at % (raw.len() + 1);
                raw.splice(at..at, TOKENS[token % TOKENS.len()].iter().copied());
            }
            Mutation::Cut(at) => raw.truncate(at % len),
            Mutation::Splice(other, from, at) => {
                let o = &mails[other % mails.len()];
                let from = from % (o.len() + 1);
                let at = at % (raw.len() + 1);
                raw.splice(at..at, o[from..].iter().take(4096).copied());
            }
            Mutation::Repeat(at, times) => {
                let at = at % len;
                let end = raw[at..].iter().position(|&b| b == b'\n').map_or(raw.len(), |p| at + p + 1);
                let line = raw[at..end].to_vec();
                for _ in 0..times % 200 {
                    raw.splice(at..at, line.iter().copied());
                }
            }
        }
    }
    raw
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, t)| Mutation::Insert(a, t)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(o, f, a)| Mutation::Splice(o, f, a)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, t)| Mutation::Repeat(a, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_and_dispatch_never_panic(index in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..8)) {
        let mails = corpus();
        let raw = apply(mails[index % mails.len()].clone(), &mutations);
        let limits = Limits { max_bytes: 1 << 20, ..Limits::default() };
        match plan(&raw, Some("mbx"), rules(), &limits) {
            Plan::Article(a) => prop_assert!(a.message_id.as_ref().is_none_or(|m| m.len() <= 250 && !m.contains('\0'))),
            Plan::Ignore { reason } | Plan::Dead { reason } => prop_assert!(!reason.is_empty()),
        }
    }
}
