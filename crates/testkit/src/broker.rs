//! A RabbitMQ node of its own, for the tests that must stop and start the broker.
//!
//! Stopping the shared broker would break every other test running beside it, and
//! `rabbitmqctl stop_app`/`start_app` on a node with the management plugin fails here to
//! bind its listener again (`eaddrinuse`), so a test that needs "RabbitMQ stopped, then
//! started" gets a whole node: the Debian package's `rabbitmq-server` run as a child process
//! with its own node name, ports, Mnesia directory, logs, Erlang cookie and plugins file
//! (management only), in a temp dir like the mail stacks'. [`PrivateBroker::stop`] is a real
//! shutdown (SIGTERM: the server script stops the node and waits for it), [`PrivateBroker::crash`]
//! a `kill -9` of the whole node, and [`PrivateBroker::start`] starts the same node again on
//! the same ports and data, so durable queues and their messages come back.
//!
//! A node takes 4-6 s to start (more on a loaded machine) and up to 6 s to stop with the
//! management plugin, so use it only where the broker itself must go away; everything else
//! takes a [`crate::rabbit::Vhost`] on the shared broker. A watchdog kills the node and
//! removes its dir if the test process dies without dropping it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::mail::procs;

/// The server script of Debian's rabbitmq-server package (the `/usr/sbin` wrapper would
/// switch to user `rabbitmq`, who cannot write the test's dir).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const HINT: &str = "run make services (scripts/ensure-services.sh) to install rabbitmq-server";
/// How long a node may take to accept AMQP and answer the management API after a start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How many sets of free ports to try when another process takes one first.
const PORT_ATTEMPTS: usize = 3;
/// How long a graceful stop may take before the node is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A private RabbitMQ node; clones share it, and the last one dropped kills it and removes
/// its files.
#[derive(Clone, Debug)]
pub struct PrivateBroker {
    node: Arc<Node>,
}

#[derive(Debug)]
struct Node {
    name: String,
    path: PathBuf,
    amqp_port: u16,
    api_port: u16,
    dist_port: u16,
    kill: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    server: Option<Child>,
    watchdog: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl PrivateBroker {
    /// Starts a new node and waits until it accepts AMQP and its management API answers.
    pub async fn launch(prefix: &str) -> Result<PrivateBroker> {
        let prefix = prefix.to_owned();
        blocking(move || PrivateBroker::launch_blocking(&prefix)).await
    }

    fn launch_blocking(prefix: &str) -> Result<PrivateBroker> {
        if !Path::new(SERVER).is_file() {
            bail!("{SERVER} is missing: {HINT}");
        }
        let need = |name: &str| procs::find_bin(name).with_context(|| format!("`{name}` not found in PATH"));
        let (sh, kill) = (need("sh")?, need("kill")?);
        let clean: String = prefix.chars().filter(char::is_ascii_alphanumeric).collect();
        let mut clashes = Vec::new();
        // The ports were free when picked; another process may take one before the node
        // binds it. Only such a clash is worth another try.
        for _ in 0..PORT_ATTEMPTS {
            let dir = crate::mail::make_stack_dir("rabbitmq.")?;
            let path = dir.path().to_path_buf();
            let [amqp_port, api_port, dist_port] = free_ports()?;
            let name = format!("deskmail-{clean}-{}-{}@localhost", std::process::id(), path_tag(&path));
            let watchdog = procs::spawn_watchdog(&sh, &kill, &path)?;
            let node = Node {
                name,
                path,
                amqp_port,
                api_port,
                dist_port,
                kill: kill.clone(),
                state: Mutex::new(State { server: None, watchdog: Some(watchdog), dir: Some(dir) }),
            };
            node.write_files()?;
            match node.start() {
                Ok(()) => return Ok(PrivateBroker { node: Arc::new(node) }),
                Err(e) if format!("{e:#}").contains("eaddrinuse") => clashes.push(format!("{e:#}")),
                Err(e) => return Err(e),
            }
        }
        bail!(
            "no free ports for a private RabbitMQ node after {PORT_ATTEMPTS} tries:\n{}",
            clashes.join("\n")
        )
    }

    /// The AMQP port on 127.0.0.1.
    pub fn amqp_port(&self) -> u16 {
        self.node.amqp_port
    }

    /// The management API's base URL, `http://127.0.0.1:<port>/api`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.node.api_port)
    }

