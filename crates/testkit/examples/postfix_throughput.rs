//! Throughput of a test kit `MailStack`: Postfix's `smtp-source` sends N mails of SIZE
//! bytes over plain SMTP to one mailbox of a local domain; prints accepted/s (smtp-source
//! wall time) and delivered/s (until the INBOX holds N messages).
//!
//! ```sh
//! cargo run -p deskmail-testkit --example postfix_throughput
//! ```
//!
//! Env: `MAILS` (5000), `SESSIONS` (8, smtp-source `-s`), `SIZE` (8192), `RUNS` (1, a fresh
//! stack each, median printed), `DESKMAIL_TESTKIT_DIR` (the stacks' parent dir, see
//! `MailStack`). For experiments: `BENCH_POSTCONF` (`;`-separated `postconf -e` settings
//! for main.cf), `BENCH_MASTER` (`;`-separated `postconf -F` edits of master.cf, e.g.
//! `cleanup/unix/process_limit=4`), `BENCH_DOVECOT` (lines appended to dovecot.conf, `;`
//! = newline); any of them restarts the daemon concerned before the run. `BENCH_KEEP_LOGS=P`
//! copies both logs to `P.maillog` and `P.dovecot.log`.
// Its output is the measurement.
#![allow(clippy::print_stdout)]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deskmail_testkit::mail::MailStack;

const TO: &str = "customer@client.test";
const FROM: &str = "sender@desk.test";

fn env_num(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(';')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Messages in `Maildir/new` + `Maildir/cur`: a cheap poll that takes no Dovecot lock.
fn files_in_inbox(stack: &MailStack) -> Result<usize> {
    let maildir = stack.maildir(TO)?;
    let mut n = 0;
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(maildir.join(sub)) {
            n += entries.count();
        }
    }
    Ok(n)
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Applies the `BENCH_*` overrides and restarts what they concern.
fn apply_overrides(stack: &MailStack) -> Result<()> {
    let postconf = env_list("BENCH_POSTCONF");
    let master = env_list("BENCH_MASTER");
    let dovecot = env_list("BENCH_DOVECOT");
    if !dovecot.is_empty() {
        let path = stack.dovecot_conf_path();
        let mut conf = std::fs::read_to_string(&path)?;
        conf.push('\n');
        for line in &dovecot {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(&path, conf)?;
        // Postfix goes too: its smtpd would fail on the missing auth socket meanwhile.
        stack.stop_postfix()?;
        stack.restart_dovecot()?;
    }
    if !dovecot.is_empty() || !postconf.is_empty() || !master.is_empty() {
        let etc = stack.postfix_conf_dir();
        if !postconf.is_empty() {
            run_cmd(Command::new("postconf").arg("-c").arg(&etc).arg("-e").args(&postconf))?;
        }
        if !master.is_empty() {
            run_cmd(Command::new("postconf").arg("-c").arg(&etc).arg("-F").arg("-e").args(&master))?;
        }
        // Postfix re-reads a config file until its mtime is old: backdate it (as the kit does).
        for f in ["main.cf", "master.cf"] {
            std::fs::File::options()
                .write(true)
                .open(etc.join(f))?
                .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000))?;
        }
        stack.restart_postfix()?;
    }
    Ok(())
}

struct Sample {
    accepted: f64,
    delivered: f64,
}

fn one_run(mails: usize, sessions: usize, size: usize) -> Result<Sample> {
    let stack = MailStack::builder().user(TO, "customer-pass").start()?;
    apply_overrides(&stack)?;
    let t0 = Instant::now();
    let out = Command::new("smtp-source")
        .args(["-s", &sessions.to_string(), "-l", &size.to_string(), "-m", &mails.to_string()])
        .args(["-f", FROM, "-t", TO])
        .arg(format!("127.0.0.1:{}", stack.smtp_port()))
        .output()
        .context("run smtp-source (Debian's postfix package)")?;
    let accepted_in = t0.elapsed();
    if !out.status.success() {
        bail!(
            "smtp-source failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stack.logs()
        );
    }
    let deadline = t0 + Duration::from_secs(120 + (mails as u64) / 20);
    loop {
        if files_in_inbox(&stack)? >= mails {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {mails} delivered\n{}", files_in_inbox(&stack)?, stack.logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let delivered_in = t0.elapsed();
    let count = stack.message_count(TO, "INBOX")?;
    if count != mails {
        bail!("INBOX holds {count} messages, expected {mails}");
    }
    let warnings = log_warnings(&stack);
    if !warnings.is_empty() {
        println!("  log warnings:\n{warnings}");
    }
    let sample = Sample {
        accepted: mails as f64 / accepted_in.as_secs_f64(),
        delivered: mails as f64 / delivered_in.as_secs_f64(),
    };
    println!(
        "  run in {}: accepted {:.0}/s ({:.2?}), delivered {:.0}/s ({:.2?})",
        stack.dir().display(),
        sample.accepted,
        accepted_in,
        sample.delivered,
        delivered_in
    );
    if let Ok(keep) = std::env::var("BENCH_KEEP_LOGS") {
        std::fs::copy(stack.postfix_log_path(), format!("{keep}.maillog"))?;
        std::fs::copy(stack.dovecot_log_path(), format!("{keep}.dovecot.log"))?;
    }
    stack.stop()?;
    Ok(sample)
}

/// Distinct warning/error/fatal lines of both logs (first 10).
fn log_warnings(stack: &MailStack) -> String {
    let mut seen = Vec::new();
    for path in [stack.postfix_log_path(), stack.dovecot_log_path()] {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let lower = line.to_ascii_lowercase();
            // The kit's port probe makes SMTPS log an SSL_accept error at every start.
            if ["warning", "error", "fatal", "panic"].iter().any(|w| lower.contains(w))
                && !line.contains("SSL_accept error")
            {
                // Drop the timestamp and pid so that repeats collapse.
                let key: String = line.splitn(4, ' ').nth(3).unwrap_or(line).to_string();
                let key = key.split_once(": ").map(|(_, rest)| rest.to_string()).unwrap_or(key);
                if !seen.contains(&key) {
                    seen.push(key);
                }
            }
        }
    }
    seen.iter().take(10).map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<()> {
    let mails = env_num("MAILS", 5000)?;
    let sessions = env_num("SESSIONS", 8)?;
    let size = env_num("SIZE", 8192)?;
    let runs = env_num("RUNS", 1)?.max(1);
    println!("postfix_throughput: {mails} mails of {size} B, {sessions} sessions, {runs} run(s)");
    let mut samples = Vec::new();
    for _ in 0..runs {
        samples.push(one_run(mails, sessions, size)?);
    }
    let accepted = median(samples.iter().map(|s| s.accepted).collect());
    let delivered = median(samples.iter().map(|s| s.delivered).collect());
    println!("median: accepted {accepted:.0}/s, delivered {delivered:.0}/s");
    Ok(())
}
