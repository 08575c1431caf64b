//! Parse rate of realistic mails: bare mail-parser 0.11 vs `deskmail_mailparse::parse`
//! (which adds limits, header decoding, charset repair, attachments with SHA-256, loop
//! signals and DSN parsing). `cargo bench -p deskmail-mailparse --bench parse`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use deskmail_mailparse::{Limits, parse};
use deskmail_testkit::samples::{SampleGen, fixed_size_with_id};
use mail_parser::MessageParser;

const RUNS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median over RUNS of (msgs/s, MiB/s) for `f` over every mail.
fn measure(mails: &[Vec<u8>], mut f: impl FnMut(&[u8])) -> (f64, f64) {
    let bytes: usize = mails.iter().map(Vec::len).sum();
    // Warm-up.
    for m in mails.iter().take(50) {
        f(m);
    }
    let mut rates = Vec::new();
    let mut mibs = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        for m in mails {
            f(m);
        }
        let s = t.elapsed().max(Duration::from_nanos(1)).as_secs_f64();
        rates.push(mails.len() as f64 / s);
        mibs.push(bytes as f64 / (1024.0 * 1024.0) / s);
    }
    (median(rates), median(mibs))
}

fn compare(label: &str, mails: &[Vec<u8>]) {
    let parser = MessageParser::default();
    let limits = Limits::default();
    let bytes: usize = mails.iter().map(Vec::len).sum();
    let (bare, bare_mib) = measure(mails, |m| {
        let msg = parser.parse(m).unwrap();
        // Read what a caller reads, so the comparison is fair.
        black_box((msg.subject(), msg.body_text(0), msg.attachment_count()));
    });
    let (ours, ours_mib) = measure(mails, |m| {
        black_box(parse(m, &limits).unwrap());
    });
    println!(
        "{label}: {} mails, {:.1} MiB; mail-parser {bare:.0} msgs/s ({bare_mib:.1} MiB/s); \
         deskmail_mailparse::parse {ours:.0} msgs/s ({ours_mib:.1} MiB/s); ratio {:.2}",
        mails.len(),
        bytes as f64 / (1024.0 * 1024.0),
        ours / bare
    );
}

fn main() {
    println!("parse bench: medians of {RUNS} runs");
    let realistic: Vec<Vec<u8>> = SampleGen::new(42).mails(2000).into_iter().map(|s| s.raw).collect();
    compare("realistic (testkit::samples, seed 42)", &realistic);
    let small: Vec<Vec<u8>> =
        SampleGen::new(43).mails(3000).into_iter().map(|s| s.raw).filter(|r| r.len() < 16 * 1024).collect();
    compare("realistic, under 16 KiB only", &small);
    for size in [1024usize, 64 * 1024] {
        let mails: Vec<Vec<u8>> =
            (0..2000).map(|i| fixed_size_with_id(size, &format!("{i}@bench.example"))).collect();
        compare(&format!("fixed_size({size})"), &mails);
    }
}
