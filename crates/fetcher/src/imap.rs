//! One IMAP poll: SELECT (UIDVALIDITY), UID SEARCH, sizes first (RFC822.SIZE), oversized mails
//! moved to [`OVERSIZED_FOLDER`], the rest fetched by UID in batches (big ones in chunks, so a
//! 25 MB mail never sits in the IMAP buffer whole), published, and only then flagged `\Seen`
//! (keep mode) or `\Deleted` + expunged (delete mode). Plus IDLE between polls.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use deskmail_core::SourceId;
use deskmail_mailconn::imap::{ImapSession, classify_error, classify_open_error};
use deskmail_mailconn::{ConnError, Credentials, Protocol};
use deskmail_runtime::CancellationToken;
use futures::StreamExt;

use crate::poll::{Oversized, PollError, PollOutcome};
use crate::publish::{Broker, Outbox};
use crate::settings::BoxSettings;

/// Where mails over the box's size limit are moved (created when missing).
pub const OVERSIZED_FOLDER: &str = "deskmail-oversized";

/// Mails above this are fetched in chunks of [`CHUNK`] bytes.
const LARGE: u64 = 4 * 1024 * 1024;
const CHUNK: u64 = 2 * 1024 * 1024;
/// Most mails in one UID FETCH.
const BATCH_COUNT: usize = 256;
/// Most bytes in one UID FETCH of small mails.
const BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Confirmed mails are flagged (or deleted) once this many have gathered.
const FLAG_EVERY: usize = 256;

/// A logged-in session and what the server offers.
pub(crate) struct ImapConn {
    session: ImapSession,
    idle: bool,
    uidplus: bool,
    moves: bool,
    oversized_folder_ready: bool,
    timeout: Duration,
}

/// What an IMAP box remembers between polls (keep mode): the folder's UIDVALIDITY and the
/// highest UID below which every mail was confirmed.
#[derive(Debug, Default)]
pub(crate) struct ImapState {
    validity: Option<u32>,
    last_uid: u32,
    /// UIDs the last `UID SEARCH` found beyond the per-poll cap, oldest first: the next poll
    /// (at once, on the same session, the folder still selected) takes them without a new
    /// SELECT and SEARCH. Cleared when the session is lost.
    pending: std::collections::VecDeque<u32>,
    /// Publishes of the previous (capped) poll still waiting for their confirms.
    carried: Option<crate::publish::Carried<u32>>,
}

impl ImapState {
    /// Forgets what belongs to a session (the pending UIDs): called when it is lost.
    pub(crate) fn session_lost(&mut self) {
        self.pending.clear();
        // Mails published but not flagged stay on the server and come again.
        self.carried = None;
    }
}

async fn bounded<T>(
    timeout: Duration,
    during: &'static str,
    fut: impl Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::time::timeout(timeout, fut).await.unwrap_or(Err(ConnError::Timeout {
        protocol: Protocol::Imap,
        during,
        after: timeout,
    }))
}

impl ImapConn {
    /// Connects and logs in.
    pub(crate) async fn open(settings: &BoxSettings, creds: &Credentials) -> Result<Self, ConnError> {
        let timeout = settings.endpoint.timeout;
        let client = deskmail_mailconn::imap::connect(&settings.endpoint).await?;
        let mut session = deskmail_mailconn::imap::login(client, creds).await?;
        let caps = bounded(timeout, "CAPABILITY", async {
            session.capabilities().await.map_err(|e| classify_error(e, "CAPABILITY"))
        })
        .await?;
        Ok(Self {
            idle: caps.has_str("IDLE"),
            uidplus: caps.has_str("UIDPLUS"),
            moves: caps.has_str("MOVE"),
            session,
            oversized_folder_ready: false,
            timeout,
        })
    }

    /// Whether the server offers IDLE.
    pub(crate) fn has_idle(&self) -> bool {
        self.idle
    }

