//! systemd's service notification protocol (`sd_notify(3)`): `READY=1` once the daemon
//! serves, `STOPPING=1` when it begins to shut down, `WATCHDOG=1` keep-alives, `STATUS=`
//! text for `systemctl status`. Each is one datagram to the unix socket systemd names in
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). With `NOTIFY_SOCKET`
//! unset (not under systemd, or `Type=` other than `notify`), everything here is a no-op.
//!
//! Written over `std::os::unix::net::UnixDatagram` rather than the `sd-notify` crate
//! (0.5): that crate reads `$NOTIFY_SOCKET` only from the process environment, so a test
//! could only aim it at its own socket with `std::env::set_var`, which is `unsafe` in
//! edition 2024 (denied in this workspace) and racy between test threads; and it does not
//! handle abstract-namespace (`@name`) sockets, which the protocol allows. The protocol is
//! one `sendto` of `KEY=VALUE` lines.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where notifications go: the socket named by `$NOTIFY_SOCKET`, or nowhere.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// The name after `@`, in the abstract socket namespace (Linux).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The socket `$NOTIFY_SOCKET` names; disabled when it is unset or empty.
    pub fn from_env() -> Notifier {
        Notifier::from_socket(std::env::var_os("NOTIFY_SOCKET").unwrap_or_default())
    }

    /// The socket named `value` as `$NOTIFY_SOCKET` would name it: `@name` is abstract,
    /// anything else a path; empty disables.
    pub fn from_socket(value: impl Into<OsString>) -> Notifier {
        let value: OsString = value.into();
        let bytes = value.as_bytes();
        let target = match bytes.first() {
            None => None,
            Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
            Some(_) => Some(Target::Path(PathBuf::from(value))),
        };
        Notifier { target }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// True when there is a socket to notify.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: startup finished, the daemon serves.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1\n")
    }

    /// `STOPPING=1`: shutdown began.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\n")
    }

    /// `WATCHDOG=1`: the keep-alive `WatchdogSec=` expects.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1\n")
    }

    /// `STATUS=text` for `systemctl status` (line breaks become spaces).
    pub fn status(&self, text: &str) -> io::Result<()> {
        let one_line: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
        self.send(&format!("STATUS={one_line}\n"))
    }

    /// Sends `message` (newline-separated `KEY=VALUE` lines) as one datagram; `Ok` without
    /// sending when disabled.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else { return Ok(()) };
        let socket = UnixDatagram::unbound()?;
        // systemd reads its notify socket promptly; never hang a daemon on it.
        socket.set_write_timeout(Some(Duration::from_secs(2)))?;
        let sent = match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path)?,
            Target::Abstract(name) => send_abstract(&socket, name, message.as_bytes())?,
        };
        if sent == message.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "notification datagram truncated"))
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract unix sockets exist only on Linux"))
}

/// Sends `READY=1` to `$NOTIFY_SOCKET` (nothing when unset); a failure is logged at WARN,
/// since systemd would then time the start out, and is not otherwise fatal.
pub fn ready() {
    log_failure("READY=1", Notifier::from_env().ready());
}

/// Sends `STOPPING=1` to `$NOTIFY_SOCKET` (nothing when unset); a failure is logged at WARN.
pub fn stopping() {
    log_failure("STOPPING=1", Notifier::from_env().stopping());
}

/// Sends [`stopping`] the moment `shutdown` is cancelled (the first SIGTERM/SIGINT), unless
/// `done` is cancelled first (the daemon ended on its own).
pub fn spawn_stopping_on(shutdown: CancellationToken, done: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => stopping(),
            () = done.cancelled() => {}
        }
    })
}

fn log_failure(what: &str, result: io::Result<()>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, notification = what, "Cannot notify systemd.");
    }
}

/// The watchdog interval systemd asks for (`$WATCHDOG_USEC`, when `$WATCHDOG_PID` is unset
/// or this process), or `None`.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var_os("WATCHDOG_USEC");
    let pid = std::env::var_os("WATCHDOG_PID");
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on given values: `usec` must be a positive integer, `pid` absent
/// or equal to `my_pid`.
fn watchdog_interval_from(usec: Option<&OsStr>, pid: Option<&OsStr>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok().filter(|&n| n > 0)?;
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// When systemd asks for a watchdog (`WatchdogSec=`) and `$NOTIFY_SOCKET` is set, spawns a
/// task sending `WATCHDOG=1` every half interval until `shutdown`; otherwise `None`. The
/// pings prove the async runtime still schedules tasks, not that work progresses.
pub fn spawn_watchdog(shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    let notifier = Notifier::from_env();
    let interval = watchdog_interval()?;
    notifier.is_enabled().then(|| spawn_watchdog_with(notifier, interval / 2, shutdown))
}

/// Sends `WATCHDOG=1` through `notifier` every `every` (first one at once) until `shutdown`.
pub fn spawn_watchdog_with(
    notifier: Notifier,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => log_failure("WATCHDOG=1", notifier.watchdog()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A datagram socket bound at a fresh path, removed on drop.
    struct Listener {
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl Listener {
        fn bind() -> Listener {
            static N: AtomicU32 = AtomicU32::new(0);
            let name =
                format!("deskmail-notify-{}-{}.sock", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Listener { path, socket }
        }

        fn recv(&self) -> String {
            recv(&self.socket)
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_each_state_to_a_path_socket() {
        let l = Listener::bind();
        let n = Notifier::from_socket(&l.path);
        assert!(n.is_enabled());
        n.ready().unwrap();
        assert_eq!(l.recv(), "READY=1\n");
        n.watchdog().unwrap();
        assert_eq!(l.recv(), "WATCHDOG=1\n");
        n.status("draining\n3 in flight").unwrap();
        assert_eq!(l.recv(), "STATUS=draining 3 in flight\n");
        n.stopping().unwrap();
        assert_eq!(l.recv(), "STOPPING=1\n");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("deskmail-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::from_socket(format!("@{name}")).ready().unwrap();
        assert_eq!(recv(&socket), "READY=1\n");
    }

    #[test]
    fn disabled_without_a_socket_and_errors_on_a_missing_one() {
        assert!(!Notifier::from_socket("").is_enabled());
        let off = Notifier::disabled();
        off.ready().unwrap();
        off.stopping().unwrap();
        let missing = Notifier::from_socket(Path::new("/nonexistent/deskmail/notify.sock"));
        assert_eq!(missing.ready().unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn watchdog_interval_rules() {
        let os = |s: &'static str| Some(OsStr::new(s));
        let cases: [(Option<&OsStr>, Option<&OsStr>, Option<Duration>); 6] = [
            (None, None, None),
            (os("30000000"), None, Some(Duration::from_secs(30))),
            (os("500000"), os("42"), Some(Duration::from_millis(500))),
            (os("500000"), os("43"), None),
            (os("0"), None, None),
            (os("soon"), None, None),
        ];
        for (usec, pid, want) in cases {
            assert_eq!(watchdog_interval_from(usec, pid, 42), want, "{usec:?} {pid:?}");
        }
    }

    #[tokio::test]
    async fn watchdog_task_pings_until_shutdown() {
        let l = Listener::bind();
        let shutdown = CancellationToken::new();
        let task =
            spawn_watchdog_with(Notifier::from_socket(&l.path), Duration::from_millis(20), shutdown.clone());
        let socket = l.socket.try_clone().unwrap();
        let got = tokio::task::spawn_blocking(move || [recv(&socket), recv(&socket)]).await.unwrap();
        assert_eq!(got, ["WATCHDOG=1\n", "WATCHDOG=1\n"]);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
