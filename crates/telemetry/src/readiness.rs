//! Readiness: named checks ("rabbitmq", "configd", "database") that the daemon's tasks set
//! ready or unready; the process is ready when every check is.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The reason a check gets when it is registered, before its owner has said anything.
pub const NOT_CHECKED_YET: &str = "not checked yet";

/// The reason a check gets when the last [`ReadyFlag`] for it is dropped: nobody maintains it
/// any more, so it must not keep the process ready.
pub const OWNER_STOPPED: &str = "its owner stopped";

/// The set of readiness checks of one process. Cheap to clone; clones share the checks.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<String, Check>>>,
}

#[derive(Debug)]
struct Check {
    state: CheckState,
    /// Live [`ReadyFlag`]s for this name.
    flags: usize,
}

/// One check's state as [`Readiness::report`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckState {
    Ready,
    /// Not ready, with the reason shown on `/readyz`.
    Unready(String),
}

/// The readiness of every check at one moment, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    pub checks: Vec<(String, CheckState)>,
}

impl ReadinessReport {
    /// True when there is at least one check and every check is ready. With none the daemon
    /// is still starting (its listener binds before it registers its checks), so not ready.
    pub fn is_ready(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|(_, s)| *s == CheckState::Ready)
    }

    /// The checks that are not ready, with their reasons.
    pub fn unready(&self) -> impl Iterator<Item = (&str, &str)> {
        self.checks.iter().filter_map(|(name, s)| match s {
            CheckState::Ready => None,
            CheckState::Unready(reason) => Some((name.as_str(), reason.as_str())),
        })
    }
}

impl Readiness {
    /// An empty set of checks (not ready until a check is registered and ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the check `name`, not ready ("not checked yet") until its flag says so.
    ///
    /// Registering a name that exists returns another flag for the same check (its state is
    /// kept), so two tasks that depend on the same thing may share it: the last word wins.
    /// When the last flag of a check is dropped, the check turns unready ("its owner
    /// stopped"): a check nobody maintains must not hold the process ready. Registering
    /// the name again afterwards re-arms it (unready, "not checked yet").
    pub fn register(&self, name: impl Into<String>) -> ReadyFlag {
        let name = name.into();
        let mut checks = self.lock();
        let check = checks
            .entry(name.clone())
            .or_insert_with(|| Check { state: CheckState::Unready(NOT_CHECKED_YET.into()), flags: 0 });
        if check.flags == 0 {
            check.state = CheckState::Unready(NOT_CHECKED_YET.into());
        }
        check.flags += 1;
        ReadyFlag { name, readiness: self.clone() }
    }

    /// Every check's state now.
    pub fn report(&self) -> ReadinessReport {
        let checks = self.lock().iter().map(|(name, c)| (name.clone(), c.state.clone())).collect();
        ReadinessReport { checks }
    }

    /// True when at least one check is registered and every one is ready.
    pub fn is_ready(&self) -> bool {
        let checks = self.lock();
        !checks.is_empty() && checks.values().all(|c| c.state == CheckState::Ready)
    }

    fn set(&self, name: &str, state: CheckState) {
        if let Some(check) = self.lock().get_mut(name) {
            check.state = state;
        }
    }

    /// The lock is only held for map operations that cannot panic half-way, so a poisoned
    /// lock still holds consistent data.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Check>> {
        self.checks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness").field("checks", &self.report().checks).finish()
    }
}

/// The handle a task holds to say whether the thing it watches is usable.
///
/// The reason is shown as plain text on `/readyz`: give a reason code and the server's words,
/// never a password, a token or a URL with credentials (URL passwords are masked anyway).
#[derive(Debug)]
pub struct ReadyFlag {
    name: String,
    readiness: Readiness,
}

impl ReadyFlag {
    /// Spawns a task that runs `probe` now and then every `every` until `shutdown`, and sets
    /// this flag from its answer: ready on `Ok`, unready with the reason on `Err`.
    pub fn spawn_probe<F, Fut>(
        self,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
        mut probe: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match probe().await {
                    Ok(()) => self.set_ready(),
                    Err(why) => self.set_unready(why),
                }
            }
        })
    }

    /// The check's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Marks the check ready.
    pub fn set_ready(&self) {
        self.readiness.set(&self.name, CheckState::Ready);
    }

    /// Marks the check not ready, with the reason `/readyz` shows.
    pub fn set_unready(&self, reason: impl fmt::Display) {
        let reason = mask_url_passwords(&reason.to_string());
        self.readiness.set(&self.name, CheckState::Unready(reason));
    }

    /// Sets the check from a boolean; `reason` is used when `ready` is false.
    pub fn set(&self, ready: bool, reason: impl fmt::Display) {
        if ready { self.set_ready() } else { self.set_unready(reason) }
    }
}

impl Clone for ReadyFlag {
    fn clone(&self) -> Self {
        if let Some(check) = self.readiness.lock().get_mut(&self.name) {
            check.flags += 1;
        }
        Self { name: self.name.clone(), readiness: self.readiness.clone() }
    }
}

impl Drop for ReadyFlag {
    fn drop(&mut self) {
        if let Some(check) = self.readiness.lock().get_mut(&self.name) {
            check.flags = check.flags.saturating_sub(1);
            if check.flags == 0 {
                check.state = CheckState::Unready(OWNER_STOPPED.into());
            }
        }
    }
}

/// Replaces the password of every `scheme://user:password@` in `text` with `***`: a reason
/// built from an error that quotes a connection URL must not publish its password.
pub(crate) fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or end of text.
        let end = tail.find(|c: char| c == '/' || c.is_whitespace()).unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords() {
        let cases = [
            ("plain reason", "plain reason"),
            ("amqp://u:secret@host:5672/vh refused", "amqp://u:***@host:5672/vh refused"),
            ("postgres://u@db/x", "postgres://u@db/x"),
            ("a http://h:80/p and amqps://x:y@h", "a http://h:80/p and amqps://x:***@h"),
        ];
        for (input, want) in cases {
            assert_eq!(mask_url_passwords(input), want, "{input}");
        }
    }

    #[test]
    fn flags_share_a_name_and_dropping_the_last_turns_unready() {
        let r = Readiness::new();
        assert!(!r.is_ready(), "no checks yet: still starting, not ready");
        let a = r.register("rabbitmq");
        assert!(!r.is_ready());
        a.set_ready();
        assert!(r.is_ready());
        let b = r.register("rabbitmq");
        assert!(r.is_ready(), "a second flag keeps the state");
        b.set_unready("connection refused");
        assert_eq!(r.report().unready().collect::<Vec<_>>(), vec![("rabbitmq", "connection refused")]);
        a.set_ready();
        drop(b);
        assert!(r.is_ready(), "one flag is still alive");
        drop(a);
        assert_eq!(r.report().unready().collect::<Vec<_>>(), vec![("rabbitmq", OWNER_STOPPED)]);
        let c = r.register("rabbitmq");
        assert_eq!(r.report().unready().collect::<Vec<_>>(), vec![("rabbitmq", NOT_CHECKED_YET)]);
        c.set_ready();
        assert!(r.is_ready());
    }
}
