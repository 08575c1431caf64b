//! Private Dovecot + Postfix per test, started from Debian's packages without systemd,
//! following `shared/recipes/mail-stack.md` (the pitfall numbers below refer to its §6).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use deskmail_testkit::mail::MailStack;
//! let stack = MailStack::builder()
//!     .user("support@desk.test", "support-pass")
//!     .user("customer@client.test", "customer-pass")
//!     .start()?;
//! stack.deliver("support@desk.test", b"Subject: hi\r\n\r\nhello\r\n")?;
//! assert_eq!(stack.message_count("support@desk.test", "INBOX")?, 1);
//! # Ok(()) }
//! ```
//!
//! | service | port | TLS | auth |
//! |---|---|---|---|
//! | IMAP | base+143 | STARTTLS | PLAIN, LOGIN, XOAUTH2, OAUTHBEARER |
//! | IMAPS | base+993 | implicit | same |
//! | POP3 | base+110 | STLS | same |
//! | POP3S | base+995 | implicit | same |
//! | SMTP | base+25 | none | AUTH offered; unauthenticated mail only to local domains |
//! | submission | base+587 | STARTTLS required | AUTH required |
//! | SMTPS | base+465 | implicit | AUTH required |
//!
//! Each stack lives in a temp dir `mailstack.XXXXXX` under /dev/shm (tmpfs: Postfix fsyncs
//! every queue file, which on a disk slows SMTP-to-mailbox throughput by 1.3-1.6x), or
//! /tmp when /dev/shm is not usable, or under `$DESKMAIL_TESTKIT_DIR` ([`DIR_ENV`]).
//!
//! Authenticated mail to a non-local domain lands in [`OUTBOUND_SINK`]. For XOAUTH2 and
//! OAUTHBEARER, Dovecot checks the bearer token against the user's password.

mod control;
mod files;
mod inject;
mod oauth2;
pub(crate) mod procs;
mod smtp_faults;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

pub use oauth2::{Grant, Idp};
pub use procs::live_in_group;
pub use smtp_faults::{SinkMode, SmtpSink};

/// Said whenever a binary, helper or system account is missing.
const INSTALL_HINT: &str = "run `make services` (scripts/ensure-services.sh) to install Dovecot and Postfix";

/// Mailbox that receives every authenticated message to a non-local domain; it always
/// exists, with password [`OUTBOUND_SINK_PASSWORD`].
pub const OUTBOUND_SINK: &str = "outbound@desk.test";
/// Password (and XOAUTH2 token) of [`OUTBOUND_SINK`].
pub const OUTBOUND_SINK_PASSWORD: &str = "outbound-pass";
/// Domains that are always local, besides those of the configured users.
pub const DEFAULT_DOMAINS: [&str; 2] = ["desk.test", "client.test"];

/// How many port bases to try before giving up.
const ATTEMPTS: u32 = 12;

#[derive(Debug, Clone)]
struct User {
    address: String,
    password: String,
}

/// The seven TCP ports of one stack.
#[derive(Debug, Clone, Copy)]
struct Ports {
    base: u16,
    imap: u16,
    imaps: u16,
    pop3: u16,
    pop3s: u16,
    smtp: u16,
    submission: u16,
    smtps: u16,
}

impl Ports {
    fn new(base: u16) -> Self {
        Self {
            base,
            imap: base + 143,
            imaps: base + 993,
            pop3: base + 110,
            pop3s: base + 995,
            smtp: base + 25,
            submission: base + 587,
            smtps: base + 465,
        }
    }
    fn dovecot(&self) -> [u16; 4] {
        [self.imap, self.imaps, self.pop3, self.pop3s]
    }
    fn postfix(&self) -> [u16; 3] {
        [self.smtp, self.submission, self.smtps]
    }
}

/// A base in 10000..=63000 (step 1000) from the pid and a process-wide counter, so that
/// parallel tests and parallel test binaries start on different bases.
fn next_base() -> u16 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let slot = std::process::id().wrapping_mul(7).wrapping_add(n) % 54;
    // slot < 54, so this fits in u16.
    10_000 + (slot as u16) * 1000
}

/// Configures a [`MailStack`]: users and local domains.
#[derive(Debug, Clone, Default)]
pub struct MailStackBuilder {
    users: Vec<User>,
    domains: Vec<String>,
    oauth2_idp: bool,
}

