//! [`SmtpSender`]: sends raw messages over a small pool of sessions that we open ourselves
//! (TCP_NODELAY; see the module docs of `smtp` for why lettre's own pool cannot do that).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deskmail_core::StatusReason;
use lettre::address::Envelope;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use tokio::sync::Semaphore;

use super::SmtpReply;
use super::chain::{self, pipelined};
use super::session;
use crate::error::ConnError;
use crate::settings::{Credentials, ServerEndpoint};
use crate::tls;

/// Pool limits of an [`SmtpSender`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// Most sessions open (and transactions in flight) at once. Default 4.
    pub max_connections: usize,
    /// Messages per session before it is closed and a new one opened (some providers cap
    /// this). Default 100.
    pub max_messages_per_connection: u32,
    /// An idle session older than this is closed instead of reused. Default 60 s, below
    /// the usual server-side idle limits (Postfix 300 s, many providers 60-120 s).
    pub idle_timeout: Duration,
    /// A session idle at least this long is checked with NOOP before reuse, so that a
    /// connection the server dropped is not discovered in the middle of a mail. Default 5 s.
    pub check_after_idle: Duration,
    /// Use SMTP PIPELINING (RFC 2920) when the server offers it: MAIL, RCPT and DATA go out
    /// in one write, so a mail costs two round trips instead of three plus one per
    /// recipient. Costs one more EHLO per session, to learn whether it is offered. Any
    /// refusal in a pipelined group closes the session (nothing is sent). Default false.
    pub pipelining: bool,
    /// Time for one step of a transaction (a write and its reply; plus time for the content
    /// at no less than 64 KiB/s when it carries one). Default `None`: the endpoint's timeout.
    pub command_timeout: Option<Duration>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            max_connections: 4,
            max_messages_per_connection: 100,
            idle_timeout: Duration::from_secs(60),
            check_after_idle: Duration::from_secs(5),
            pipelining: false,
            command_timeout: None,
        }
    }
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 5xx to MAIL, RCPT, DATA or the message: do not retry unchanged.
    #[error("SMTP server rejected the message: {0}")]
    Rejected(SmtpReply),
    /// 4xx: the server asks to try again later.
    #[error("SMTP server deferred the message: {0}")]
    Deferred(SmtpReply),
    /// No session could be opened: DNS, connect, TLS, AUTH (see [`ConnError::reason`]).
    #[error("no SMTP session: {0}")]
    Connection(#[source] ConnError),
    /// The session broke off during the transaction (connection reset, TLS cut, a garbled
    /// reply). The server may or may not have taken the message.
    #[error("SMTP session broke off: {detail}")]
    Interrupted {
        /// What happened.
        detail: String,
        /// lettre's error.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// No reply within the time allowed for the transaction.
    #[error("SMTP transaction timed out after {0:?}")]
    Timeout(Duration),
    /// The message cannot go to this server at all (non-ASCII addresses without SMTPUTF8,
    /// 8-bit content without 8BITMIME).
    #[error("message cannot be sent: {0}")]
    Unsendable(String),
}

impl SendError {
    /// Retrying the same message unchanged cannot help: a 5xx or an unsendable message.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Rejected(_) | Self::Unsendable(_))
    }

    /// Everything else: 4xx, no session (the box, not the message, is the problem),
    /// timeouts and broken sessions.
    pub fn is_transient(&self) -> bool {
        !self.is_permanent()
    }

    /// The server's reply to the message, for 4xx and 5xx.
    pub fn reply(&self) -> Option<&SmtpReply> {
        match self {
            Self::Rejected(r) | Self::Deferred(r) => Some(r),
            _ => None,
        }
    }

    /// The server's words when it said something, otherwise what happened.
    pub fn server_message(&self) -> String {
        match self {
            Self::Rejected(r) | Self::Deferred(r) => r.to_string(),
            Self::Connection(e) => e.server_message(),
            other => other.to_string(),
        }
    }

    /// The status to report for the mailbox when the failure is the box's, not the
    /// message's: `None` for 4xx/5xx replies to the message and unsendable messages.
    pub fn mailbox_reason(&self) -> Option<StatusReason> {
        match self {
            Self::Connection(e) => Some(e.reason()),
            Self::Timeout(_) => Some(StatusReason::Timeout),
            Self::Interrupted { .. } => Some(StatusReason::ProtocolError),
            Self::Rejected(_) | Self::Deferred(_) | Self::Unsendable(_) => None,
        }
    }
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
    sent: u32,
    pipelining: bool,
}

