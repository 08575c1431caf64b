//! SMTP failure injection for a [`MailStack`]'s Postfix (`shared/recipes/mail-stack-extras.md`
//! §3): per-recipient answers (`rcpt_access`) and a server-wide switch (`server_state`), both
//! hash maps checked at RCPT on all three smtpd ports. Each change is `postmap`ped and followed
//! by `postfix reload`, so the next new connection sees it (pitfall 3); a session already open
//! may still answer from the old map.
//!
//! Also [`SmtpSink`]: Postfix's `smtp-sink`, a fast discarding SMTP server, on a free port
//! (recipe §4), for benchmarks and for a relay that answers every connection with 421.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::MailStack;

const POSTMAP: &str = "/usr/sbin/postmap";
const POSTFIX: &str = "/usr/sbin/postfix";
const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// The two maps, empty (each with a comment line), postmapped. Called before Postfix starts.
pub(super) fn prepare(dir: &Path) -> Result<()> {
    let etc = dir.join("postfix/etc");
    for map in ["rcpt_access", "server_state"] {
        let path = etc.join(map);
        if !path.exists() {
            std::fs::write(&path, "# managed by deskmail-testkit\n")
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    postmap(&etc)
}

/// Backdates the config dir's files (postmap waits ~1.5 s for a "fresh" main.cf otherwise,
/// pitfall 2) and rebuilds both maps.
fn postmap(etc: &Path) -> Result<()> {
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for f in ["main.cf", "master.cf"] {
        let p = etc.join(f);
        if p.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|file| file.set_modified(old))
                .with_context(|| format!("backdate {}", p.display()))?;
        }
    }
    let out = Command::new(POSTMAP)
        .arg("-c")
        .arg(etc)
        .arg(format!("hash:{}", etc.join("rcpt_access").display()))
        .arg(format!("hash:{}", etc.join("server_state").display()))
        .output()
        .with_context(|| format!("run {POSTMAP} (run `make services` to install Postfix)"))?;
    if !out.status.success() {
        bail!("postmap failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn valid_answer(answer: &str) -> Result<()> {
    let code = answer.get(..3).unwrap_or("");
    if !(code.starts_with('4') || code.starts_with('5')) || !code.chars().all(|c| c.is_ascii_digit()) {
        bail!("answer {answer:?} must start with a 4xx or 5xx code");
    }
    if answer.contains(['\r', '\n']) {
        bail!("answer must be one line");
    }
    Ok(())
}

fn read_map(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(char::is_whitespace).map(|(k, v)| (k.to_owned(), v.trim().to_owned())))
        .collect())
}

fn write_map(path: &Path, map: &BTreeMap<String, String>) -> Result<()> {
    let mut text = String::from("# managed by deskmail-testkit\n");
    for (k, v) in map {
        text.push_str(&format!("{k} {v}\n"));
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

impl MailStack {
    fn apply_maps(&self) -> Result<()> {
        let etc = self.postfix_conf_dir();
        postmap(&etc)?;
        if self.postfix_pid().is_some() {
            let out = Command::new(POSTFIX)
                .arg("-c")
                .arg(&etc)
                .arg("reload")
                .stdout(Stdio::null())
                .output()
                .with_context(|| format!("run {POSTFIX} reload"))?;
            if !out.status.success() {
                bail!("postfix reload failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    }

    /// Makes Postfix answer RCPT TO:`addr` with `answer` (e.g. `450 4.2.0 try again later`,
    /// `550 5.1.1 no such user`) on every port, from the next new connection on. Postfix
    /// prefixes the text: `450 4.2.0 <addr>: Recipient address rejected: try again later`.
    pub fn set_recipient_answer(&self, addr: &str, answer: &str) -> Result<()> {
        valid_answer(answer)?;
        if addr.is_empty() || addr.contains(char::is_whitespace) {
            bail!("bad address {addr:?}");
        }
        let path = self.postfix_conf_dir().join("rcpt_access");
        let mut map = read_map(&path)?;
        map.insert(addr.to_ascii_lowercase(), answer.to_owned());
        write_map(&path, &map)?;
        self.apply_maps()
    }

    /// Lets RCPT TO:`addr` through again (a 250 from the next new connection on).
    pub fn clear_recipient_answer(&self, addr: &str) -> Result<()> {
        let path = self.postfix_conf_dir().join("rcpt_access");
        let mut map = read_map(&path)?;
        map.remove(&addr.to_ascii_lowercase());
        write_map(&path, &map)?;
        self.apply_maps()
    }

    /// Server-wide: every RCPT from 127.0.0.1 gets `answer` (e.g. `421 4.3.2 service shutting
    /// down`, after which Postfix hangs up); `None` switches it back to normal.
    pub fn set_server_answer(&self, answer: Option<&str>) -> Result<()> {
        let path = self.postfix_conf_dir().join("server_state");
        let mut map = BTreeMap::new();
        if let Some(a) = answer {
            valid_answer(a)?;
            map.insert("127.0.0.1".to_owned(), a.to_owned());
        }
        write_map(&path, &map)?;
        self.apply_maps()
    }
}

/// Postfix's `smtp-sink` on 127.0.0.1 and a free port: accepts (and discards) every mail,
/// no TLS, no AUTH announced (`-a`), PIPELINING offered. Killed when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    child: Option<Child>,
    port: u16,
}

/// How a sink answers.
#[derive(Debug, Clone, Default)]
pub enum SinkMode {
    /// 250 to everything.
    #[default]
    Accept,
    /// `421 4.0.0 Server closing connection` at the greeting (a broken relay).
    RefuseAtConnect,
}

impl SmtpSink {
    /// Starts one; returns once its port accepts connections.
    pub fn start(mode: SinkMode) -> Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new(SMTP_SINK);
        cmd.arg("-u").arg("postfix").arg("-a");
        if let SinkMode::RefuseAtConnect = mode {
            cmd.arg("-Q").arg("connect");
        }
        cmd.arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .with_context(|| format!("start {SMTP_SINK} (run `make services` to install Postfix)"))?;
        let mut sink = Self { child: Some(child), port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(c) = sink.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("smtp-sink exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("smtp-sink did not listen on 127.0.0.1:{port} within 5 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(sink)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (for RSS or CPU readings).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
