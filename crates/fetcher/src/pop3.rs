//! One POP3 poll: connect, log in, UIDL and LIST, RETR each new mail (size-capped), publish,
//! and after the broker's confirm DELE it (delete mode; committed by QUIT) or remember its
//! UIDL (keep mode, in memory: after a restart the router's dedup on the source id drops what
//! comes again).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use deskmail_core::SourceId;
use deskmail_mailconn::pop3::classify_error;
use deskmail_mailconn::{ConnError, Credentials};
use deskmail_pop3::{Pop3Client, Pop3Error};
use deskmail_runtime::CancellationToken;

use crate::poll::{Oversized, PollError, PollOutcome};
use crate::publish::{Broker, Outbox};
use crate::settings::BoxSettings;

/// What a POP3 box remembers between polls.
#[derive(Debug, Default)]
pub(crate) struct Pop3State {
    /// Keep mode: UIDLs published and confirmed.
    published: HashSet<String>,
}

/// Connects and logs in.
pub(crate) async fn open(settings: &BoxSettings, creds: &Credentials) -> Result<Pop3Client, ConnError> {
    let mut pop = deskmail_mailconn::pop3::connect(&settings.endpoint).await?;
    deskmail_mailconn::pop3::login(&mut pop, creds, &settings.endpoint.host).await?;
    Ok(pop)
}

/// One poll over a logged-in session; ends it with QUIT (which commits the DELEs).
pub(crate) async fn poll(
    mut pop: Pop3Client,
    settings: &BoxSettings,
    state: &mut Pop3State,
    broker: &Broker,
    window: usize,
    cap: usize,
    cancel: &CancellationToken,
) -> Result<PollOutcome, PollError> {
    let host = settings.endpoint.host.as_str();
    let err = |e: Pop3Error| classify_error(e, host);
    let uidl = pop.uidl().await.map_err(err)?;
    let sizes: HashMap<u32, u64> =
        pop.list().await.map_err(err)?.into_iter().map(|l| (l.id, l.size)).collect();
    if settings.keep {
        let present: HashSet<&str> = uidl.iter().map(|u| u.uid.as_str()).collect();
        state.published.retain(|u| present.contains(u.as_str()));
    }
    let mut outcome = PollOutcome::default();
    let mut todo: Vec<(u32, String, u64)> = Vec::new();
    for entry in uidl {
        if settings.keep && state.published.contains(&entry.uid) {
            continue;
        }
        let size = sizes.get(&entry.id).copied().unwrap_or(0);
        if let Some(limit) = settings.max_size
            && size > limit
        {
            outcome.oversized.push(Oversized {
                source: SourceId::pop3(&settings.id, &entry.uid),
                size,
                limit,
                moved_to: None,
            });
            continue;
        }
        if todo.len() >= cap {
            outcome.more = true;
            break;
        }
        todo.push((entry.id, entry.uid, size));
    }
    let mut outbox: Outbox<'_, (u32, String)> = Outbox::new(broker, &settings.id, window);
    let mut failed: Option<ConnError> = None;
    for (id, uid, size) in todo {
        if cancel.is_cancelled() {
            break;
        }
        let room = outbox.reserve(size).await;
        let fetched = match settings.max_size {
            Some(limit) => pop.retr_max(id, limit).await,
            None => pop.retr(id).await,
        };
        let body = match fetched {
            Ok(body) => body,
            Err(Pop3Error::TooLarge { size, limit, .. }) => {
                // The server understated the size; the session cannot go on.
                outcome.oversized.push(Oversized {
                    source: SourceId::pop3(&settings.id, &uid),
                    size,
                    limit,
                    moved_to: None,
                });
                failed = Some(ConnError::Protocol {
                    protocol: deskmail_mailconn::Protocol::Pop3,
                    during: "RETR",
                    detail: format!("message {id} is larger than its LIST size said"),
                    transient: true,
                    source: None,
                });
                break;
            }
            Err(e) => {
                failed = Some(err(e));
                break;
            }
        };
        let source = SourceId::pop3(&settings.id, &uid);
        outbox.send_mail((id, uid), room, &source, Bytes::from(body)).await;
    }
    outbox.settle_all().await;
    let confirmed = outbox.take_confirmed();
    let failure = outbox.take_failure();
    outcome.fetched = confirmed.len() as u64;
    if settings.keep {
        state.published.extend(confirmed.iter().map(|(_, uid)| uid.clone()));
    }
    if let Some(e) = failed {
        // Nothing is deleted without QUIT: the confirmed mails come again next time.
        return Err(PollError::Conn(e));
    }
    if !settings.keep {
        for (id, _) in &confirmed {
            pop.dele(*id).await.map_err(err)?;
        }
    }
    pop.quit().await.map_err(err)?;
    if let Some(e) = failure {
        return Err(PollError::Broker(e));
    }
    Ok(outcome)
}
