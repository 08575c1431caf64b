//! Per-box state: the pooled SMTP sender (mailconn's `SmtpSender`, TCP_NODELAY sessions) and
//! its sending lanes (`lane`), the OAuth2 access token, the rate limit, and the health
//! reported to configd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deskmail_configclient::ConfigClient;
use deskmail_core::StatusReason;
use deskmail_mailconn::smtp::{SendError, SenderConfig, SmtpReply, SmtpSender};
use deskmail_mailconn::{ConnError, Credentials, refresh_access_token};
use deskmail_proto::v1 as pb;
use secrecy::{ExposeSecret, SecretString};

use crate::boxes::{BoxAuth, OutboundBox, ResolveError, outbound_box};
use crate::config::SmtpConfig;
use crate::lane::{Lane, LaneRequest};
use crate::message::Built;

/// Why a send did not get a 250.
#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    #[error("{0}")]
    Smtp(#[from] SendError),
    /// The OAuth2 access token could not be had.
    #[error("OAuth2 token: {0}")]
    Token(ConnError),
    /// The box's sending task is gone (its settings changed while the job waited): a
    /// temporary failure, retried.
    #[error("the box's sending task stopped")]
    LaneStopped,
}

impl SendFailure {
    /// A 5xx or a message the server can never take: dead-letter at once.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Smtp(e) if e.is_permanent())
    }
    /// The server's reply to the message (4xx/5xx), if it gave one.
    pub fn reply(&self) -> Option<&SmtpReply> {
        match self {
            Self::Smtp(e) => e.reply(),
            Self::Token(_) | Self::LaneStopped => None,
        }
    }
    /// The status reason when the box (not the message) is the problem.
    pub fn mailbox_reason(&self) -> Option<StatusReason> {
        match self {
            Self::Smtp(e) => e.mailbox_reason(),
            Self::Token(e) => Some(e.reason()),
            Self::LaneStopped => None,
        }
    }
    /// The server's words, or what happened; never a secret.
    pub fn text(&self) -> String {
        match self {
            Self::Smtp(e) => e.server_message(),
            Self::Token(e) => format!("OAuth2 token: {}", e.server_message()),
            Self::LaneStopped => self.to_string(),
        }
    }
}

/// What was last reported to configd for a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    Nothing,
    Active,
    Error(StatusReason),
}

#[derive(Debug)]
struct Health {
    reported: Reported,
    at: Instant,
    sent_unreported: u64,
}

/// An unchanged status is re-reported at most this often (keeps counts and error streaks
/// current without a report per mail).
const REPORT_EVERY: Duration = Duration::from_secs(15);
/// An access token is renewed this long before the provider says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

struct Session {
    sender: SmtpSender,
    /// When the OAuth2 access token inside must be renewed.
    renew_at: Option<Instant>,
}

/// The send metrics: a 250 counts as sent; a 250 or a refusal (4xx/5xx to the mail) is an
/// SMTP transaction whose time is recorded. Box-level failures are counted by the worker.
fn record_send(box_id: &str, result: &Result<SmtpReply, SendFailure>, took: Duration) {
    match result {
        Ok(_) => deskmail_telemetry::sender::job_sent(box_id, took),
        Err(SendFailure::Smtp(SendError::Rejected(_) | SendError::Deferred(_))) => {
            deskmail_telemetry::sender::send_duration(box_id, took);
        }
        Err(_) => {}
    }
}

/// One box's live state.
pub struct BoxEntry {
    pub settings: OutboundBox,
    /// The config revision these settings were last found current in (skips comparing the
    /// settings again for every job of the same snapshot).
    checked_revision: std::sync::atomic::AtomicU64,
    lanes: Vec<Lane>,
    session: tokio::sync::Mutex<Option<Session>>,
    /// The refresh token in use (a rotated one replaces the snapshot's until configd sends it back).
    refresh_token: Mutex<Option<SecretString>>,
    next_slot: Mutex<Instant>,
    warned_sender_header: AtomicBool,
    health: Mutex<Health>,
}

