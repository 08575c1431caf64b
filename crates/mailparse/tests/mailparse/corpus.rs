//! Every case of `tests/corpus/cases.jsonl`: each expected field it states is checked
//! against `parse`. Expected values are read from the corpus, never written here.
//!
//! A check that differs is a failure unless `corpus_differences.tsv` (beside this file)
//! names the case and the check with the reason; an entry that no longer differs is a
//! failure too, so the list (and CORPUS.md) stays true.

use std::collections::{BTreeMap, HashSet};

use deskmail_mailparse::{AttachmentKind, Limits, ParsedMail, parse};
use md5::{Digest, Md5};
use serde_json::Value;

use crate::{corpus_dir, mail_files};

/// One known difference: case file, check name, reason.
struct Known {
    file: String,
    check: String,
    kind: String,
    reason: String,
}

fn known_differences() -> Vec<Known> {
    let text = include_str!("corpus_differences.tsv");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut it = l.splitn(4, '\t');
            let file = it.next().unwrap().to_owned();
            let check = it.next().expect("check column").to_owned();
            let kind = it.next().expect("kind column").to_owned();
            let reason = it.next().expect("reason column").to_owned();
            assert!(
                kind == "convention" || kind == "differs",
                "corpus_differences.tsv: kind must be convention or differs: {l}"
            );
            assert!(!reason.trim().is_empty(), "corpus_differences.tsv: no reason: {l}");
            Known { file, check, kind, reason }
        })
        .collect()
}

/// The result of one check of one case.
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

struct Checker {
    checks: Vec<Check>,
    /// Checks of zammad's conventions mapped onto ours (e.g. message.html -> html_body).
    conventions: Vec<String>,
}

impl Checker {
    fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check { name: name.into(), ok, detail: detail.into() });
    }
    fn eq(&mut self, name: &str, expected: &str, got: &str) {
        self.check(name, expected == got, format!("expected {expected:?}, got {got:?}"));
    }
}