    /// The pid of the node's server script, which leads the node's process group (for
    /// [`crate::process::group_cpu_secs`]), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.node.lock().server.as_ref().map(Child::id)
    }

    /// True while the node's server process runs.
    pub fn is_running(&self) -> bool {
        self.node.lock().server.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the node the way an operator does (SIGTERM to the server script, which stops
    /// the node and waits for it): clients see their connections closed and the port
    /// refuses new ones. Returns how long the stop took.
    pub async fn stop(&self) -> Result<Duration> {
        let node = self.node.clone();
        blocking(move || node.stop(libc::SIGTERM)).await
    }

    /// Kills the whole node with SIGKILL, as a crash or an OOM kill would.
    pub async fn crash(&self) -> Result<Duration> {
        let node = self.node.clone();
        blocking(move || node.stop(libc::SIGKILL)).await
    }

    /// Starts the stopped node again on the same ports and data, and waits until it accepts
    /// AMQP and its management API answers. Returns how long that took.
    pub async fn start(&self) -> Result<Duration> {
        let node = self.node.clone();
        blocking(move || {
            let started = Instant::now();
            node.start()?;
            Ok(started.elapsed())
        })
        .await
    }

    /// The last `n` lines of the node's log.
    pub fn log_tail(&self, n: usize) -> String {
        procs::tail(&self.node.log_path(), n)
    }
}

impl Node {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn log_path(&self) -> PathBuf {
        self.path.join("log").join(format!("{}.log", self.name))
    }

    fn write_files(&self) -> Result<()> {
        let write = |name: &str, text: String| {
            std::fs::write(self.path.join(name), text)
                .with_context(|| format!("write {}", self.path.join(name).display()))
        };
        write("enabled_plugins", "[rabbitmq_management].\n".to_owned())?;
        write(
            "rabbitmq.conf",
            format!(
                "listeners.tcp.default = 127.0.0.1:{}\n\
                 management.tcp.ip = 127.0.0.1\n\
                 management.tcp.port = {}\n\
                 collect_statistics_interval = 1000\n",
                self.amqp_port, self.api_port
            ),
        )?;
        // Shadows /etc/rabbitmq/rabbitmq-env.conf, which names the system node.
        write("rabbitmq-env.conf", String::new())?;
        std::fs::create_dir_all(self.path.join("log")).context("create the node's log dir")?;
        Ok(())
    }

    fn command(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let p = |sub: &str| self.path.join(sub);
        let mut cmd = Command::new(SERVER);
        cmd.current_dir(&self.path)
            .env("HOME", &self.path)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_USE_LONGNAME", "false")
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", p("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", p("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", p("mnesia"))
            .env("RABBITMQ_LOG_BASE", p("log"))
            .env("RABBITMQ_PID_FILE", p("node.pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .process_group(0);
        cmd
    }

    fn start(&self) -> Result<()> {
        ensure_epmd();
        let mut state = self.lock();
        if let Some(child) = state.server.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            bail!("node {} is already running", self.name);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join("server.out"))
            .context("open the node's server.out")?;
        let err = out.try_clone().context("clone the node's server.out")?;
        let child = self
            .command()
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawn {SERVER} for node {}", self.name))?;
        state.server = Some(child);
        drop(state);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.lock().server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "RabbitMQ node {} exited during start ({status}):\n{}\n{}",
                    self.name,
                    procs::tail(&self.path.join("server.out"), 30),
                    procs::tail(&self.log_path(), 30)
                );
            }
            if procs::port_busy(self.amqp_port) && api_answers(self.api_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.stop(libc::SIGKILL);
                bail!(
                    "RabbitMQ node {} did not accept AMQP on {} and answer its management API on {} within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.amqp_port,
                    self.api_port,
                    procs::tail(&self.log_path(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to the server script (SIGTERM: a graceful stop) or to the node's
    /// whole process group (SIGKILL), waits for the script to exit, then makes sure no
    /// process of the group is left.
    fn stop(&self, signal: i32) -> Result<Duration> {
        let started = Instant::now();
        let mut state = self.lock();
        let Some(mut child) = state.server.take() else {
            return Ok(Duration::ZERO);
        };
        let pgid = child.id();
        let target = if signal == libc::SIGKILL { format!("-{pgid}") } else { pgid.to_string() };
        let _ = Command::new(&self.kill)
            .args([format!("-{signal}"), "--".to_owned(), target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let graceful = loop {
            match child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => break false,
            }
        };
        procs::kill_groups(&self.kill, &[pgid], Duration::from_secs(10))?;
        let _ = child.wait();
        if !graceful {
            bail!("RabbitMQ node {} did not stop within {STOP_TIMEOUT:?}; killed it", self.name);
        }
        Ok(started.elapsed())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.stop(libc::SIGKILL) {
            eprintln!("deskmail-testkit: {e:#}");
        }
        let mut state = self.lock();
        if let Some(mut watchdog) = state.watchdog.take() {
            procs::stop_watchdog(&self.kill, &mut watchdog);
        }
        // Processes found by the dir (a server started mid-drop) go before the files do.
        let left = procs::groups_using(&self.path, None);
        let _ = procs::kill_groups(&self.kill, &left, Duration::from_secs(10));
        if let Some(dir) = state.dir.take()
            && let Err(e) = dir.close()
        {
            eprintln!("deskmail-testkit: could not remove {}: {e}", self.path.display());
        }
    }
}

/// Starts epmd (the Erlang port mapper) if none runs, detached and with a clean
/// environment, so that it is not the node's child: the node's watchdog finds processes by
/// the node's dir in their environment and must not take the machine's epmd along.
fn ensure_epmd() {
    let Some(epmd) = procs::find_bin("epmd") else { return };
    let _ = Command::new(epmd)
        .arg("-daemon")
        .env_clear()
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn api_answers(port: u16) -> bool {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().into();
    agent
        .get(&format!("http://127.0.0.1:{port}/api/overview"))
        .header("authorization", crate::rabbit::BASIC_AUTH)
        .call()
        .is_ok_and(|r| r.status().is_success())
}

/// Three distinct ports the kernel had free a moment ago.
fn free_ports() -> Result<[u16; 3]> {
    let listeners = [(); 3].map(|()| TcpListener::bind("127.0.0.1:0"));
    let mut ports = [0u16; 3];
    for (port, listener) in ports.iter_mut().zip(listeners) {
        *port = listener.and_then(|l| l.local_addr()).context("find a free port")?.port();
    }
    Ok(ports)
}

/// The random part of the temp dir's name (alphanumeric, as a node name needs).
fn path_tag(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_start_matches("rabbitmq.").chars().filter(char::is_ascii_alphanumeric).collect())
        .unwrap_or_default()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.context("private broker task failed")?
}