impl std::fmt::Debug for BoxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxEntry").field("box", &self.settings.name).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Settings equal but for the refresh token (which the sender itself may have rotated).
fn same_settings(a: &pb::OutboundSettings, b: &pb::OutboundSettings) -> bool {
    let strip = |s: &pb::OutboundSettings| {
        let mut s = s.clone();
        if let Some(o) = s.oauth2.as_mut() {
            o.refresh_token.clear();
        }
        s
    };
    strip(a) == strip(b)
}

/// Every box's state, keyed by mailbox id.
pub struct Pools {
    entries: Mutex<HashMap<String, Arc<BoxEntry>>>,
    smtp: SmtpConfig,
    client: ConfigClient,
    reporter: String,
}

impl Pools {
    pub fn new(smtp: SmtpConfig, client: ConfigClient, reporter: String) -> Self {
        Self { entries: Mutex::new(HashMap::new()), smtp, client, reporter }
    }

    /// The state of box `m` of config revision `revision`, made anew when its outbound
    /// settings changed (the old sessions are closed).
    pub fn entry(&self, m: &pb::Mailbox, revision: u64) -> Result<Arc<BoxEntry>, ResolveError> {
        let source = m.outbound.as_ref().ok_or_else(|| ResolveError::NotOutbound(m.name.clone()))?;
        // One lock for the look-up and the insert: two jobs that find the settings changed at
        // the same time must share one new entry (one rate limit, one set of lanes).
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get(&m.id) {
            if e.checked_revision.load(Ordering::Relaxed) == revision {
                return Ok(e.clone());
            }
            if same_settings(&e.settings.source, source) && e.settings.name == m.name {
                e.checked_revision.store(revision, Ordering::Relaxed);
                return Ok(e.clone());
            }
        }
        let settings = outbound_box(m, self.smtp.connect_timeout)?;
        let refresh = match &settings.auth {
            BoxAuth::OAuth2 { settings: o, .. } => Some(o.refresh_token.clone()),
            _ => None,
        };
        let lanes = (0..self.smtp.pool_max_per_box.max(1)).map(|_| Lane::spawn()).collect();
        let fresh = Arc::new(BoxEntry {
            settings,
            checked_revision: std::sync::atomic::AtomicU64::new(revision),
            lanes,
            session: tokio::sync::Mutex::new(None),
            refresh_token: Mutex::new(refresh),
            next_slot: Mutex::new(Instant::now()),
            warned_sender_header: AtomicBool::new(false),
            health: Mutex::new(Health {
                reported: Reported::Nothing,
                at: Instant::now(),
                sent_unreported: 0,
            }),
        });
        let old = entries.insert(m.id.clone(), fresh.clone());
        drop(entries);
        if let Some(old) = old {
            tracing::info!(mailbox = %m.name, "Outbound settings changed; new SMTP sessions from now on.");
            tokio::spawn(async move { old.close().await });
        }
        Ok(fresh)
    }

    /// QUITs every idle session.
    pub async fn close_all(&self) {
        let all: Vec<Arc<BoxEntry>> = lock(&self.entries).values().cloned().collect();
        for e in all {
            e.close().await;
        }
    }