    /// LOGOUT, best effort.
    pub(crate) async fn logout(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.session.logout()).await;
    }

    /// IDLE until the server reports a change (`true`), `max` passes, or `cancel` fires.
    pub(crate) async fn idle(
        self,
        max: Duration,
        cancel: &CancellationToken,
    ) -> Result<(Self, bool), ConnError> {
        // A mail that arrived during the poll was announced (`* N EXISTS`) in the answer to
        // one of its commands; IDLE would not announce it again. Poll at once instead.
        let mut arrived = false;
        while let Ok(r) = self.session.unsolicited_responses.try_recv() {
            arrived |= matches!(r, UnsolicitedResponse::Exists(_));
        }
        if arrived {
            return Ok((self, true));
        }
        let Self { session, idle, uidplus, moves, oversized_folder_ready, timeout } = self;
        let mut handle = session.idle();
        bounded(timeout, "IDLE", async { handle.init().await.map_err(|e| classify_error(e, "IDLE")) })
            .await?;
        let woke = {
            let (wait, stop) = handle.wait_with_timeout(max);
            let mut stop = Some(stop);
            let deadline = tokio::time::sleep(max);
            tokio::pin!(wait, deadline);
            loop {
                tokio::select! {
                    r = &mut wait => break r,
                    _ = cancel.cancelled(), if stop.is_some() => stop = None,
                    _ = &mut deadline, if stop.is_some() => stop = None,
                }
            }
        };
        let woke =
            matches!(woke.map_err(|e| classify_error(e, "IDLE"))?, async_imap_idle::IdleResponse::NewData(_));
        let session =
            bounded(timeout, "DONE", async { handle.done().await.map_err(|e| classify_error(e, "DONE")) })
                .await?;
        Ok((Self { session, idle, uidplus, moves, oversized_folder_ready, timeout }, woke))
    }
}

use deskmail_mailconn::async_imap::extensions::idle as async_imap_idle;
use deskmail_mailconn::async_imap::types::UnsolicitedResponse;

