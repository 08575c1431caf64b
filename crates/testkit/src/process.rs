//! A daemon binary run as its own process, the way an operator runs it: captured logs,
//! waiting for a log line, SIGTERM or SIGKILL, and the exit status.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running daemon. Killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct DaemonProcess {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl DaemonProcess {
    /// Starts `binary` with `args`, a clean environment except `PATH`, `HOME` and `envs`
    /// (the daemons refuse unknown `DESKMAIL_*` variables, so the test's own environment
    /// must not leak in). Standard error and output are collected line by line.
    pub fn spawn(binary: &Path, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let name = binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut cmd = Command::new(binary);
        cmd.args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for key in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(envs.iter().copied());
        let mut child = cmd.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect(out, log.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, log.clone());
        }
        Ok(Self { name, child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a logged line contains `needle`; fails with the log when the process
    /// exits first or `timeout` passes.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return Ok(line);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before logging {needle:?}; log:\n{}",
                    self.name,
                    self.log().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}; log:\n{}",
                    self.name,
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        self.wait(timeout)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status()?;
        if !status.success() {
            bail!("kill -{name} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits for the exit, failing (with the log) after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Give the reader threads a moment to take the last lines.
                std::thread::sleep(Duration::from_millis(20));
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} still running after {timeout:?}; log:\n{}", self.name, self.log().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(stream: impl std::io::Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = log.lock() {
                l.push(line);
            }
        }
    });
}

/// The lifecycle every broker daemon (fetcher, router, sender) must show: started with its
/// example config on a vhost of its own, it logs `Ready.`, has declared the design's topology
/// (the inbound and outbound work queues exist as quorum queues), stops on SIGTERM with exit
/// code 0 and `Stopped.`, and never logs the AMQP password.
pub async fn check_broker_daemon_lifecycle(binary: &Path, example_config: &Path) -> anyhow::Result<()> {
    let vhost = crate::rabbit::Vhost::create("lifecycle")?;
    let url = vhost.amqp_url();
    let config = example_config.to_str().context("config path is not UTF-8")?;
    let mut daemon =
        DaemonProcess::spawn(binary, &["--config", config], &[("DESKMAIL_AMQP__URL", url.as_str())])?;
    daemon.wait_for_log("Ready.", Duration::from_secs(30))?;
    for queue in ["deskmail.inbound.raw", "deskmail.outbound.jobs"] {
        let info = vhost.queue_info(queue).await?;
        if info["type"] != "quorum" {
            bail!("{queue} is not a quorum queue: {info}");
        }
    }
    let status = daemon.terminate(Duration::from_secs(15))?;
    let log = daemon.log().join("\n");
    if !status.success() || !log.contains("Stopped.") {
        bail!("{} did not stop cleanly ({status}); log:\n{log}", daemon.name);
    }
    if log.contains("guest:guest") {
        bail!("{} logged the AMQP password:\n{log}", daemon.name);
    }
    Ok(())
}

/// The systemd protocol every daemon must speak: started with `config` and a test
/// `NOTIFY_SOCKET` (and `WATCHDOG_USEC=400000`), it sends `READY=1`, then `WATCHDOG=1` at
/// least twice, and `STOPPING=1` on SIGTERM before exiting with 0. Returns the messages in the
/// order they came.
pub async fn check_sd_notify(binary: &Path, config: &Path, dir: &Path) -> anyhow::Result<Vec<String>> {
    use std::os::unix::net::UnixDatagram;
    let path = dir.join("notify.sock");
    let socket = Arc::new(UnixDatagram::bind(&path).context("binding the notify socket")?);
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let config = config.to_str().context("config path is not UTF-8")?;
    let notify = path.to_str().context("socket path is not UTF-8")?;
    let mut daemon = DaemonProcess::spawn(
        binary,
        &["--config", config],
        &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "400000")],
    )?;
    let recv = |socket: Arc<UnixDatagram>| async move {
        tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 512];
            let n = socket.recv(&mut buf).context("no notification within 60 s")?;
            anyhow::Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .await
        .context("notify reader task")?
    };
    let mut seen: Vec<String> = Vec::new();
    while !seen.iter().any(|m| m.contains("READY=1")) {
        seen.push(recv(socket.clone()).await.with_context(|| daemon.log().join("\n"))?);
    }
    while seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 2 {
        seen.push(recv(socket.clone()).await?);
    }
    daemon.signal("TERM")?;
    while !seen.iter().any(|m| m.contains("STOPPING=1")) {
        seen.push(recv(socket.clone()).await?);
    }
    let status = daemon.wait(Duration::from_secs(30))?;
    if !status.success() {
        bail!("exited with {status}; log:\n{}", daemon.log().join("\n"));
    }
    let ready = seen.iter().position(|m| m.contains("READY=1"));
    let stopping = seen.iter().position(|m| m.contains("STOPPING=1"));
    if ready >= stopping {
        bail!("STOPPING before READY: {seen:?}");
    }
    Ok(seen)
}

