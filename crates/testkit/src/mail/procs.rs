//! Processes: finding the binaries, starting the daemons, killing their process groups
//! and proving they are gone, probing ports, and the watchdog that cleans up after a test
//! process that died without running `Drop`.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::INSTALL_HINT;

/// Absolute paths of the programs the kit runs.
#[derive(Debug, Clone)]
pub(super) struct Bins {
    pub dovecot: PathBuf,
    pub doveadm: PathBuf,
    pub postfix: PathBuf,
    pub openssl: PathBuf,
    pub kill: PathBuf,
    pub sh: PathBuf,
}

pub(crate) fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Bins {
    pub(super) fn find() -> Result<Self> {
        let need = |name: &str| {
            find_bin(name).with_context(|| format!("`{name}` not found in PATH: {INSTALL_HINT}"))
        };
        for helper in ["/usr/lib/dovecot/imap", "/usr/lib/dovecot/pop3", "/usr/lib/dovecot/lmtp"] {
            if !Path::new(helper).exists() {
                bail!("{helper} is missing: {INSTALL_HINT}");
            }
        }
        if !Path::new("/usr/share/dovecot/dh.pem").exists() {
            bail!("/usr/share/dovecot/dh.pem is missing: {INSTALL_HINT}");
        }
        Ok(Self {
            dovecot: need("dovecot")?,
            doveadm: need("doveadm")?,
            postfix: need("postfix")?,
            openssl: need("openssl")?,
            kill: need("kill")?,
            sh: need("sh")?,
        })
    }
}

/// The kit chowns files to `mail`/`postfix` and starts both masters: it needs root.
pub(super) fn ensure_root() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let uid = fs::metadata("/proc/self").context("stat /proc/self")?.uid();
    if uid != 0 {
        bail!(
            "MailStack must run as root (it chowns to mail/postfix and starts dovecot and postfix); uid is {uid}"
        );
    }
    Ok(())
}

/// Runs a daemon's control command with stdout+stderr sent to `log` (never a pipe: a
/// daemon that inherits a pipe would keep `output()` waiting forever).
pub(super) fn run_to_file(cmd: &mut Command, log: &Path) -> Result<(bool, String)> {
    let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone().context("dup log file")?;
    let status =
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).status().with_context(|| format!("run {cmd:?}"))?;
    let text = fs::read_to_string(log).unwrap_or_default();
    Ok((status.success(), format!("{status}: {}", text.trim())))
}

/// Reads a master.pid file (Postfix pads it with spaces) and returns the pid if that
/// process is alive and is what we expect (`dovecot` or postfix's `master`), so a stale
/// file never makes us signal an unrelated process group.
pub(super) fn live_master(pid_file: &Path, comm: &str) -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let (state, _pgid, name) = proc_stat(pid)?;
    (state != 'Z' && state != 'X' && name == comm).then_some(pid)
}

/// (state, pgid, comm) from /proc/PID/stat; comm may hold spaces and parens.
fn proc_stat(pid: u32) -> Option<(char, u32, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    let pgid = rest.next()?.parse().ok()?;
    Some((state, pgid, name))
}

/// Pids in process group `pgid` that are not zombies. Without systemd the daemons are
/// reparented to PID 1, which reaps them lazily, so `kill -0` would still see zombies.
pub fn live_in_group(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(
            |&pid| matches!(proc_stat(pid), Some((state, g, _)) if g == pgid && state != 'Z' && state != 'X'),
        )
        .collect()
}

/// Process groups (other than `exclude`) with a live process whose command line or
/// environment mentions `dir`: Dovecot's `-c DIR/...` and Postfix's `MAIL_CONFIG=DIR/...`.
/// A safety net for when a pid file is missing or stale.
pub(crate) fn groups_using(dir: &Path, exclude: Option<u32>) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    let mentions = |pid: u32, file: &str| {
        fs::read(format!("/proc/{pid}/{file}"))
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_slice()))
            .unwrap_or(false)
    };
    let mut groups: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match proc_stat(pid) {
            Some((state, pgid, _)) if state != 'Z' && state != 'X' && Some(pgid) != exclude => {
                (mentions(pid, "cmdline") || mentions(pid, "environ")).then_some(pgid)
            }
            _ => None,
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Waits until `pid_file` names a live `comm` process. Dovecot's foreground process exits
/// right after the fork, before the daemon has written its pid file.
pub(super) fn wait_master(pid_file: &Path, comm: &str, within: Duration) -> Result<u32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(pid) = live_master(pid_file, comm) {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            bail!("{} names no running `{comm}` {within:?} after start", pid_file.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL whole process groups (each master leads its own) and wait until no live
/// process is left in them.
pub(crate) fn kill_groups(kill: &Path, pgids: &[u32], within: Duration) -> Result<()> {
    if pgids.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new(kill);
    cmd.args(["-KILL", "--"]).args(pgids.iter().map(|p| format!("-{p}")));
    // A non-zero exit only means a group was already gone; the check below is what counts.
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = pgids.iter().flat_map(|&g| live_in_group(g)).collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("processes still alive after SIGKILL of groups {pgids:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when something accepts connections on 127.0.0.1:`port`.
pub(crate) fn port_busy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Waits until every port accepts connections.
pub(super) fn wait_ports(ports: &[u16], within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    for &port in ports {
        while !port_busy(port) {
            if Instant::now() >= deadline {
                bail!("port {port} is not listening {within:?} after start");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// A detached `sh` that SIGKILLs every process group mentioning `dir` (both mail masters,
/// or a private RabbitMQ node) and removes `dir` if this process dies without dropping the
/// stack (SIGKILL, a test-runner timeout, Ctrl-C). It runs in a
/// process group of its own so that a signal to the test's group does not take it along.
pub(crate) fn spawn_watchdog(sh: &Path, kill: &Path, dir: &Path) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    // Three rounds: a stack killed mid-start may have a master without a pid file yet,
    // so processes are also found by the dir in their command line or environment.
    const SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
[ -d "$2" ] || exit 0
for round in 1 2 3; do
  for f in "$2/dovecot/run/master.pid" "$2/postfix/spool/pid/master.pid"; do
    p=$(tr -d ' ' < "$f" 2>/dev/null) && [ -n "$p" ] && "$3" -KILL -- "-$p" 2>/dev/null
  done
  for f in $(grep -lsF "$2/" /proc/[0-9]*/cmdline /proc/[0-9]*/environ); do
    d=${f%/*}; g=$(ps -o pgid= -p "${d#/proc/}" 2>/dev/null | tr -d ' ')
    [ -n "$g" ] && [ "$g" != "$$" ] && "$3" -KILL -- "-$g" 2>/dev/null
  done
  sleep 0.3
done
rm -rf "$2"
"#;
    Command::new(sh)
        .args(["-c", SCRIPT, "deskmail-testkit-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(kill) // dash's builtin kill rejects `--`
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawn the test kit watchdog (sh)")
}

/// Stops the watchdog: SIGKILL its group (it and its `sleep`), then reap it.
pub(crate) fn stop_watchdog(kill: &Path, child: &mut Child) {
    let _ = Command::new(kill)
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

/// Last `n` lines of a log file, or a note that it does not exist (yet).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}
