//! `scripts/run.sh` (the entry point of `make run`) as a test fixture: the whole system with
//! its demo mail server, in a directory, a RabbitMQ vhost and a port range of its own.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use deskmail_testkit::rabbit::Vhost;

/// The repository root (scripts/, config/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Where cargo put this build's binaries: the test executable is `<target>/<profile>/deps/e2e-*`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    for bin in [
        "deskmail-configd",
        "deskmail-fetcher",
        "deskmail-router",
        "deskmail-sender",
        "deskmailctl",
        "deskmail-demo-mail",
    ] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: build the workspace's binaries first (`make build`; `make test` does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// A base port with base..base+4 free (configd's gRPC and four metrics ports).
pub fn free_port_base() -> u16 {
    let start = 42_000 + (std::process::id() % 1500) as u16 * 10;
    for i in 0..1500u16 {
        let base = 42_000 + (start - 42_000 + i * 10) % 15_000;
        if (0..5).all(|k| TcpListener::bind(("127.0.0.1", base + k)).is_ok()) {
            return base;
        }
    }
    panic!("no free range of 5 ports in 42000..57000");
}

/// The running system.
pub struct System {
    pub dir: tempfile::TempDir,
    pub vhost: Vhost,
    pub port_base: u16,
    pub demo: HashMap<String, String>,
    child: Option<Child>,
}

impl System {
    /// Runs scripts/run.sh and waits until it says the system is up.
    pub async fn start() -> anyhow::Result<System> {
        let dir = tempfile::Builder::new().prefix("deskmail-run.").tempdir()?;
        let vhost = Vhost::create("e2e")?;
        let port_base = free_port_base();
        let log = std::fs::File::create(dir.path().join("run.log"))?;
        let child = Command::new(repo_root().join("scripts/run.sh"))
            .env("RUN_DIR", dir.path())
            .env("RUN_PORT_BASE", port_base.to_string())
            .env("RUN_AMQP_URL", vhost.amqp_url())
            .env("BIN", bin_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning scripts/run.sh")?;
        let mut system = System { dir, vhost, port_base, demo: HashMap::new(), child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = system.log();
            if log.contains("Press Ctrl-C") {
                break;
            }
            if let Some(status) = system.child.as_mut().unwrap().try_wait()? {
                bail!("scripts/run.sh exited with {status} before the system was up:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("scripts/run.sh did not bring the system up within 60 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let env = std::fs::read_to_string(system.dir.path().join("var/demo-mail.env"))?;
        system.demo = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(system)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    pub fn demo(&self, key: &str) -> &str {
        self.demo.get(key).map(String::as_str).unwrap_or_else(|| panic!("{key} not in demo-mail.env"))
    }

    pub fn router_db(&self) -> PathBuf {
        self.dir.path().join("var/router.db")
    }

    /// The pids run.sh reported starting (`... (pid N, ...`).
    pub fn started_pids(&self) -> Vec<u32> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("(pid ").and_then(|(_, r)| r.split([',', ')']).next()))
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    /// SIGTERM to run.sh (what Ctrl-C does) and its exit code.
    pub async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        signal("TERM", child.id());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("scripts/run.sh did not stop within 90 s of SIGTERM:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // run.sh was killed without its trap: kill what it started.
            for pid in self.started_pids() {
                signal("KILL", pid);
            }
        }
    }
}

/// `kill -<sig> <pid>`, ignoring a process that is already gone.
pub fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// Live (not zombie) processes that match: `pid` in `pids`, or a working directory equal to
/// `cwd`, or a command line containing `needle`. Returns `pid: command line` for each.
pub fn live_processes(pids: &[u32], cwd: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let base = entry.path();
        let stat = std::fs::read_to_string(base.join("stat")).unwrap_or_default();
        // The state follows the ")" that ends the command name.
        if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) || stat.is_empty() {
            continue;
        }
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let in_dir = std::fs::read_link(base.join("cwd")).is_ok_and(|d| d == cwd);
        if pids.contains(&pid) || in_dir || (!needle.is_empty() && cmdline.contains(needle)) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}
