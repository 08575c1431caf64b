//! Starting, stopping and restarting the two daemons of a [`MailStack`].

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{MailStack, files, procs};

impl MailStack {
    /// Dovecot first: it binds without SO_REUSEPORT and so is the lock on the port base
    /// (pitfall 5); Postfix also needs its auth and LMTP sockets.
    pub(super) fn start_both(&self) -> Result<()> {
        self.start_dovecot()?;
        self.start_postfix()
    }

    /// Starts Dovecot (after [`Self::stop_dovecot`]) and waits for its four ports.
    pub fn start_dovecot(&self) -> Result<()> {
        // Stale sockets make the first login stall for 5 s (pitfall 6).
        let run = self.path.join("dovecot/run");
        if run.exists() {
            std::fs::remove_dir_all(&run).with_context(|| format!("rm -rf {}", run.display()))?;
        }
        let mut cmd = Command::new(&self.bins.dovecot);
        cmd.arg("-c").arg(self.dovecot_conf_path());
        let (ok, out) = procs::run_to_file(&mut cmd, &self.path.join("dovecot/start.out"))?;
        if !ok {
            let hint = if out.contains("Address already in use") { " (port in use)" } else { "" };
            bail!("`dovecot -c {}` failed{hint}: {out}", self.dovecot_conf_path().display());
        }
        procs::wait_master(&self.path.join("dovecot/run/master.pid"), "dovecot", Duration::from_secs(10))
            .with_context(|| format!("Dovecot did not start\n{}", self.logs()))?;
        procs::wait_ports(&self.ports.dovecot(), Duration::from_secs(10))
            .with_context(|| format!("Dovecot did not listen\n{}", self.logs()))
    }

    /// Starts Postfix (after [`Self::stop_postfix`]) and waits for its three ports.
    pub fn start_postfix(&self) -> Result<()> {
        files::touch_quick_start(&self.path)?;
        let mut cmd = Command::new(&self.bins.postfix);
        cmd.arg("-c").arg(self.postfix_conf_dir()).arg("start");
        let (ok, out) = procs::run_to_file(&mut cmd, &self.path.join("postfix/start.out"))?;
        if !ok {
            let log = procs::tail(&self.postfix_log_path(), 20);
            let hint = if log.contains("Address already in use") || out.contains("Address already in use") {
                " (port in use)"
            } else {
                ""
            };
            bail!("`postfix -c {} start` failed{hint}: {out}", self.postfix_conf_dir().display());
        }
        procs::wait_master(
            &self.path.join("postfix/spool/pid/master.pid"),
            "master",
            Duration::from_secs(10),
        )
        .with_context(|| format!("Postfix did not start\n{}", self.logs()))?;
        procs::wait_ports(&self.ports.postfix(), Duration::from_secs(10))
            .with_context(|| format!("Postfix did not listen\n{}", self.logs()))
    }

    /// SIGKILLs Dovecot's process group and waits until it is gone (ports close with it).
    pub fn stop_dovecot(&self) -> Result<()> {
        self.kill_daemon(self.dovecot_pid(), "dovecot")
    }

    /// SIGKILLs Postfix's process group and waits until it is gone.
    pub fn stop_postfix(&self) -> Result<()> {
        self.kill_daemon(self.postfix_pid(), "postfix")
    }

    /// Kills the group of `pid` plus any group whose master mentions `DIR/subdir/` (in
    /// case the pid file was missing), and waits until they are empty.
    fn kill_daemon(&self, pid: Option<u32>, subdir: &str) -> Result<()> {
        let watchdog = self.watchdog.as_ref().map(|c| c.id());
        let mut pgids = procs::groups_using(&self.path.join(subdir), watchdog);
        pgids.extend(pid);
        pgids.sort_unstable();
        pgids.dedup();
        procs::kill_groups(&self.bins.kill, &pgids, Duration::from_secs(10))
    }

    /// Kills and starts Dovecot again on the same ports (mail and users are kept).
    pub fn restart_dovecot(&self) -> Result<()> {
        self.stop_dovecot()?;
        self.start_dovecot()
    }

    /// Kills and starts Postfix again on the same ports.
    pub fn restart_postfix(&self) -> Result<()> {
        self.stop_postfix()?;
        self.start_postfix()
    }

    /// Pid (= process group) of the running Dovecot master, if any.
    pub fn dovecot_pid(&self) -> Option<u32> {
        procs::live_master(&self.path.join("dovecot/run/master.pid"), "dovecot")
    }

    /// Pid (= process group) of the running Postfix master, if any.
    pub fn postfix_pid(&self) -> Option<u32> {
        procs::live_master(&self.path.join("postfix/spool/pid/master.pid"), "master")
    }

    pub(super) fn kill_all(&self) -> Result<()> {
        let dovecot = self.kill_daemon(self.dovecot_pid(), "dovecot");
        let postfix = self.kill_daemon(self.postfix_pid(), "postfix");
        dovecot.and(postfix)
    }

    pub(super) fn shutdown(&mut self) -> Result<()> {
        let killed = self.kill_all();
        if let Some(mut child) = self.watchdog.take() {
            procs::stop_watchdog(&self.bins.kill, &mut child);
        }
        let removed = match self.dir.take() {
            Some(dir) => dir.close().with_context(|| format!("remove {}", self.path.display())),
            None => Ok(()),
        };
        killed.and(removed)
    }
}
