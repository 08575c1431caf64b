//! Everything written into a stack's temp dir: directories with the owners Dovecot and
//! Postfix insist on, the private CA and leaf cert, users, and the config templates.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use super::{Ports, User};

const DOVECOT_CONF: &str = include_str!("dovecot.conf");
const MAIN_CF: &str = include_str!("main.cf");
const MASTER_CF: &str = include_str!("master.cf");

/// uid/gid of the system accounts the daemons run as (Debian's packages create them).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ids {
    pub mail_uid: u32,
    pub mail_gid: u32,
    pub postfix_uid: u32,
    pub postfix_gid: u32,
    pub postdrop_gid: u32,
}

impl Ids {
    pub(super) fn lookup() -> Result<Self> {
        let passwd = fs::read_to_string("/etc/passwd").context("read /etc/passwd")?;
        let group = fs::read_to_string("/etc/group").context("read /etc/group")?;
        let user = |name: &str| -> Result<(u32, u32)> {
            passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && f[0] == name)
                .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .with_context(|| format!("system user `{name}` is missing: {}", super::INSTALL_HINT))
        };
        let grp = |name: &str| -> Result<u32> {
            group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == name)
                .and_then(|f| f[2].parse().ok())
                .with_context(|| format!("system group `{name}` is missing: {}", super::INSTALL_HINT))
        };
        let (mail_uid, mail_gid) = user("mail")?;
        let (postfix_uid, postfix_gid) = user("postfix")?;
        Ok(Self { mail_uid, mail_gid, postfix_uid, postfix_gid, postdrop_gid: grp("postdrop")? })
    }
}

/// `mkdir` (not recursive) + mode + owner, like `install -d -o U -g G -m MODE`.
pub(super) fn mkdir_owned(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("mkdir {}", path.display())),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    chown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))
}

fn write(path: &Path, contents: &[u8]) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

/// The directory skeleton (recipe §2 and pitfall 1). `dir` itself must already exist.
pub(super) fn make_dirs(dir: &Path, ids: &Ids) -> Result<()> {
    // tempfile gives 0700: uid mail, dovecot and postfix must traverse it.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", dir.display()))?;
    for sub in ["tls", "dovecot", "dovecot/state", "postfix", "postfix/etc", "postfix/spool"] {
        mkdir_owned(&dir.join(sub), 0o755, 0, 0)?;
    }
    mkdir_owned(&dir.join("mail"), 0o755, ids.mail_uid, ids.mail_gid)?;
    mkdir_owned(&dir.join("postfix/data"), 0o755, ids.postfix_uid, ids.postfix_gid)?;
    // Queue dirs made here + `quick-start` skip postfix-script's checks (300 ms -> 40 ms).
    let spool = dir.join("postfix/spool");
    for q in [
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved",
        "trace",
    ] {
        mkdir_owned(&spool.join(q), 0o700, ids.postfix_uid, 0)?;
    }
    mkdir_owned(&spool.join("maildrop"), 0o730, ids.postfix_uid, ids.postdrop_gid)?;
    mkdir_owned(&spool.join("public"), 0o710, ids.postfix_uid, ids.postdrop_gid)?;
    mkdir_owned(&spool.join("pid"), 0o755, 0, 0)?;
    Ok(())
}

/// Private CA + leaf (CA:FALSE, SANs localhost, mail.desk.test, 127.0.0.1): rustls/webpki
/// reject a self-signed CA:TRUE cert used as a server cert, so a one-step cert won't do.
pub(super) fn make_certs(openssl: &Path, tls: &Path) -> Result<()> {
    write(
        &tls.join("ext.cnf"),
        b"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
          extendedKeyUsage=serverAuth\n\
          subjectAltName=DNS:localhost,DNS:mail.desk.test,IP:127.0.0.1\n",
    )?;
    let steps: [&[&str]; 5] = [
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"],
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            "/CN=deskmail test CA",
            "-out",
            "ca.pem",
        ],
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "key.pem"],
        &["req", "-new", "-key", "key.pem", "-subj", "/CN=localhost", "-out", "server.csr"],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    ];
    for args in steps {
        let out = Command::new(openssl)
            .args(args)
            .current_dir(tls)
            .output()
            .with_context(|| format!("run {}", openssl.display()))?;
        if !out.status.success() {
            bail!(
                "`openssl {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    for f in ["server.csr", "ext.cnf", "ca.srl"] {
        let _ = fs::remove_file(tls.join(f));
    }
    Ok(())
}

/// Users for Dovecot's passwd-file (all 7 fields, pitfall 2) and Postfix's vmailbox.
pub(super) fn write_users(dir: &Path, users: &[User]) -> Result<()> {
    let mut passwd = String::new();
    let mut vmailbox = String::new();
    for u in users {
        passwd.push_str(&format!("{}:{{PLAIN}}{}::::::\n", u.address, u.password));
        vmailbox.push_str(&format!("{} OK\n", u.address));
    }
    write(&dir.join("dovecot/users"), passwd.as_bytes())?;
    write(&dir.join("postfix/etc/vmailbox"), vmailbox.as_bytes())?;
    backdate(&dir.join("postfix/etc/vmailbox"))
}

/// dovecot.conf, main.cf, master.cf and the outbound sink for one port base.
pub(super) fn write_configs(dir: &Path, ports: &Ports, domains: &[String]) -> Result<()> {
    let t = dir.to_str().context("temp dir path is not UTF-8")?;
    let fill = |template: &str| {
        template
            .replace("@T@", t)
            .replace("@P@", &ports.base.to_string())
            .replace("@IMAP@", &ports.imap.to_string())
            .replace("@IMAPS@", &ports.imaps.to_string())
            .replace("@POP3@", &ports.pop3.to_string())
            .replace("@POP3S@", &ports.pop3s.to_string())
            .replace("@SMTP@", &ports.smtp.to_string())
            .replace("@SUBMISSION@", &ports.submission.to_string())
            .replace("@SMTPS@", &ports.smtps.to_string())
            .replace("@DOMAINS@", &domains.join(" "))
    };
    write(&dir.join("dovecot/dovecot.conf"), fill(DOVECOT_CONF).as_bytes())?;
    let etc = dir.join("postfix/etc");
    write(&etc.join("main.cf"), fill(MAIN_CF).as_bytes())?;
    write(&etc.join("master.cf"), fill(MASTER_CF).as_bytes())?;
    let escaped: Vec<String> = domains.iter().map(|d| d.replace('.', "\\.")).collect();
    let sink = format!("!/@({})$/ {}\n", escaped.join("|"), super::OUTBOUND_SINK);
    write(&etc.join("outbound_sink"), sink.as_bytes())?;
    for f in ["main.cf", "master.cf", "outbound_sink", "vmailbox"] {
        backdate(&etc.join(f))?;
    }
    Ok(())
}

/// Postfix re-reads a config file every 300 ms until its mtime is 1-2 s old (pitfall 4):
/// an old mtime makes the first start take 40 ms instead of about 2 s.
fn backdate(path: &Path) -> Result<()> {
    let old = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(old))
        .with_context(|| format!("backdate mtime of {}", path.display()))
}

/// `quick-start` is consumed by every `postfix start`; recreate it before each one.
pub(super) fn touch_quick_start(dir: &Path) -> Result<()> {
    write(&dir.join("postfix/spool/quick-start"), b"")
}