impl MailStackBuilder {
    /// Adds a mailbox. Its domain becomes local. The password is also its XOAUTH2 token.
    pub fn user(mut self, address: &str, password: &str) -> Self {
        let address = address.to_ascii_lowercase();
        self.users.retain(|u| u.address != address);
        self.users.push(User { address, password: password.to_string() });
        self
    }

    /// Adds a local domain (mail to it is delivered, never sunk).
    pub fn domain(mut self, domain: &str) -> Self {
        self.domains.push(domain.to_ascii_lowercase());
        self
    }

    /// Starts a stand-in OAuth2 IdP ([`Idp`], see `mail/oauth2.rs`) and has Dovecot check
    /// XOAUTH2/OAUTHBEARER tokens with it instead of against the passwords.
    pub fn oauth2_idp(mut self) -> Self {
        self.oauth2_idp = true;
        self
    }

    /// Builds the instance in a temp dir (under /dev/shm, or /tmp, or `$DESKMAIL_TESTKIT_DIR`,
    /// see [`DIR_ENV`]) and starts Dovecot, then Postfix, on a free port base (about 0.3 s).
    pub fn start(self) -> Result<MailStack> {
        MailStack::start(self)
    }
}

/// A private Dovecot + Postfix. Dropping it SIGKILLs both process groups, checks that no
/// process is left, and removes its temp dir.
#[derive(Debug)]
pub struct MailStack {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    ports: Ports,
    users: Vec<User>,
    domains: Vec<String>,
    ca_pem: Vec<u8>,
    ca_pem_path: PathBuf,
    ids: files::Ids,
    bins: procs::Bins,
    watchdog: Option<Child>,
    idp: Option<Idp>,
}

impl MailStack {
    /// Starts configuring a stack.
    pub fn builder() -> MailStackBuilder {
        MailStackBuilder::default()
    }

    fn start(builder: MailStackBuilder) -> Result<Self> {
        procs::ensure_root()?;
        let bins = procs::Bins::find()?;
        let ids = files::Ids::lookup()?;
        let mut users = builder.users;
        if !users.iter().any(|u| u.address == OUTBOUND_SINK) {
            users.push(User {
                address: OUTBOUND_SINK.to_string(),
                password: OUTBOUND_SINK_PASSWORD.to_string(),
            });
        }
        let mut domains: Vec<String> = DEFAULT_DOMAINS.iter().map(|d| d.to_string()).collect();
        for u in &users {
            validate_user(u)?;
            if let Some((_, d)) = u.address.rsplit_once('@') {
                domains.push(d.to_string());
            }
        }
        domains.extend(builder.domains);
        let mut seen = std::collections::HashSet::new();
        domains.retain(|d| seen.insert(d.clone()));
        for d in &domains {
            if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                bail!("invalid mail domain {d:?}");
            }
        }