/// CPU time (user + system, seconds) used so far by the live processes of process group
/// `pgid`, including their children that have exited and been reaped (`cutime`/`cstime`):
/// Dovecot's or Postfix's per-session processes are counted once their master reaps them.
/// Clock ticks are 10 ms.
pub fn group_cpu_secs(pgid: u32) -> f64 {
    cpu_secs_where(|stat| stat.pgrp == pgid, OWN_AND_REAPED)
}

/// Like [`group_cpu_secs`], for every live process whose command name is `comm` (e.g.
/// `postgres`: the postmaster, whose reaped backends count in its `cutime`, and the live
/// backends).
pub fn command_cpu_secs(comm: &str) -> f64 {
    cpu_secs_where(|stat| stat.comm == comm, OWN_AND_REAPED)
}

/// A `kB` field of `/proc/<pid>/status` (`"VmHWM:"` for the peak RSS, `"VmRSS:"`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field))?.split_whitespace().next()?.parse().ok()
}

/// CPU time (user + system, seconds) of this process's children that have exited and been
/// waited for (`cutime` + `cstime`): the tools a bench ran with `Command::output`.
pub fn reaped_children_cpu_secs() -> f64 {
    cpu_secs_where(|stat| stat.pid == std::process::id(), REAPED)
}

/// Like [`group_cpu_secs`], for one process and its reaped children.
pub fn pid_cpu_secs(pid: u32) -> f64 {
    cpu_secs_where(|stat| stat.pid == pid, OWN_AND_REAPED)
}

struct Stat<'a> {
    pid: u32,
    comm: &'a str,
    pgrp: u32,
}

/// Fields of `/proc/<pid>/stat` after the name: utime 11, stime 12, cutime 13, cstime 14.
const OWN_AND_REAPED: std::ops::RangeInclusive<usize> = 11..=14;
const REAPED: std::ops::RangeInclusive<usize> = 13..=14;

fn cpu_secs_where(wanted: impl Fn(&Stat<'_>) -> bool, times: std::ops::RangeInclusive<usize>) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let ticks: u64 = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
            // After the name: state is field 0, pgrp 2, then the times (see OWN_AND_REAPED).
            let times = fields.get(times.clone())?;
            let this = Stat { pid, comm: stat.get(open + 1..close)?, pgrp: fields.get(2)?.parse().ok()? };
            wanted(&this).then(|| times.iter().filter_map(|f| f.parse::<u64>().ok()).sum::<u64>())
        })
        .sum();
    ticks as f64 / 100.0
}

#[cfg(test)]
mod proc_tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS:").is_some_and(|kb| kb > 0));
        assert!(status_kib(me, "NoSuchField:").is_none());
        // Burn a little CPU in a child, then wait for it: it counts once reaped.
        let before = reaped_children_cpu_secs();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(reaped_children_cpu_secs() > before);
        assert!(pid_cpu_secs(me) >= 0.0 && command_cpu_secs("no-such-command") == 0.0);
    }
}
