//! Putting messages into mailboxes: LMTP (the real delivery path) and a Maildir drop
//! (fast bulk), plus counting them with doveadm.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::chown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::files::{Ids, mkdir_owned};

/// Envelope sender for [`super::MailStack::deliver`]; not the null sender, which would
/// mark the message as a bounce.
pub(super) const LMTP_SENDER: &str = "testkit@deskmail.invalid";

/// One LMTP session over Dovecot's unix socket, one message per call.
pub(super) struct Lmtp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Lmtp {
    pub(super) fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connect to Dovecot LMTP socket {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        let mut lmtp = Self { reader: BufReader::new(stream), writer };
        lmtp.expect("greeting", "220")?;
        lmtp.command("LHLO deskmail-testkit", "250")?;
        Ok(lmtp)
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    fn expect(&mut self, what: &str, code: &str) -> Result<()> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).with_context(|| format!("LMTP {what}"))?;
            if n == 0 {
                bail!("LMTP {what}: connection closed; so far: {all:?}");
            }
            all.push_str(&line);
            // "250-..." continues, "250 ..." ends a reply.
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        if !all.starts_with(code) {
            bail!("LMTP {what}: expected {code}, got {:?}", all.trim_end());
        }
        Ok(())
    }

    fn command(&mut self, line: &str, code: &str) -> Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.expect(line, code)
    }

    pub(super) fn deliver(&mut self, sender: &str, rcpt: &str, raw: &[u8]) -> Result<()> {
        self.command(&format!("MAIL FROM:<{sender}>"), "250")?;
        self.command(&format!("RCPT TO:<{rcpt}>"), "250")?;
        self.command("DATA", "354")?;
        self.writer.write_all(&dot_stuff_crlf(raw))?;
        self.writer.write_all(b".\r\n")?;
        self.expect("end of DATA", "250")
    }

    pub(super) fn quit(mut self) {
        let _ = self.command("QUIT", "221");
    }
}

/// CRLF line endings, a final CRLF, and a '.' doubled at the start of a line.
fn dot_stuff_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The Maildir of `address` (`mail_location = maildir:T/mail/%d/%n/Maildir`).
pub(super) fn maildir_of(dir: &Path, address: &str) -> Result<PathBuf> {
    let (local, domain) = address.rsplit_once('@').context("address without @")?;
    Ok(dir.join("mail").join(domain).join(local).join("Maildir"))
}

/// Writes each message as a file in `Maildir/tmp`, renames it into `new/`, owner mail:mail.
/// Dovecot indexes them on its next access. Line endings become LF, as Maildir expects.
pub(super) fn maildir_drop<I, B>(dir: &Path, address: &str, ids: &Ids, msgs: I) -> Result<usize>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let maildir = maildir_of(dir, address)?;
    let (uid, gid) = (ids.mail_uid, ids.mail_gid);
    let mut path = dir.join("mail");
    for part in maildir.strip_prefix(&path).context("maildir outside the stack dir")? {
        path.push(part);
        mkdir_owned(&path, 0o700, uid, gid)?;
    }
    for sub in ["cur", "new", "tmp"] {
        mkdir_owned(&maildir.join(sub), 0o700, uid, gid)?;
    }
    let pid = std::process::id();
    let mut count = 0;
    for msg in msgs {
        // Dovecot orders new mail by the leading number of the name: keep it increasing.
        let name = format!("{:012}.P{pid}.deskmail-testkit", SEQ.fetch_add(1, Ordering::Relaxed));
        let tmp = maildir.join("tmp").join(&name);
        let body: Vec<u8> = msg.as_ref().iter().copied().filter(|&b| b != b'\r').collect();
        fs::write(&tmp, &body).with_context(|| format!("write {}", tmp.display()))?;
        chown(&tmp, Some(uid), Some(gid)).with_context(|| format!("chown {}", tmp.display()))?;
        fs::rename(&tmp, maildir.join("new").join(&name))
            .with_context(|| format!("move {name} into new/"))?;
        count += 1;
    }
    Ok(count)
}

/// `doveadm -c CONF -f tab mailbox status -u USER messages FOLDER` → the number.
pub(super) fn message_count(doveadm: &Path, conf: &Path, user: &str, folder: &str) -> Result<usize> {
    let out = Command::new(doveadm)
        .arg("-c")
        .arg(conf)
        .args(["-f", "tab", "mailbox", "status", "-u", user, "messages", folder])
        .output()
        .context("run doveadm")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "`doveadm mailbox status -u {user} messages {folder}` failed ({}): {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    // "mailbox\tmessages\nINBOX\t5": the number is the last field of the last line.
    let field = last.rsplit('\t').next().unwrap_or_default();
    field.trim().parse().with_context(|| format!("unexpected doveadm output: {stdout:?}"))
}

#[cfg(test)]
mod tests {
    use super::dot_stuff_crlf;

    #[test]
    fn stuffing_table() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"a\nb", b"a\r\nb\r\n"),
            (b"a\r\n.b\r\n", b"a\r\n..b\r\n"),
            (b".\n", b"..\r\n"),
            (b"", b""),
            (b"x\n\n..y", b"x\r\n\r\n...y\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(dot_stuff_crlf(input), want, "input {:?}", String::from_utf8_lossy(input));
        }
    }
}