    /// Sends `built` through box `e`: a session from its pool (opened with a fresh access
    /// token for OAuth2 boxes), bounded by `[smtp] command_timeout`.
    pub async fn send(&self, e: &BoxEntry, built: &Built) -> Result<SmtpReply, SendFailure> {
        let sender = self.session(e).await?;
        // The lane with the shortest queue. mailconn bounds every step of the send (connect,
        // TLS, AUTH by `connect_timeout`; each command and reply by `command_timeout`).
        let lane = e.lanes.iter().min_by_key(|l| l.queued.load(Ordering::Relaxed));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = LaneRequest { sender, envelope: built.envelope.clone(), raw: built.raw.clone(), reply };
        let gone = || SendFailure::LaneStopped;
        let result = match lane {
            Some(lane) => {
                lane.queued.fetch_add(1, Ordering::Relaxed);
                if lane.tx.send(request).is_err() {
                    lane.queued.fetch_sub(1, Ordering::Relaxed);
                    Err(gone())
                } else {
                    match answer.await {
                        Ok((result, took)) => {
                            record_send(&e.settings.id, &result, took);
                            result
                        }
                        Err(_) => Err(gone()),
                    }
                }
            }
            None => Err(gone()),
        };
        if let Err(SendFailure::Smtp(SendError::Connection(c))) = &result
            && c.reason() == StatusReason::AuthFailed
            && matches!(e.settings.auth, BoxAuth::OAuth2 { .. })
        {
            // The token may have been revoked early: get a new one next time.
            *e.session.lock().await = None;
        }
        result
    }

    async fn session(&self, e: &BoxEntry) -> Result<SmtpSender, SendFailure> {
        let mut slot = e.session.lock().await;
        if let Some(s) = slot.as_ref()
            && s.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(s.sender.clone());
        }
        let (creds, renew_at) = self.credentials(e).await?;
        let config = SenderConfig {
            max_connections: usize::try_from(self.smtp.pool_max_per_box).unwrap_or(8),
            pipelining: true,
            command_timeout: Some(self.smtp.command_timeout),
            ..SenderConfig::default()
        };
        let sender =
            SmtpSender::new(e.settings.endpoint.clone(), creds, self.smtp.hello_name.as_deref(), config)
                .map_err(|c| SendFailure::Smtp(SendError::Connection(c)))?;
        if let Some(old) = slot.replace(Session { sender: sender.clone(), renew_at }) {
            tokio::spawn(async move { old.sender.close().await });
        }
        Ok(sender)
    }

    async fn credentials(&self, e: &BoxEntry) -> Result<(Credentials, Option<Instant>), SendFailure> {
        match &e.settings.auth {
            BoxAuth::None => Ok((Credentials::None, None)),
            BoxAuth::Password { username, password } => {
                Ok((Credentials::Password { username: username.clone(), password: password.clone() }, None))
            }
            BoxAuth::OAuth2 { username, settings } => {
                let mut settings = settings.clone();
                if let Some(current) = lock(&e.refresh_token).clone() {
                    settings.refresh_token = current;
                }
                let token = refresh_access_token(&settings, self.smtp.connect_timeout)
                    .await
                    .map_err(SendFailure::Token)?;
                if let Some(rotated) = token.new_refresh_token {
                    *lock(&e.refresh_token) = Some(rotated.clone());
                    let (client, id, name) =
                        (self.client.clone(), e.settings.id.clone(), e.settings.name.clone());
                    tokio::spawn(async move {
                        let stored = client
                            .store_refresh_token(&id, pb::Direction::Outbound, rotated.expose_secret())
                            .await;
                        match stored {
                            Ok(()) => {
                                tracing::info!(mailbox = %name, "Stored the rotated OAuth2 refresh token.")
                            }
                            Err(e) => {
                                tracing::warn!(mailbox = %name, error = %e, "Could not store the rotated OAuth2 refresh token in configd.")
                            }
                        }
                    });
                }
                let renew_at = token.expires_in.map(|d| Instant::now() + d.saturating_sub(TOKEN_MARGIN));
                Ok((
                    Credentials::OAuth2Token { username: username.clone(), access_token: token.access_token },
                    renew_at,
                ))
            }
        }
    }

    /// Records a good send; reports ACTIVE when the box was not (or not lately).
    pub fn sent_ok(&self, e: &BoxEntry) {
        let report = {
            let mut h = lock(&e.health);
            h.sent_unreported += 1;
            if h.reported != Reported::Active || h.at.elapsed() >= REPORT_EVERY {
                let n = std::mem::take(&mut h.sent_unreported);
                let was_error = matches!(h.reported, Reported::Error(_));
                h.reported = Reported::Active;
                h.at = Instant::now();
                Some((n, was_error))
            } else {
                None
            }
        };
        if let Some((n, was_error)) = report {
            if was_error {
                tracing::info!(mailbox = %e.settings.name, "Outbound box works again.");
            }
            self.report(e, pb::MailboxState::Active, None, String::new(), n);
        }
    }

    /// Records a failure of the box itself (connect, TLS, auth, timeout); reports ERROR.
    pub fn box_failed(&self, e: &BoxEntry, reason: StatusReason, message: String) {
        let report = {
            let mut h = lock(&e.health);
            if h.reported != Reported::Error(reason) || h.at.elapsed() >= REPORT_EVERY {
                h.reported = Reported::Error(reason);
                h.at = Instant::now();
                Some(std::mem::take(&mut h.sent_unreported))
            } else {
                None
            }
        };
        if let Some(n) = report {
            tracing::warn!(mailbox = %e.settings.name, reason = %reason, error = %message, "Outbound box failing.");
            self.report(e, pb::MailboxState::Error, Some(reason), message, n);
        }
    }

    fn report(
        &self,
        e: &BoxEntry,
        state: pb::MailboxState,
        reason: Option<StatusReason>,
        message: String,
        n: u64,
    ) {
        let request = pb::ReportStatusRequest {
            mailbox_id: e.settings.id.clone(),
            direction: pb::Direction::Outbound as i32,
            state: state as i32,
            reason: reason.map_or(0, status_reason),
            message,
            messages: n,
            reporter: self.reporter.clone(),
        };
        let (client, name) = (self.client.clone(), e.settings.name.clone());
        tokio::spawn(async move {
            if let Err(err) = client.report_status(request).await {
                tracing::warn!(mailbox = %name, error = %err, "Could not report the box's status to configd.");
            }
        });
    }
}