fn norm_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn norm_addr_header(s: &str) -> String {
    let s = norm_ws(&s.replace('"', ""));
    s.split(", ")
        .map(|a| {
            let a = a.trim();
            if a.starts_with('<') && a.ends_with('>') && !a[1..].contains('<') {
                a[1..a.len() - 1].to_owned()
            } else {
                a.replace("< ", "<").replace(" >", ">").trim().to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn no_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn str_of(v: &Value) -> Option<&str> {
    v.as_str()
}

fn check_case(expect: &Value, raw: &[u8]) -> Checker {
    let mut c = Checker { checks: Vec::new(), conventions: Vec::new() };
    let m = match parse(raw, &Limits::default()) {
        Ok(m) => {
            c.check("parse", true, "");
            m
        }
        Err(e) => {
            c.check("parse", false, format!("parse failed: {e}"));
            return c;
        }
    };
    let e = expect.as_object().unwrap();
    // The author: From, or Reply-To/Sender when From has no address (both corpora's
    // convention too).
    let author = m.author().or(m.from.as_ref());
    let from_addr = author.and_then(|a| a.address.clone());
    let from_name = author.and_then(|a| a.name.clone());

    if let Some(v) = e.get("from_addr").filter(|v| !v.is_null()) {
        c.eq("from_addr", str_of(v).unwrap_or(""), from_addr.as_deref().unwrap_or(""));
    }
    if let Some(v) = e.get("from_name").filter(|v| !v.is_null()) {
        c.eq("from_name", str_of(v).unwrap_or(""), from_name.as_deref().unwrap_or(""));
    }
    if let Some(v) = e.get("to").filter(|v| !v.is_null()) {
        let exp: Vec<Option<String>> =
            v.as_array().unwrap().iter().map(|x| x.as_str().map(str::to_owned)).collect();
        let got: Vec<Option<String>> = m.to.iter().map(|a| a.address.clone()).collect();
        c.check("to", exp == got, format!("expected {exp:?}, got {got:?}"));
    }
    if let Some(v) = e.get("to_names").filter(|v| !v.is_null()) {
        let exp: Vec<Option<String>> =
            v.as_array().unwrap().iter().map(|x| x.as_str().map(str::to_owned)).collect();
        let got: Vec<Option<String>> = m.to.iter().map(|a| a.name.clone()).collect();
        c.check("to_names", exp == got, format!("expected {exp:?}, got {got:?}"));
    }
    for (key, header) in
        [("from_header", "From"), ("to_header", "To"), ("cc_header", "Cc"), ("reply_to_header", "Reply-To")]
    {
        if let Some(v) = e.get(key).filter(|v| !v.is_null()) {
            // zammad re-renders address headers (adds or drops quotes around display
            // names, drops <> around a bare address): compare without those.
            let exp = norm_addr_header(str_of(v).unwrap_or(""));
            let got = norm_addr_header(m.header(header).unwrap_or(""));
            c.eq(key, &exp, &got);
        }
    }
    if let Some(v) = e.get("subject").filter(|v| !v.is_null()) {
        c.eq("subject", str_of(v).unwrap_or("").trim(), m.subject.trim());
    }
    if let Some(v) = e.get("ticket_title").filter(|v| !v.is_null()) {
        // zammad's ticket title is the subject.
        c.eq("ticket_title", str_of(v).unwrap_or("").trim(), m.subject.trim());
    }
    if let Some(v) = e.get("message_id").filter(|v| !v.is_null()) {
        c.eq("message_id", str_of(v).unwrap_or(""), m.message_id.as_deref().unwrap_or(""));
    }
    if let Some(v) = e.get("body_contains").filter(|v| !v.is_null()) {
        let exp = str_of(v).unwrap_or("").replace("\r\n", "\n");
        let got = m.body_text().replace("\r\n", "\n");
        // zammad states some plain bodies as its HTML (it turns text into HTML): compare
        // the text of it then.
        let ok = got.contains(&exp)
            || norm_ws(&got).contains(&norm_ws(&exp))
            || (exp.contains('<') && no_ws(&got).contains(&no_ws(&strip_tags(&exp))));
        let shown: String = got.chars().take(80).collect();
        c.check(
            "body_contains",
            ok,
            format!("expected the text body to contain {exp:?}, it starts {shown:?}"),
        );
    }
    if let Some(v) = e.get("body_html_contains").filter(|v| !v.is_null()) {
        let exp = str_of(v).unwrap_or("");
        let got = m.html_body.as_deref().unwrap_or("");
        // zammad's expected HTML is its sanitised HTML: compare markup ignoring white
        // space, or else the text of it.
        let ok =
            no_ws(got).contains(&no_ws(exp)) || no_ws(&strip_tags(got)).contains(&no_ws(&strip_tags(exp)));
        let shown: String = got.chars().take(80).collect();
        c.check(
            "body_html_contains",
            ok,
            format!("expected the HTML body to contain {exp:?}, it starts {shown:?}"),
        );
    }
    if let Some(v) = e.get("body_content_type").filter(|v| !v.is_null()) {
        // zammad takes the HTML body when there is one.
        let got = if m.html_body.is_some() { "text/html" } else { "text/plain" };
        c.eq("body_content_type", str_of(v).unwrap_or(""), got);
    }
    if let Some(v) = e.get("part_count").filter(|v| !v.is_null()) {
        let exp = v.as_u64().unwrap() as usize;
        c.check("part_count", exp == m.part_count, format!("expected {exp}, got {}", m.part_count));
    }
    if let Some(v) = e.get("is_bounce").filter(|v| !v.is_null()) {
        let exp = v.as_bool().unwrap();
        c.check("is_bounce", exp == m.bounce.is_some(), format!("expected {exp}, got {:?}", m.bounce));
    }
    if let Some(v) = e.get("is_auto_response").filter(|v| !v.is_null()) {
        let exp = v.as_bool().unwrap();
        let got = m.loop_signals.is_auto_response();
        c.check("is_auto_response", exp == got, format!("expected {exp}, got {got} ({:?})", m.loop_signals));
    }
    if let Some(v) = e.get("users_created").filter(|v| !v.is_null()) {
        // Every user zammad created must be an address the parser found.
        let mut known: HashSet<String> = HashSet::new();
        for a in m
            .from
            .iter()
            .chain(m.reply_to.iter())
            .chain(m.to.iter())
            .chain(m.cc.iter())
            .chain(m.sender.iter())
        {
            if let Some(x) = &a.address {
                known.insert(x.to_lowercase());
            }
        }
        for u in v.as_array().unwrap() {
            let u = u.as_str().unwrap_or("").to_lowercase();
            c.check(
                format!("users_created[{u}]"),
                known.contains(&u),
                format!("{u} not among the parsed addresses {known:?}"),
            );
        }
    }
    if let Some(v) = e.get("attachments_include").filter(|v| !v.is_null()) {
        for name in v.as_array().unwrap() {
            let name = name.as_str().unwrap_or("");
            let got: Vec<_> = m.attachments.iter().filter_map(|a| a.filename.clone()).collect();
            c.check(
                format!("attachments_include[{name}]"),
                got.iter().any(|g| g == name),
                format!("{name} not among {got:?}"),
            );
        }
    }
    if let Some(v) = e.get("attachments").filter(|v| !v.is_null()) {
        check_attachments(&mut c, v.as_array().unwrap(), &m);
    }
    c
}

fn check_attachments(c: &mut Checker, expected: &[Value], m: &ParsedMail) {
    let mut rest: Vec<&Value> = Vec::new();
    for exp in expected {
        if exp.get("content_alternative").and_then(Value::as_bool) == Some(true) {
            // zammad's convention: the HTML alternative listed as attachment
            // "message.html". Ours: it is the HTML body.
            c.conventions
                .push("zammad lists the HTML body as attachment message.html; here it is html_body".into());
            c.check("attachment[message.html]->html_body", m.html_body.is_some(), "no HTML body");
            continue;
        }
        rest.push(exp);
    }
    c.check(
        "attachments.count",
        rest.len() == m.attachments.len(),
        format!(
            "expected {} attachments, got {}: {:?}",
            rest.len(),
            m.attachments.len(),
            m.attachments
                .iter()
                .map(|a| (a.filename.clone(), a.content_type.clone(), a.size, a.kind))
                .collect::<Vec<_>>()
        ),
    );
    let mut used = vec![false; m.attachments.len()];
    for (i, exp) in rest.iter().enumerate() {
        let want_name = exp.get("filename").and_then(Value::as_str);
        let want_ct = exp.get("content_type").and_then(Value::as_str);
        // By name, else by content type in order, else by position.
        let idx = (0..m.attachments.len())
            .find(|&j| !used[j] && want_name.is_some() && m.attachments[j].filename.as_deref() == want_name)
            .or_else(|| {
                (0..m.attachments.len()).find(|&j| {
                    !used[j] && want_ct.is_some_and(|ct| m.attachments[j].content_type == ct.to_lowercase())
                })
            })
            .or_else(|| (i < used.len() && !used[i]).then_some(i));
        let label = want_name.map_or_else(|| format!("#{i}"), str::to_owned);
        let Some(j) = idx else {
            c.check(format!("attachment[{label}]"), false, "not found");
            continue;
        };
        used[j] = true;
        let a = &m.attachments[j];
        if let Some(n) = want_name {
            c.eq(&format!("attachment[{label}].filename"), n, a.filename.as_deref().unwrap_or(""));
        }
        if let Some(ct) = want_ct {
            c.eq(&format!("attachment[{label}].content_type"), &ct.to_lowercase(), &a.content_type);
        }
        if let Some(sz) = exp.get("size").and_then(Value::as_u64) {
            c.check(
                format!("attachment[{label}].size"),
                sz as usize == a.size,
                format!("expected {sz}, got {}", a.size),
            );
        }
        if let Some(md5) = exp.get("md5").and_then(Value::as_str) {
            c.eq(&format!("attachment[{label}].md5"), md5, &md5_hex(&a.content));
        }
        if let Some(cid) = exp.get("content_id").and_then(Value::as_str) {
            let cid = cid.trim_start_matches('<').trim_end_matches('>');
            c.eq(&format!("attachment[{label}].content_id"), cid, a.content_id.as_deref().unwrap_or(""));
        }
        if let Some(inline) = exp.get("inline").and_then(Value::as_bool) {
            c.check(
                format!("attachment[{label}].inline"),
                inline == a.inline,
                format!("expected {inline}, got {}", a.inline),
            );
        }
        if let Some(kind) = exp.get("kind").and_then(Value::as_str) {
            // mail-parser's kinds: only "attached message" has a counterpart here.
            let exp_msg = kind == "Message";
            c.check(
                format!("attachment[{label}].kind"),
                exp_msg == (a.kind == AttachmentKind::Message),
                format!("expected mail-parser kind {kind}, got {:?}", a.kind),
            );
        }
        if let Some(content) = exp.get("content").and_then(Value::as_str) {
            let got = String::from_utf8_lossy(&a.content);
            c.check(
                format!("attachment[{label}].content"),
                got.replace("\r\n", "\n").starts_with(&content.replace("\r\n", "\n")),
                format!("expected content starting {content:?}"),
            );
        }
    }
}

#[derive(Default)]
struct FolderTally {
    cases: usize,
    pass: usize,
    convention: usize,
    differs: usize,
}

#[test]
fn corpus_cases_match_their_expectations() {
    let known = known_differences();
    let mut used_known = vec![false; known.len()];
    let text = std::fs::read_to_string(corpus_dir().join("cases.jsonl")).unwrap();
    let mut tally: BTreeMap<String, FolderTally> = BTreeMap::new();
    let mut unexpected = Vec::new();
    let mut report = Vec::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let file = case["file"].as_str().unwrap().to_owned();
        let folder = file.split('/').next().unwrap().to_owned();
        let raw = std::fs::read(corpus_dir().join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let c = check_case(&case["expect"], &raw);
        n += 1;
        let t = tally.entry(folder).or_default();
        t.cases += 1;
        let mut case_differs = false;
        let mut case_convention = !c.conventions.is_empty();
        for ch in c.checks.iter().filter(|ch| !ch.ok) {
            match known.iter().position(|k| k.file == file && (k.check == ch.name || k.check == "*")) {
                Some(i) => {
                    used_known[i] = true;
                    if known[i].kind == "convention" {
                        case_convention = true;
                    } else {
                        case_differs = true;
                    }
                    report.push(format!("{file}\t{}\t{}\t{}", ch.name, known[i].kind, known[i].reason));
                }
                None => unexpected.push(format!("{file}: {}: {}", ch.name, ch.detail)),
            }
        }
        if case_differs {
            t.differs += 1;
        } else if case_convention {
            t.convention += 1;
        } else {
            t.pass += 1;
        }
    }
    assert!(n >= 200, "cases.jsonl has only {n} cases");
    println!("corpus: per folder: cases, pass, pass by convention, differ");
    for (folder, t) in &tally {
        println!(
            "  {folder}: {} cases, {} pass, {} pass by convention, {} differ",
            t.cases, t.pass, t.convention, t.differs
        );
    }
    for r in &report {
        println!("  known: {r}");
    }
    let stale: Vec<_> = known
        .iter()
        .zip(&used_known)
        .filter(|(_, u)| !**u)
        .map(|(k, _)| format!("{}\t{}", k.file, k.check))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} checks differ and are not in corpus_differences.tsv:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        stale.is_empty(),
        "corpus_differences.tsv lists checks that now pass (remove them):\n{}",
        stale.join("\n")
    );
}

/// The otrs/ and rt/ mails (no expectations): each parses to Ok or to a ParseError with
/// a reason, never a panic; what parses has a subject or a sender or a body.
#[test]
fn otrs_and_rt_mails_parse_or_fail_with_a_reason() {
    let mut ok = 0;
    let mut errs = Vec::new();
    let files: Vec<_> = mail_files("otrs").into_iter().chain(mail_files("rt")).collect();
    assert!(files.len() >= 40, "only {} otrs/rt mails found", files.len());
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        match parse(&raw, &Limits::default()) {
            Ok(m) => {
                ok += 1;
                assert!(!m.headers.is_empty() || m.text_body.is_some(), "{}: parsed to nothing", f.display());
            }
            Err(e) => {
                let reason = e.to_string();
                assert!(!reason.is_empty());
                errs.push(format!("{}: {reason}", f.display()));
            }
        }
    }
    println!("otrs+rt: {} files, {ok} parsed, {} refused: {errs:?}", files.len(), errs.len());
}
