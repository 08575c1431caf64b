//! One mailbox's task: poll, report, wait (IDLE or the poll interval, or a backoff after an
//! error), until its lease or config goes away or the fetcher stops.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deskmail_configclient::ConfigClient;
use deskmail_core::StatusReason;
use deskmail_mailconn::{ConnError, Credentials, refresh_access_token};
use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::config::FetchConfig;
use crate::imap::{ImapConn, ImapState};
use crate::poll::{PollError, PollOutcome};
use crate::pop3::Pop3State;
use crate::publish::Broker;
use crate::settings::{BoxSettings, Login, Proto};

/// What every mailbox task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub broker: Broker,
    pub client: ConfigClient,
    pub holder: String,
    pub fetch: FetchConfig,
    pub window: usize,
    /// One permit per mailbox being polled right now (`fetch.max_concurrent_mailboxes`).
    pub polls: Semaphore,
}

/// Longest IDLE before it is renewed (RFC 2177 asks for less than 30 minutes).
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);

/// Oversized mails named in the status message.
const OVERSIZED_NOTES: usize = 5;

/// Renew an access token this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Exponential backoff: `initial * 2^(failures-1)`, at most `max`.
pub(crate) fn backoff(failures: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    initial.saturating_mul(factor).min(max)
}

/// OAuth2 access tokens for one box: refreshed when missing or about to expire, rotated
/// refresh tokens stored at configd.
struct OAuthState {
    refresh: String,
    access: Option<(SecretString, Option<Instant>)>,
    /// Refresh tokens this task stored itself (configd echoes them back in the snapshot).
    stored: HashSet<String>,
}

impl OAuthState {
    /// Takes an admin's new refresh token from the snapshot (not one this task stored).
    fn offer(&mut self, token: Option<String>) {
        if let Some(t) = token
            && t != self.refresh
            && !self.stored.contains(&t)
        {
            self.refresh = t;
            self.access = None;
        }
    }
}

struct Task {
    shared: Arc<Shared>,
    settings: BoxSettings,
    oauth: Option<OAuthState>,
    reported_oversized: HashSet<String>,
    oversized_notes: Vec<String>,
    /// Status reports, sent to configd in order by [`reporter`].
    reports: mpsc::UnboundedSender<pb::ReportStatusRequest>,
}

/// Runs one mailbox until `cancel`. `previous` (the task this one replaces) ends first.
pub(crate) async fn run_mailbox(
    shared: Arc<Shared>,
    mailbox: pb::Mailbox,
    mut refresh: watch::Receiver<Option<String>>,
    cancel: CancellationToken,
    previous: Option<tokio::task::JoinHandle<()>>,
) {
    if let Some(p) = previous {
        let _ = p.await;
    }
    deskmail_telemetry::fetcher::init_mailbox(&mailbox.id);
    let settings = match BoxSettings::from_pb(&mailbox, shared.fetch.command_timeout) {
        Ok(s) => s,
        Err(p) => {
            tracing::warn!(mailbox = %mailbox.name, reason = %p.reason, error = %p.detail, "Mailbox settings cannot work; waiting for a change.");
            report(&shared, &mailbox.id, pb::MailboxState::Error, Some(p.reason), p.detail, 0).await;
            cancel.cancelled().await;
            return;
        }
    };
    let oauth = match &settings.login {
        Login::OAuth2 { oauth, .. } => Some(OAuthState {
            refresh: oauth.refresh_token.expose_secret().to_owned(),
            access: None,
            stored: HashSet::new(),
        }),
        Login::Password { .. } => None,
    };
    tracing::info!(mailbox = %settings.name, id = %settings.id, host = %settings.endpoint.host, port = settings.endpoint.port, "Polling mailbox.");
    let (reports, rx) = mpsc::unbounded_channel();
    let reporting = tokio::spawn(reporter(shared.clone(), rx));
    let mut task = Task {
        shared,
        settings,
        oauth,
        reported_oversized: HashSet::new(),
        oversized_notes: Vec::new(),
        reports,
    };
    task.run(&mut refresh, &cancel).await;
    tracing::info!(mailbox = %task.settings.name, "Stopped polling mailbox.");
    // The last reports go out before a task replacing this one starts.
    drop(task);
    let _ = reporting.await;
}

enum Next {
    Now,
    Idle,
    Wait(Duration),
}