        let dir = make_stack_dir("mailstack.")?;
        let path = dir.path().to_path_buf();
        // From here on, Drop cleans up whatever fails.
        let mut stack = Self {
            watchdog: Some(procs::spawn_watchdog(&bins.sh, &bins.kill, &path)?),
            dir: Some(dir),
            path: path.clone(),
            ports: Ports::new(0),
            users,
            domains,
            ca_pem: Vec::new(),
            ca_pem_path: path.join("tls/ca.pem"),
            ids,
            bins,
            idp: None,
        };
        files::make_dirs(&path, &stack.ids)?;
        files::make_certs(&stack.bins.openssl, &path.join("tls"))?;
        files::write_users(&path, &stack.users)?;
        stack.ca_pem = std::fs::read(&stack.ca_pem_path).context("read tls/ca.pem")?;
        if builder.oauth2_idp {
            stack.idp = Some(Idp::start(&path.join("idp"))?);
        }
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let ports = Ports::new(next_base());
            if let Some(busy) = ports.dovecot().iter().chain(&ports.postfix()).find(|&&p| procs::port_busy(p))
            {
                failures.push(format!("base {}: port {busy} in use", ports.base));
                continue;
            }
            stack.ports = ports;
            files::write_configs(&stack.path, &ports, &stack.domains)?;
            if let Some(idp) = &stack.idp {
                oauth2::enable(&stack.path, idp.port())?;
            }
            smtp_faults::prepare(&stack.path)?;
            match stack.start_both() {
                Ok(()) => return Ok(stack),
                Err(e) => {
                    let _ = stack.kill_all();
                    // Only a port clash is worth another base; anything else is a real error.
                    if !format!("{e:#}").contains("in use") {
                        return Err(e.context(format!("MailStack start failed\n{}", stack.logs())));
                    }
                    failures.push(format!("base {}: {e:#}", ports.base));
                }
            }
        }
        bail!("MailStack: no free port base after {ATTEMPTS} tries:\n{}", failures.join("\n"))
    }

    /// Always "127.0.0.1" (the cert has an IP SAN for it, and DNS SANs `localhost`,
    /// `mail.desk.test`).
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }
    /// The port base; every port is base + the service's well-known port.
    pub fn base_port(&self) -> u16 {
        self.ports.base
    }
    /// IMAP with STARTTLS.
    pub fn imap_port(&self) -> u16 {
        self.ports.imap
    }
    /// IMAP over implicit TLS.
    pub fn imaps_port(&self) -> u16 {
        self.ports.imaps
    }
    /// POP3 with STLS.
    pub fn pop3_port(&self) -> u16 {
        self.ports.pop3
    }
    /// POP3 over implicit TLS.
    pub fn pop3s_port(&self) -> u16 {
        self.ports.pop3s
    }
    /// Plain SMTP (MX-like: local domains without AUTH, AUTH offered).
    pub fn smtp_port(&self) -> u16 {
        self.ports.smtp
    }
    /// Submission: STARTTLS and AUTH required.
    pub fn submission_port(&self) -> u16 {
        self.ports.submission
    }
    /// SMTPS: implicit TLS, AUTH required.
    pub fn smtps_port(&self) -> u16 {
        self.ports.smtps
    }
    /// PEM of the private CA that signed the server cert.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }
    /// Contents of [`Self::ca_pem_path`].
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca_pem.clone()
    }
    /// The OAuth2 IdP, when built with [`MailStackBuilder::oauth2_idp`].
    pub fn idp(&self) -> Option<&Idp> {
        self.idp.as_ref()
    }
    /// The stack's temp dir.
    pub fn dir(&self) -> &Path {
        &self.path
    }
    /// Local domains (Postfix `virtual_mailbox_domains`).
    pub fn domains(&self) -> &[String] {
        &self.domains
    }
    /// Configured mailbox addresses, [`OUTBOUND_SINK`] included.
    pub fn users(&self) -> Vec<&str> {
        self.users.iter().map(|u| u.address.as_str()).collect()
    }
    /// Dovecot's config file (for `doveadm -c`).
    pub fn dovecot_conf_path(&self) -> PathBuf {
        self.path.join("dovecot/dovecot.conf")
    }
    /// Postfix's config dir (for `postfix -c`, `postconf -c`).
    pub fn postfix_conf_dir(&self) -> PathBuf {
        self.path.join("postfix/etc")
    }
    /// Dovecot's log file.
    pub fn dovecot_log_path(&self) -> PathBuf {
        self.path.join("dovecot/dovecot.log")
    }
    /// Postfix's log file.
    pub fn postfix_log_path(&self) -> PathBuf {
        self.path.join("postfix/maillog")
    }
    /// Dovecot's LMTP unix socket.
    pub fn lmtp_socket_path(&self) -> PathBuf {
        self.path.join("dovecot/run/lmtp")
    }
    /// The Maildir of a user (INBOX is its root; other folders are `.Name` below it).
    pub fn maildir(&self, user: &str) -> Result<PathBuf> {
        inject::maildir_of(&self.path, user)
    }

    /// The last 40 lines of both logs, for error messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} ---\n{}\n--- {} ---\n{}",
            self.dovecot_log_path().display(),
            procs::tail(&self.dovecot_log_path(), 40),
            self.postfix_log_path().display(),
            procs::tail(&self.postfix_log_path(), 40)
        )
    }

    /// Delivers one message to `user` over LMTP, the path Postfix uses. Bare LF line
    /// endings are sent as CRLF.
    pub fn deliver(&self, user: &str, raw: &[u8]) -> Result<()> {
        let mut lmtp = inject::Lmtp::connect(&self.lmtp_socket_path())?;
        lmtp.deliver(inject::LMTP_SENDER, user, raw)
            .with_context(|| format!("LMTP delivery to {user}\n{}", self.logs()))?;
        lmtp.quit();
        Ok(())
    }

    /// Drops many messages straight into `user`'s INBOX (`Maildir/new`, about 1,000 per
    /// 0.5 s), then has Dovecot index them. Line endings become LF on disk; POP3 and IMAP
    /// serve them with CRLF. Returns how many were written.
    pub fn deliver_many<I, B>(&self, user: &str, msgs: I) -> Result<usize>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let user = user.to_ascii_lowercase();
        if !self.users.iter().any(|u| u.address == user) {
            bail!("deliver_many: {user} is not a user of this MailStack");
        }
        let n = inject::maildir_drop(&self.path, &user, &self.ids, msgs)?;
        // Let Dovecot index them now (about 20 ms + 0.2 ms per message): UIDs then follow
        // the order of `msgs` and come before any later `deliver`.
        self.message_count(&user, "INBOX")?;
        Ok(n)
    }

    /// Number of messages in `folder` ("INBOX", "Sent", ...) of `user`, via doveadm.
    pub fn message_count(&self, user: &str, folder: &str) -> Result<usize> {
        inject::message_count(&self.bins.doveadm, &self.dovecot_conf_path(), user, folder)
    }

    /// Kills both process groups, checks that none of their processes is left, removes
    /// the temp dir. Dropping does the same but can only print a failure.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("MailStack drop: {e:#}");
        }
    }
}