struct Inner {
    endpoint: ServerEndpoint,
    creds: Credentials,
    hello: ClientId,
    config: SenderConfig,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    opened: AtomicU64,
}

/// Sends raw messages through one SMTP server with a box's settings. Cheap to clone (the
/// pool is shared); sends may run concurrently up to [`SenderConfig::max_connections`].
#[derive(Clone)]
pub struct SmtpSender {
    inner: Arc<Inner>,
}

impl fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSender")
            .field("endpoint", &self.inner.endpoint)
            .field("user", &self.inner.creds.username())
            .field("config", &self.inner.config)
            .field("idle", &self.idle_connections())
            .finish()
    }
}

impl SmtpSender {
    /// A sender; connects lazily, on the first [`SmtpSender::send`]. Fails at once on
    /// unusable TLS settings.
    pub fn new(
        endpoint: ServerEndpoint,
        creds: Credentials,
        hello_name: Option<&str>,
        config: SenderConfig,
    ) -> Result<Self, ConnError> {
        tls::client_config(&endpoint.tls, crate::error::Protocol::Smtp, &endpoint.host)?;
        tls::lettre_parameters(&endpoint.tls, &endpoint.host)?;
        let permits = Semaphore::new(config.max_connections.max(1));
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint,
                creds,
                hello: session::client_id(hello_name),
                config,
                permits,
                idle: Mutex::new(Vec::new()),
                opened: AtomicU64::new(0),
            }),
        })
    }

    /// Sends `raw` (a complete RFC 5322 message, CRLF line ends) to the envelope's
    /// recipients. `Ok` carries the server's 250 reply; the message is then the server's.
    pub async fn send(&self, envelope: &Envelope, raw: &[u8]) -> Result<SmtpReply, SendError> {
        let _permit =
            self.inner.permits.acquire().await.map_err(|_| SendError::Unsendable("sender closed".into()))?;
        let (conn, sent, pipelining) = self.checkout().await?;
        self.transaction(conn, sent, pipelining, envelope, raw).await
    }

    /// Sends several messages over one session of the pool, in order, and calls `done(i,
    /// result)` for message `i` as soon as its fate is known (each exactly once).
    ///
    /// When the server offers PIPELINING (and [`SenderConfig::pipelining`] is on), the
    /// transactions are chained (RFC 2920 section 3.1 lets the message content start a
    /// group): the end of one message goes out in the same write as the next message's
    /// MAIL FROM, RCPT TO and DATA, so a message costs one round trip instead of two. A
    /// refusal or error ends the session (the others go on over a new one); only the message
    /// whose end was written when the session broke is in doubt, as with [`SmtpSender::send`].
    /// Messages that cannot be chained (non-ASCII, null sender, no PIPELINING) go one by one.
    pub async fn send_batch<F>(&self, mails: &[(&Envelope, &[u8])], mut done: F)
    where
        F: FnMut(usize, Result<SmtpReply, SendError>),
    {
        let Ok(_permit) = self.inner.permits.acquire().await else {
            for i in 0..mails.len() {
                done(i, Err(SendError::Unsendable("sender closed".into())));
            }
            return;
        };
        let mut next = 0;
        while next < mails.len() {
            let (mut conn, sent, pipelining) = match self.checkout().await {
                Ok(c) => c,
                Err(e) => {
                    done(next, Err(e));
                    next += 1;
                    continue;
                }
            };
            let (envelope, raw) = mails[next];
            if !(pipelining && chain::chainable(envelope, raw)) {
                done(next, self.transaction(conn, sent, pipelining, envelope, raw).await);
                next += 1;
                continue;
            }
            let room = self.inner.config.max_messages_per_connection.saturating_sub(sent).max(1) as usize;
            let run = mails[next..].iter().take(room).take_while(|(e, r)| chain::chainable(e, r)).count();
            let base = next;
            let step = self.step_timeout();
            let outcome =
                chain::send_chained(&mut conn, &mails[base..base + run], step, |i, r| done(base + i, r))
                    .await;
            next += outcome.settled;
            if outcome.healthy {
                let count = u32::try_from(outcome.settled).unwrap_or(u32::MAX);
                self.checkin(conn, sent.saturating_add(count), pipelining);
            }
        }
    }

    /// One transaction on a checked-out session, which goes back to the pool when usable.
    async fn transaction(
        &self,
        mut conn: AsyncSmtpConnection,
        sent: u32,
        pipelining: bool,
        envelope: &Envelope,
        raw: &[u8],
    ) -> Result<SmtpReply, SendError> {
        // The step timeout, plus time for the body at no less than 64 KiB/s.
        let allowed = self.step_timeout() + Duration::from_millis(raw.len() as u64 / 64);
        let transaction = async {
            let ascii =
                envelope.from().into_iter().chain(envelope.to()).all(|a| AsRef::<str>::as_ref(a).is_ascii());
            if pipelining && envelope.from().is_some() && ascii && raw.is_ascii() {
                pipelined(&mut conn, envelope, raw).await
            } else {
                conn.send(envelope, raw).await
            }
        };
        match tokio::time::timeout(allowed, transaction).await {
            Ok(Ok(response)) => {
                self.checkin(conn, sent + 1, pipelining);
                Ok(SmtpReply::from(&response))
            }
            Ok(Err(e)) => {
                // lettre aborts the session on any reply or I/O error; a refusal before
                // anything was sent (SMTPUTF8, 8BITMIME) leaves it usable.
                if !conn.has_broken() {
                    self.checkin(conn, sent, pipelining);
                }
                Err(send_error(e))
            }
            Err(_) => Err(SendError::Timeout(allowed)),
        }
    }

    fn step_timeout(&self) -> Duration {
        self.inner.config.command_timeout.unwrap_or(self.inner.endpoint.timeout)
    }

    /// Whether `other` is a clone of this sender (the same pool).
    pub fn same_pool(&self, other: &SmtpSender) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// How many sessions this sender has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Sessions waiting in the pool.
    pub fn idle_connections(&self) -> usize {
        self.idle().len()
    }

    /// QUITs every idle session (sessions in use finish their mail first).
    pub async fn close(&self) {
        let idle: Vec<Idle> = self.idle().drain(..).collect();
        for mut i in idle {
            let _ = tokio::time::timeout(self.inner.endpoint.timeout, i.conn.quit()).await;
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Nothing can leave the list half-changed; a panic elsewhere does not poison it.
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle session that is still good, else a new one.
    async fn checkout(&self) -> Result<(AsyncSmtpConnection, u32, bool), SendError> {
        let inner = &self.inner;
        loop {
            let Some(mut idle) = self.idle().pop() else { break };
            let waited = idle.since.elapsed();
            if waited >= inner.config.idle_timeout {
                self.retire(idle.conn);
                continue;
            }
            if waited >= inner.config.check_after_idle {
                let alive = tokio::time::timeout(inner.endpoint.timeout, idle.conn.test_connected()).await;
                if !matches!(alive, Ok(true)) {
                    continue;
                }
            }
            return Ok((idle.conn, idle.sent, idle.pipelining));
        }
        let (conn, keywords) = session::connect_with_keywords(
            &inner.endpoint,
            &inner.creds,
            &inner.hello,
            inner.config.pipelining,
        )
        .await
        .map_err(SendError::Connection)?;
        inner.opened.fetch_add(1, Ordering::Relaxed);
        let pipelining = keywords
            .iter()
            .any(|k| k.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case("PIPELINING")));
        Ok((conn, 0, pipelining))
    }

    fn checkin(&self, conn: AsyncSmtpConnection, sent: u32, pipelining: bool) {
        if conn.has_broken() {
            return;
        }
        if sent >= self.inner.config.max_messages_per_connection {
            self.retire(conn);
            return;
        }
        self.idle().push(Idle { conn, since: Instant::now(), sent, pipelining });
    }

    /// QUITs a session in the background.
    fn retire(&self, mut conn: AsyncSmtpConnection) {
        let timeout = self.inner.endpoint.timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, conn.quit()).await;
        });
    }
}

/// lettre's error for a transaction, as a [`SendError`].
pub(super) fn send_error(e: lettre::transport::smtp::Error) -> SendError {
    match SmtpReply::from_error(&e) {
        Some(reply) if reply.is_permanent() => SendError::Rejected(reply),
        Some(reply) => SendError::Deferred(reply),
        None if e.is_client() => SendError::Unsendable(e.to_string()),
        None => SendError::Interrupted { detail: e.to_string(), source: e },
    }
}