/// `1:5,7,9:12` for sorted, distinct UIDs.
pub(crate) fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Groups UIDs (in order) into fetch batches: small mails together, a large one alone.
pub(crate) fn batches(uids: &[(u32, u64)], max_bytes: u64) -> Vec<Vec<(u32, u64)>> {
    let limit = BATCH_BYTES.min(max_bytes / 4).max(1);
    let mut out: Vec<Vec<(u32, u64)>> = Vec::new();
    let mut cur: Vec<(u32, u64)> = Vec::new();
    let mut cur_bytes = 0;
    for &(uid, size) in uids {
        if size > LARGE.min(limit) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                cur_bytes = 0;
            }
            out.push(vec![(uid, size)]);
            continue;
        }
        if !cur.is_empty() && (cur.len() >= BATCH_COUNT || cur_bytes + size > limit) {
            out.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        cur.push((uid, size));
        cur_bytes += size;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One poll of the box's folder.
pub(crate) async fn poll(
    conn: &mut ImapConn,
    settings: &BoxSettings,
    state: &mut ImapState,
    broker: &Broker,
    window: usize,
    cap: usize,
    cancel: &CancellationToken,
) -> Result<PollOutcome, PollError> {
    let t = conn.timeout;
    let started = std::time::Instant::now();
    let mut outcome = PollOutcome::default();
    let session = &mut conn.session;
    let (validity, uids) = if state.pending.is_empty() {
        let Some(found) = select_and_search(session, settings, state, t).await? else {
            return Ok(outcome);
        };
        state.pending = found.into();
        (state.validity.unwrap_or(0), take_pending(state, cap))
    } else {
        // The previous poll stopped at the cap: go on with what its SEARCH found.
        (state.validity.unwrap_or(0), take_pending(state, cap))
    };
    outcome.more = !state.pending.is_empty();
    if uids.is_empty() {
        return Ok(outcome);
    }
    let searched = started.elapsed();
    let sizes = fetch_sizes(session, &uids, t).await?;
    let mut wanted = Vec::with_capacity(uids.len());
    let mut too_big = Vec::new();
    for uid in &uids {
        let Some(&size) = sizes.get(uid) else { continue };
        match settings.max_size {
            Some(max) if size > max => too_big.push((*uid, size)),
            _ => wanted.push((*uid, size)),
        }
    }
    for (uid, size) in too_big {
        let source = SourceId::imap(&settings.id, validity, uid);
        move_oversized(conn, uid, t).await?;
        outcome.oversized.push(Oversized {
            source,
            size,
            limit: settings.max_size.unwrap_or(0),
            moved_to: Some(OVERSIZED_FOLDER),
        });
    }
    let mut outbox: Outbox<'_, u32> = Outbox::resume(broker, &settings.id, window, state.carried.take());
    let mut flagged = Vec::new();
    let sized = started.elapsed();
    let result =
        fetch_and_publish(conn, settings, validity, &wanted, &mut outbox, &mut flagged, cancel).await;
    let fetched = started.elapsed();
    // A capped poll is followed at once by the next one on this session: the confirms still
    // due are taken (and their mails flagged) there, so the pipeline does not drain here.
    let carry = outcome.more && result.is_ok() && !cancel.is_cancelled();
    if carry {
        outbox.settle_ready();
    } else {
        outbox.settle_all().await;
    }
    let settled = started.elapsed();
    let confirmed = outbox.take_confirmed();
    outcome.fetched = (flagged.len() + confirmed.len()) as u64;
    let failure = outbox.take_failure();
    if let Err(e) = result {
        // The session is gone: what was confirmed but not flagged stays on the server and
        // comes again (the router's dedup on the source id makes that harmless).
        return Err(PollError::Conn(e));
    }
    flag_now(conn, settings, &confirmed).await?;
    if !settings.keep {
        // Mid-poll, confirmed mails were only flagged \Deleted: one expunge for the poll.
        let mut done: Vec<u32> = flagged.iter().chain(&confirmed).copied().collect();
        done.sort_unstable();
        expunge(conn, &done, t).await?;
    }
    if let Some(e) = failure {
        return Err(PollError::Broker(e));
    }
    if carry {
        state.carried = Some(outbox.carry());
    }
    if let Some(max) = flagged.iter().chain(&confirmed).max() {
        state.last_uid = state.last_uid.max(*max);
    }
    tracing::debug!(
        mailbox = %settings.name,
        mails = outcome.fetched,
        search_ms = searched.as_millis() as u64,
        sizes_ms = (sized - searched).as_millis() as u64,
        fetch_publish_ms = (fetched - sized).as_millis() as u64,
        last_confirms_ms = (settled - fetched).as_millis() as u64,
        last_flag_ms = (started.elapsed() - settled).as_millis() as u64,
        "IMAP poll phases."
    );
    Ok(outcome)
}

/// SELECT (UIDVALIDITY) and `UID SEARCH` of the new mails, sorted; `None` when the folder is empty.
async fn select_and_search(
    session: &mut ImapSession,
    settings: &BoxSettings,
    state: &mut ImapState,
    t: Duration,
) -> Result<Option<Vec<u32>>, PollError> {
    let folder = settings.folder.as_str();
    let mailbox = bounded(t, "SELECT", async {
        session.select(folder).await.map_err(|e| classify_open_error(e, folder))
    })
    .await?;
    let validity = mailbox.uid_validity.unwrap_or(0);
    if state.validity != Some(validity) {
        if state.validity.is_some() {
            tracing::warn!(mailbox = %settings.name, folder, validity, "UIDVALIDITY changed; every unseen mail counts as new.");
        }
        *state = ImapState { validity: Some(validity), ..ImapState::default() };
    }
    if mailbox.exists == 0 {
        return Ok(None);
    }
    // Delete mode takes \Deleted mails too: a crash between STORE and EXPUNGE leaves confirmed
    // mails flagged; they come again (dedup makes that harmless) and are expunged this time.
    let query = if settings.keep { "UNSEEN" } else { "ALL" };
    let found = bounded(t, "UID SEARCH", async {
        session.uid_search(query).await.map_err(|e| classify_error(e, "UID SEARCH"))
    })
    .await?;
    let mut uids: Vec<u32> = found.into_iter().filter(|u| !settings.keep || *u > state.last_uid).collect();
    uids.sort_unstable();
    Ok(Some(uids))
}

/// The next `cap` pending UIDs.
fn take_pending(state: &mut ImapState, cap: usize) -> Vec<u32> {
    let n = cap.min(state.pending.len());
    state.pending.drain(..n).collect()
}

async fn fetch_sizes(
    session: &mut ImapSession,
    uids: &[u32],
    t: Duration,
) -> Result<HashMap<u32, u64>, ConnError> {
    bounded(t, "UID FETCH RFC822.SIZE", async {
        let mut sizes = HashMap::with_capacity(uids.len());
        let mut stream = session
            .uid_fetch(uid_set(uids), "(UID RFC822.SIZE)")
            .await
            .map_err(|e| classify_error(e, "UID FETCH"))?;
        while let Some(f) = stream.next().await {
            let f = f.map_err(|e| classify_error(e, "UID FETCH"))?;
            if let (Some(uid), Some(size)) = (f.uid, f.size) {
                sizes.insert(uid, u64::from(size));
            }
        }
        Ok(sizes)
    })
    .await
}

/// Fetches the wanted mails batch by batch and publishes each; confirmed ones are flagged
/// every [`FLAG_EVERY`] so a crash re-publishes little.
async fn fetch_and_publish(
    conn: &mut ImapConn,
    settings: &BoxSettings,
    validity: u32,
    wanted: &[(u32, u64)],
    outbox: &mut Outbox<'_, u32>,
    flagged: &mut Vec<u32>,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    let t = conn.timeout;
    for batch in batches(wanted, u64::from(u32::MAX)) {
        if cancel.is_cancelled() {
            break;
        }
        let total: u64 = batch.iter().map(|(_, s)| *s).sum();
        let mut room = outbox.reserve(total).await;
        if let [(uid, size)] = batch[..]
            && size > LARGE
        {
            if let Some(body) = fetch_chunked(&mut conn.session, uid, size, t).await? {
                let source = SourceId::imap(&settings.id, validity, uid);
                let all = room.num_permits();
                if let Some(part) = room.split(all) {
                    outbox.send_mail(uid, part, &source, body).await;
                }
            }
        } else {
            let set: Vec<u32> = batch.iter().map(|(u, _)| *u).collect();
            let session = &mut conn.session;
            let mut stream = bounded(t, "UID FETCH", async {
                session
                    .uid_fetch(uid_set(&set), "(UID BODY.PEEK[])")
                    .await
                    .map_err(|e| classify_error(e, "UID FETCH"))
            })
            .await?;
            loop {
                let next = tokio::time::timeout(t, stream.next()).await.map_err(|_| ConnError::Timeout {
                    protocol: Protocol::Imap,
                    during: "UID FETCH",
                    after: t,
                })?;
                let Some(f) = next else { break };
                let f = f.map_err(|e| classify_error(e, "UID FETCH"))?;
                let (Some(uid), Some(body)) = (f.uid, f.body()) else { continue };
                if set.binary_search(&uid).is_err() {
                    continue;
                }
                let body = Bytes::copy_from_slice(body);
                drop(f);
                let Some(part) = outbox.take(&mut room, body.len() as u64) else {
                    // The server sent more than RFC822.SIZE said: publish it on the rest.
                    let part = outbox.reserve(body.len() as u64).await;
                    let source = SourceId::imap(&settings.id, validity, uid);
                    outbox.send_mail(uid, part, &source, body).await;
                    continue;
                };
                let source = SourceId::imap(&settings.id, validity, uid);
                outbox.send_mail(uid, part, &source, body).await;
            }
        }
        drop(room);
        outbox.settle_ready();
        if outbox.confirmed_len() >= FLAG_EVERY {
            let confirmed = outbox.take_confirmed();
            flag_now(conn, settings, &confirmed).await?;
            flagged.extend(confirmed);
        }
    }
    Ok(())
}

/// `UID FETCH uid (BODY.PEEK[]<offset.CHUNK>)` until the whole mail is in; `None` when the
/// mail is gone.
async fn fetch_chunked(
    session: &mut ImapSession,
    uid: u32,
    size: u64,
    t: Duration,
) -> Result<Option<Bytes>, ConnError> {
    let mut buf = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut offset: u64 = 0;
    loop {
        let query = format!("(UID BODY.PEEK[]<{offset}.{CHUNK}>)");
        let got = bounded(t, "UID FETCH", async {
            let mut stream = session
                .uid_fetch(uid.to_string(), query)
                .await
                .map_err(|e| classify_error(e, "UID FETCH"))?;
            let mut got: Option<u64> = None;
            while let Some(f) = stream.next().await {
                let f = f.map_err(|e| classify_error(e, "UID FETCH"))?;
                if f.uid == Some(uid)
                    && let Some(b) = f.body()
                {
                    buf.extend_from_slice(b);
                    got = Some(b.len() as u64);
                }
            }
            Ok(got)
        })
        .await?;
        match got {
            None if offset == 0 => return Ok(None),
            None => break,
            Some(n) => {
                offset += n;
                if n < CHUNK || offset >= size {
                    break;
                }
            }
        }
    }
    Ok(Some(buf.freeze()))
}

/// Moves one mail to [`OVERSIZED_FOLDER`] (MOVE, or COPY + \Deleted + expunge).
async fn move_oversized(conn: &mut ImapConn, uid: u32, t: Duration) -> Result<(), ConnError> {
    let session = &mut conn.session;
    if !conn.oversized_folder_ready {
        // Refused when it exists already: that is fine; a real problem shows in the MOVE.
        let _ = bounded(t, "CREATE", async {
            session.create(OVERSIZED_FOLDER).await.map_err(|e| classify_error(e, "CREATE"))
        })
        .await;
        conn.oversized_folder_ready = true;
    }
    let set = uid.to_string();
    if conn.moves {
        return bounded(t, "UID MOVE", async {
            session.uid_mv(&set, OVERSIZED_FOLDER).await.map_err(|e| classify_error(e, "UID MOVE"))
        })
        .await;
    }
    bounded(t, "UID COPY", async {
        session.uid_copy(&set, OVERSIZED_FOLDER).await.map_err(|e| classify_error(e, "UID COPY"))
    })
    .await?;
    store_and_expunge(conn, &[uid], t).await
}

async fn store(session: &mut ImapSession, set: &str, flags: &str, t: Duration) -> Result<(), ConnError> {
    bounded(t, "UID STORE", async {
        let mut stream = session.uid_store(set, flags).await.map_err(|e| classify_error(e, "UID STORE"))?;
        while let Some(r) = stream.next().await {
            r.map_err(|e| classify_error(e, "UID STORE"))?;
        }
        Ok(())
    })
    .await
}

async fn store_and_expunge(conn: &mut ImapConn, uids: &[u32], t: Duration) -> Result<(), ConnError> {
    store(&mut conn.session, &uid_set(uids), "+FLAGS.SILENT (\\Deleted)", t).await?;
    expunge(conn, uids, t).await
}

/// Removes mails flagged `\Deleted`: `UID EXPUNGE` of `uids` (sorted) with UIDPLUS, else
/// `EXPUNGE`.
async fn expunge(conn: &mut ImapConn, uids: &[u32], t: Duration) -> Result<(), ConnError> {
    if uids.is_empty() {
        return Ok(());
    }
    let set = uid_set(uids);
    let session = &mut conn.session;
    let uidplus = conn.uidplus;
    bounded(t, "EXPUNGE", async {
        if uidplus {
            let s = session.uid_expunge(&set).await.map_err(|e| classify_error(e, "UID EXPUNGE"))?;
            futures::pin_mut!(s);
            while let Some(r) = s.next().await {
                r.map_err(|e| classify_error(e, "UID EXPUNGE"))?;
            }
        } else {
            let s = session.expunge().await.map_err(|e| classify_error(e, "EXPUNGE"))?;
            futures::pin_mut!(s);
            while let Some(r) = s.next().await {
                r.map_err(|e| classify_error(e, "EXPUNGE"))?;
            }
        }
        Ok(())
    })
    .await
}

/// Marks confirmed mails done on the server: `\Seen` (keep) or `\Deleted` (delete mode; the
/// poll expunges them once at its end).
async fn flag_now(conn: &mut ImapConn, settings: &BoxSettings, uids: &[u32]) -> Result<(), ConnError> {
    if uids.is_empty() {
        return Ok(());
    }
    let t = conn.timeout;
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    let flag = if settings.keep { "+FLAGS.SILENT (\\Seen)" } else { "+FLAGS.SILENT (\\Deleted)" };
    store(&mut conn.session, &uid_set(&sorted), flag, t).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets() {
        let table: [(&[u32], &str); 5] = [
            (&[1], "1"),
            (&[1, 2, 3], "1:3"),
            (&[1, 2, 3, 5, 7, 8], "1:3,5,7:8"),
            (&[4, 9], "4,9"),
            (&[], ""),
        ];
        for (uids, want) in table {
            assert_eq!(uid_set(uids), want);
        }
    }

    #[test]
    fn batching_keeps_large_mails_alone() {
        let mb = 1024 * 1024;
        let uids = [(1, 8192), (2, 8192), (3, 25 * mb), (4, 8192)];
        let b = batches(&uids, u64::from(u32::MAX));
        assert_eq!(b, vec![vec![(1, 8192), (2, 8192)], vec![(3, 25 * mb)], vec![(4, 8192)]]);
        let many: Vec<(u32, u64)> = (1..=600).map(|u| (u, 100)).collect();
        let b = batches(&many, u64::from(u32::MAX));
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![256, 256, 88]);
    }
}