/// Env var naming the parent dir of the stacks' temp dirs (default: /dev/shm, else /tmp).
pub const DIR_ENV: &str = "DESKMAIL_TESTKIT_DIR";

/// Longest socket path below a stack's dir (`/dovecot/run/token-login/imap-urlauth`, 37
/// bytes) plus slack: a unix socket path must fit in 107 bytes.
const SOCKET_SUFFIX_MAX: usize = 48;

/// A temp dir `<prefix>XXXXXX` for a stack (or a private broker) in [`DIR_ENV`] if set, else on tmpfs
/// (/dev/shm: Postfix fsyncs every queue file; on a disk that made 5,000 mails through
/// SMTP to LMTP 1.3x slower end to end, 1.6x slower to accept), else in /tmp. Every parent
/// must be traversable by uid mail/postfix (pitfall 1): both defaults are mode 1777. The
/// watchdog and [`MailStack::stop`] find the processes and files by this path, so they
/// work wherever it is (a stack killed with its watchdog leaves its dir behind: on tmpfs
/// that is RAM until `rm -rf /dev/shm/mailstack.*` or a reboot).
pub(crate) fn make_stack_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix(prefix);
        b
    };
    let dir = match std::env::var_os(DIR_ENV).filter(|v| !v.is_empty()) {
        Some(parent) => {
            // Absolute: the path goes into the configs, and the watchdog and `stop` find
            // processes by it.
            let parent = std::fs::canonicalize(&parent)
                .with_context(|| format!("{DIR_ENV}={}", Path::new(&parent).display()))?;
            builder().tempdir_in(&parent).with_context(|| {
                format!("create MailStack temp dir in {} (from {DIR_ENV})", parent.display())
            })?
        }
        None => {
            use std::os::unix::fs::PermissionsExt;
            // Only if uid mail/postfix can traverse it (1777 normally) and we can write it.
            // And only with room for a few stacks of big mails (a container's /dev/shm is
            // often 64 MB).
            let shm_ok = std::fs::metadata("/dev/shm")
                .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
                && free_bytes(Path::new("/dev/shm")).is_some_and(|free| free >= SHM_MIN_FREE);
            match shm_ok.then(|| builder().tempdir_in("/dev/shm").ok()).flatten() {
                Some(dir) => dir,
                None => builder().tempdir_in("/tmp").context("create MailStack temp dir in /tmp")?,
            }
        }
    };
    let len = dir.path().as_os_str().len();
    if len + SOCKET_SUFFIX_MAX > 107 {
        bail!(
            "MailStack dir {} is too long ({len} bytes) for unix socket paths below it; set {DIR_ENV} to a shorter dir",
            dir.path().display()
        );
    }
    Ok(dir)
}

/// Free space /dev/shm must have for the stacks to go there.
const SHM_MIN_FREE: u64 = 2 << 30;

/// Bytes free for an unprivileged user on the file system holding `path` (statvfs).
fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Rejects what would corrupt the passwd-file or vmailbox lines.
fn validate_user(u: &User) -> Result<()> {
    let bad = |s: &str| s.is_empty() || s.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control());
    match u.address.split_once('@') {
        Some((local, domain)) if !bad(local) && !bad(domain) && !domain.contains('@') => {}
        _ => bail!("invalid mailbox address {:?}", u.address),
    }
    if bad(&u.password) {
        bail!("password of {} must be non-empty, without ':' or whitespace", u.address);
    }
    Ok(())
}