impl Task {
    async fn run(&mut self, refresh: &mut watch::Receiver<Option<String>>, cancel: &CancellationToken) {
        let mut failures: u32 = 0;
        let mut imap: Option<ImapConn> = None;
        let mut imap_state = ImapState::default();
        let mut pop_state = Pop3State::default();
        while !cancel.is_cancelled() {
            if refresh.has_changed().unwrap_or(false) {
                let token = refresh.borrow_and_update().clone();
                if let Some(o) = self.oauth.as_mut() {
                    o.offer(token);
                }
            }
            let shared = self.shared.clone();
            let permit = tokio::select! {
                p = shared.polls.acquire() => p,
                _ = cancel.cancelled() => break,
            };
            let span = tracing::info_span!(
                "poll",
                mailbox_id = %self.settings.id,
                mailbox = %self.settings.name,
                protocol = match self.settings.proto { Proto::Imap => "imap", Proto::Pop3 => "pop3" },
            );
            let started = Instant::now();
            let result = match self.settings.proto {
                Proto::Imap => {
                    self.poll_imap(&mut imap, &mut imap_state, cancel).instrument(span.clone()).await
                }
                Proto::Pop3 => self.poll_pop3(&mut pop_state, cancel).instrument(span.clone()).await,
            };
            deskmail_telemetry::fetcher::poll_duration(&self.settings.id, started.elapsed());
            drop(permit);
            let next = match result {
                Ok(outcome) => {
                    failures = 0;
                    self.succeeded(&outcome).instrument(span.clone()).await;
                    if outcome.more {
                        Next::Now
                    } else if imap.as_ref().is_some_and(ImapConn::has_idle) {
                        Next::Idle
                    } else {
                        Next::Wait(self.settings.poll_interval)
                    }
                }
                Err(e) => {
                    failures += 1;
                    if let Some(conn) = imap.take() {
                        drop(conn);
                    }
                    imap_state.session_lost();
                    let delay =
                        backoff(failures, self.shared.fetch.retry_initial, self.shared.fetch.retry_max);
                    self.failed(&e, failures, delay).instrument(span.clone()).await;
                    Next::Wait(delay)
                }
            };
            match next {
                Next::Now => {}
                Next::Wait(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = cancel.cancelled() => {}
                    }
                }
                Next::Idle => {
                    if let Some(conn) = imap.take() {
                        match conn.idle(self.settings.poll_interval.max(IDLE_RENEW), cancel).await {
                            Ok((conn, _woke)) => imap = Some(conn),
                            Err(e) => {
                                imap_state.session_lost();
                                tracing::debug!(mailbox = %self.settings.name, error = %e, "IDLE ended; reconnecting.");
                                // A server that keeps breaking IDLE must not make us spin.
                                tokio::select! {
                                    _ = tokio::time::sleep(self.shared.fetch.retry_initial) => {}
                                    _ = cancel.cancelled() => {}
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(conn) = imap.take() {
            conn.logout().await;
        }
    }

    async fn poll_imap(
        &mut self,
        imap: &mut Option<ImapConn>,
        state: &mut ImapState,
        cancel: &CancellationToken,
    ) -> Result<PollOutcome, PollError> {
        if imap.is_none() {
            *imap = Some(self.login(|s, c| Box::pin(async move { ImapConn::open(s, c).await })).await?);
        }
        let Some(conn) = imap.as_mut() else { return Ok(PollOutcome::default()) };
        let cap = self.shared.fetch.max_messages_per_poll as usize;
        crate::imap::poll(conn, &self.settings, state, &self.shared.broker, self.shared.window, cap, cancel)
            .await
    }

    async fn poll_pop3(
        &mut self,
        state: &mut Pop3State,
        cancel: &CancellationToken,
    ) -> Result<PollOutcome, PollError> {
        let pop = self.login(|s, c| Box::pin(async move { crate::pop3::open(s, c).await })).await?;
        let cap = self.shared.fetch.max_messages_per_poll as usize;
        crate::pop3::poll(pop, &self.settings, state, &self.shared.broker, self.shared.window, cap, cancel)
            .await
    }

    /// Logs in with the box's credentials; an OAuth2 box whose access token is refused gets
    /// a fresh one and tries once more.
    async fn login<'s, T>(
        &'s mut self,
        open: impl for<'a> Fn(
            &'a BoxSettings,
            &'a Credentials,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<T, ConnError>> + Send + 'a>>,
    ) -> Result<T, ConnError> {
        let creds = self.credentials(false).await?;
        match open(&self.settings, &creds).await {
            Err(ConnError::Auth { transient: false, .. }) if self.oauth.is_some() => {
                tracing::info!(mailbox = %self.settings.name, "Access token refused; refreshing it.");
                let creds = self.credentials(true).await?;
                open(&self.settings, &creds).await
            }
            other => other,
        }
    }

    async fn credentials(&mut self, force: bool) -> Result<Credentials, ConnError> {
        let (username, oauth_settings) = match &self.settings.login {
            Login::Password { username, password } => {
                return Ok(Credentials::Password { username: username.clone(), password: password.clone() });
            }
            Login::OAuth2 { username, oauth } => (username.clone(), oauth.clone()),
        };
        let Some(state) = self.oauth.as_mut() else {
            return Err(ConnError::Settings {
                reason: StatusReason::TokenExpired,
                detail: "no OAuth2 state".into(),
            });
        };
        let fresh = state.access.as_ref().is_some_and(|(_, exp)| exp.is_none_or(|e| e > Instant::now()));
        if !force
            && fresh
            && let Some((token, _)) = &state.access
        {
            return Ok(Credentials::OAuth2Token { username, access_token: token.clone() });
        }
        let mut oauth = oauth_settings;
        oauth.refresh_token = SecretString::from(state.refresh.clone());
        let token = refresh_access_token(&oauth, self.shared.fetch.command_timeout).await?;
        if let Some(rotated) = &token.new_refresh_token {
            let rotated = rotated.expose_secret().to_owned();
            state.stored.insert(rotated.clone());
            state.refresh = rotated.clone();
            match self
                .shared
                .client
                .store_refresh_token(&self.settings.id, pb::Direction::Inbound, &rotated)
                .await
            {
                Ok(()) => {
                    tracing::info!(mailbox = %self.settings.name, "Stored the rotated OAuth2 refresh token.")
                }
                Err(e) => {
                    tracing::warn!(mailbox = %self.settings.name, error = %e, "Could not store the rotated OAuth2 refresh token at configd; keeping it in memory.")
                }
            }
        }
        // Renewed a little before it runs out: a minute, or a quarter of a short lifetime.
        let expires = token.expires_in.map(|d| Instant::now() + d.saturating_sub(TOKEN_MARGIN.min(d / 4)));
        state.access = Some((token.access_token.clone(), expires));
        Ok(Credentials::OAuth2Token { username, access_token: token.access_token })
    }

    async fn succeeded(&mut self, outcome: &PollOutcome) {
        let mut message = format!("fetched {} mail(s)", outcome.fetched);
        for o in &outcome.oversized {
            let key = o.source.to_string();
            if self.reported_oversized.insert(key.clone()) {
                deskmail_telemetry::fetcher::mail_oversized(&self.settings.id);
                tracing::warn!(mailbox = %self.settings.name, source_id = %key, size = o.size, limit = o.limit, "Mail over the size limit left on the server.");
                self.shared
                    .broker
                    .event(serde_json::json!({
                        "event": "mail.oversized",
                        "mailbox_id": self.settings.id,
                        "mailbox_name": self.settings.name,
                        "source_id": key,
                        "size": o.size,
                        "max_message_size": o.limit,
                        "moved_to": o.moved_to,
                        "time": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                    }))
                    .await;
            }
        }
        for o in &outcome.oversized {
            let note = o.describe();
            if !self.oversized_notes.contains(&note) {
                self.oversized_notes.push(note);
            }
        }
        // The status keeps naming the oversized mails this task met (the last few), not only
        // in the poll that met them: an admin must act on them.
        let len = self.oversized_notes.len();
        if len > OVERSIZED_NOTES {
            self.oversized_notes.drain(..len - OVERSIZED_NOTES);
        }
        if !self.oversized_notes.is_empty() {
            message.push_str(&format!(
                "; {} over the size limit: {}",
                self.reported_oversized.len(),
                self.oversized_notes.join("; ")
            ));
        }
        if outcome.fetched > 0 {
            tracing::debug!(mailbox = %self.settings.name, fetched = outcome.fetched, "Poll done.");
        }
        self.report(pb::MailboxState::Active, None, message, outcome.fetched);
    }

    async fn failed(&mut self, e: &PollError, failures: u32, delay: Duration) {
        let reason = e.reason();
        if matches!(e, PollError::Conn(ConnError::Token { expired: true, .. })) {
            // An admin must authorize again; the token from the snapshot is retried when it
            // changes, and in the meantime only at the backoff's pace.
            if let Some(o) = self.oauth.as_mut() {
                o.access = None;
            }
        }
        deskmail_telemetry::fetcher::poll_error(&self.settings.id, reason);
        tracing::warn!(mailbox = %self.settings.name, reason = %reason, failures, retry_in = ?delay, error = %e, "Poll failed.");
        self.report(pb::MailboxState::Error, Some(reason), e.message(), 0);
    }

    /// Queues a status report for [`reporter`]: the poll does not wait for configd.
    fn report(&self, state: pb::MailboxState, reason: Option<StatusReason>, message: String, messages: u64) {
        let request = status_request(&self.shared, &self.settings.id, state, reason, message, messages);
        // The reporter lives as long as the task; a send can only fail after it ended.
        let _ = self.reports.send(request);
    }
}

/// Sends one box's status reports to configd in order. Reports that piled up while configd
/// was slow or away are merged when they say the same (state and reason; the mail counts
/// are added), so a backlog stays small and no count is lost.
async fn reporter(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<pb::ReportStatusRequest>) {
    let mut next = rx.recv().await;
    while let Some(mut request) = next.take() {
        while let Ok(more) = rx.try_recv() {
            if more.state == request.state && more.reason == request.reason {
                let messages = request.messages.saturating_add(more.messages);
                request = pb::ReportStatusRequest { messages, ..more };
            } else {
                next = Some(more);
                break;
            }
        }
        send_report(&shared, request).await;
        if next.is_none() {
            next = rx.recv().await;
        }
    }
}

fn reason_pb(r: StatusReason) -> pb::StatusReason {
    match r {
        StatusReason::AuthFailed => pb::StatusReason::AuthFailed,
        StatusReason::ConnectFailed => pb::StatusReason::ConnectFailed,
        StatusReason::TlsFailed => pb::StatusReason::TlsFailed,
        StatusReason::DnsFailed => pb::StatusReason::DnsFailed,
        StatusReason::Timeout => pb::StatusReason::Timeout,
        StatusReason::TokenExpired => pb::StatusReason::TokenExpired,
        StatusReason::MailboxNotFound => pb::StatusReason::MailboxNotFound,
        StatusReason::ProtocolError => pb::StatusReason::ProtocolError,
    }
}

/// Reports to configd and waits for it; a configd that is away costs a log line, never the poll.
pub(crate) async fn report(
    shared: &Shared,
    mailbox_id: &str,
    state: pb::MailboxState,
    reason: Option<StatusReason>,
    message: String,
    messages: u64,
) {
    send_report(shared, status_request(shared, mailbox_id, state, reason, message, messages)).await;
}

fn status_request(
    shared: &Shared,
    mailbox_id: &str,
    state: pb::MailboxState,
    reason: Option<StatusReason>,
    message: String,
    messages: u64,
) -> pb::ReportStatusRequest {
    pb::ReportStatusRequest {
        mailbox_id: mailbox_id.to_owned(),
        direction: pb::Direction::Inbound as i32,
        state: state as i32,
        reason: reason.map(reason_pb).unwrap_or(pb::StatusReason::Unspecified) as i32,
        message,
        messages,
        reporter: shared.holder.clone(),
    }
}

async fn send_report(shared: &Shared, request: pb::ReportStatusRequest) {
    let mailbox_id = request.mailbox_id.clone();
    let mailbox_id = mailbox_id.as_str();
    match tokio::time::timeout(Duration::from_secs(5), shared.client.report_status(request)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(mailbox_id, error = %e, "Status report to configd failed."),
        Err(_) => tracing::debug!(mailbox_id, "Status report to configd timed out."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(300));
        let table = [(1, 1), (2, 2), (3, 4), (4, 8), (9, 256), (10, 300), (100, 300)];
        for (failures, secs) in table {
            assert_eq!(backoff(failures, i, m), Duration::from_secs(secs), "{failures}");
        }
    }

    #[test]
    fn admin_token_replaces_ours_but_our_echo_does_not() {
        let mut o = OAuthState { refresh: "r2".into(), access: None, stored: ["r2".to_owned()].into() };
        o.offer(Some("r1".into()));
        assert_eq!(o.refresh, "r1", "an admin's new token is taken");
        o.refresh = "r3".into();
        o.stored.insert("r3".into());
        o.offer(Some("r2".into()));
        assert_eq!(o.refresh, "r3", "a stale echo of a token we stored is ignored");
    }
}
