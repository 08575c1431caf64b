//! `deskmail-demo-mail`: the test kit's private Dovecot + Postfix as a local demo mail server
//! for `make run` / `make demo`, with a support mailbox and a customer mailbox.
//!
//! It starts the stack, writes the ports and passwords to `--env-file` (shell `KEY=value`
//! lines, read by `scripts/run.sh`), prints where things are, and runs until SIGINT or
//! SIGTERM, when it stops both servers and removes their files. If it is killed, the stack's
//! watchdog does the same within a second. Needs root, like the test kit (Postfix and Dovecot
//! drop to their own users).
// Its output is for the person running `make run`, not a log.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context;
use deskmail_testkit::mail::MailStack;
use tokio::signal::unix::{SignalKind, signal};

/// The support desk's inbound and outbound mailbox.
const SUPPORT: (&str, &str) = ("support@desk.test", "support-demo-pass");
/// The customer who writes to the desk.
const CUSTOMER: (&str, &str) = ("customer@client.test", "customer-demo-pass");

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut env_file: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--env-file" => env_file = Some(args.next().context("--env-file needs a path")?.into()),
            "-h" | "--help" => {
                println!("usage: deskmail-demo-mail [--env-file PATH]");
                return Ok(());
            }
            other => {
                anyhow::bail!("unknown argument {other:?} (usage: deskmail-demo-mail [--env-file PATH])")
            }
        }
    }

    let stack = MailStack::builder().user(SUPPORT.0, SUPPORT.1).user(CUSTOMER.0, CUSTOMER.1).start()?;
    let lines = [
        format!("DEMO_MAIL_HOST={}", stack.host()),
        format!("DEMO_IMAP_PORT={}", stack.imap_port()),
        format!("DEMO_IMAPS_PORT={}", stack.imaps_port()),
        format!("DEMO_POP3_PORT={}", stack.pop3_port()),
        format!("DEMO_SMTP_PORT={}", stack.smtp_port()),
        format!("DEMO_SUBMISSION_PORT={}", stack.submission_port()),
        format!("DEMO_SMTPS_PORT={}", stack.smtps_port()),
        format!("DEMO_CA_PEM={}", stack.ca_pem_path().display()),
        format!("DEMO_SUPPORT={}", SUPPORT.0),
        format!("DEMO_SUPPORT_PASSWORD={}", SUPPORT.1),
        format!("DEMO_CUSTOMER={}", CUSTOMER.0),
        format!("DEMO_CUSTOMER_PASSWORD={}", CUSTOMER.1),
        format!("DEMO_MAIL_PID={}", std::process::id()),
    ];
    let text = lines.join("\n") + "\n";
    if let Some(path) = &env_file {
        // Written whole then renamed, so a reader never sees half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    }
    println!(
        "deskmail-demo-mail: Dovecot IMAP 127.0.0.1:{} (STARTTLS) / {} (TLS), Postfix SMTP 127.0.0.1:{}, submission {}; mailboxes {} and {}",
        stack.imap_port(),
        stack.imaps_port(),
        stack.smtp_port(),
        stack.submission_port(),
        SUPPORT.0,
        CUSTOMER.0
    );

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    if let Some(path) = &env_file {
        let _ = std::fs::remove_file(path);
    }
    stack.stop()?;
    println!("deskmail-demo-mail: stopped");
    Ok(())
}