impl BoxEntry {
    /// Takes this box's next send slot (`rate_limit_per_minute`) and waits for it, when it is
    /// at most `max_wait` away; `false` (nothing taken) when it is further: the caller defers
    /// the job instead of holding a worker for that long.
    pub async fn pace(&self, max_wait: Duration) -> bool {
        let rate = self.settings.rate_limit_per_minute;
        if rate == 0 {
            return true;
        }
        let gap = Duration::from_secs(60) / rate;
        let at = {
            let mut next = lock(&self.next_slot);
            let now = Instant::now();
            let at = (*next).max(now);
            if at.duration_since(now) > max_wait {
                return false;
            }
            *next = at + gap;
            at
        };
        tokio::time::sleep_until(at.into()).await;
        true
    }

    /// True the first time only: the caller warns once per box about `Sender:`.
    pub fn first_sender_header(&self) -> bool {
        !self.warned_sender_header.swap(true, Ordering::Relaxed)
    }

    async fn close(&self) {
        let session = self.session.lock().await.take();
        if let Some(s) = session {
            s.sender.close().await;
        }
    }
}

/// The proto code of a status reason.
pub fn status_reason(r: StatusReason) -> i32 {
    (match r {
        StatusReason::AuthFailed => pb::StatusReason::AuthFailed,
        StatusReason::ConnectFailed => pb::StatusReason::ConnectFailed,
        StatusReason::TlsFailed => pb::StatusReason::TlsFailed,
        StatusReason::DnsFailed => pb::StatusReason::DnsFailed,
        StatusReason::Timeout => pb::StatusReason::Timeout,
        StatusReason::TokenExpired => pb::StatusReason::TokenExpired,
        StatusReason::MailboxNotFound => pb::StatusReason::MailboxNotFound,
        StatusReason::ProtocolError => pb::StatusReason::ProtocolError,
    }) as i32
}
