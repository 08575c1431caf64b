//! The services daemons use: ConfigWatch, StatusService and LeaseService.

use std::pin::Pin;

use deskmail_proto::v1 as pb;
use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use super::crud::{find_row, write};
use super::errors::{bad_request, store_error};
use super::resources::Resources;
use crate::auth::{Role, require_admin, role};
use crate::state::{now_micros, timestamp};
use crate::store::Op;
use crate::store::{StatusRecord, entity::status};

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::ConfigSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl pb::config_watch_server::ConfigWatch for Resources {
    type WatchStream = SnapshotStream;

    async fn watch(&self, r: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let daemon = role(&r)? == Role::Daemon;
        let known = r.get_ref().known_revision;
        let stream = WatchStream::new(self.state.snapshots.subscribe()).filter_map(move |snap| {
            (snap.revision > known || known == 0)
                .then(|| Ok(if daemon { snap.daemon.clone() } else { snap.admin.clone() }))
        });
        let stream = futures::StreamExt::take_until(stream, self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_snapshot(
        &self,
        r: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::ConfigSnapshot>, Status> {
        let daemon = role(&r)? == Role::Daemon;
        let snap = self.state.snapshots.borrow().clone();
        Ok(Response::new(if daemon { snap.daemon.clone() } else { snap.admin.clone() }))
    }
}

#[tonic::async_trait]
impl pb::status_service_server::StatusService for Resources {
    async fn report_status(
        &self,
        r: Request<pb::ReportStatusRequest>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        let req = r.into_inner();
        let mut violations = Vec::new();
        let state = pb::MailboxState::try_from(req.state).unwrap_or_default();
        if state == pb::MailboxState::Unspecified {
            violations.push(("state".to_owned(), "must be ACTIVE, WAITING or ERROR".to_owned()));
        }
        if state == pb::MailboxState::Error && req.reason == pb::StatusReason::Unspecified as i32 {
            violations.push(("reason".to_owned(), "is required with state ERROR".to_owned()));
        }
        if pb::Direction::try_from(req.direction).unwrap_or_default() == pb::Direction::Unspecified {
            violations.push(("direction".to_owned(), "must be INBOUND or OUTBOUND".to_owned()));
        }
        if !violations.is_empty() {
            return Err(bad_request(violations));
        }
        let row = find_row::<pb::Mailbox>(&self.state, &req.mailbox_id).await?;
        self.state
            .store
            .report_status(StatusRecord {
                mailbox_id: row.id,
                direction: req.direction,
                state: req.state,
                reason: req.reason,
                // A server's words may hold NUL, which PostgreSQL text refuses.
                message: req.message.chars().filter(|c| *c != '\0').take(2000).collect(),
                messages: req.messages,
                reporter: req.reporter.chars().filter(|c| *c != '\0').take(200).collect(),
                success: state == pb::MailboxState::Active,
                now_micros: now_micros(),
            })
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ReportStatusResponse {}))
    }

    async fn get_status(
        &self,
        r: Request<pb::GetRequest>,
    ) -> Result<Response<pb::MailboxStatusView>, Status> {
        require_admin(&r)?;
        let row = find_row::<pb::Mailbox>(&self.state, &r.get_ref().id).await?;
        let rows = self.state.store.statuses_of(&row.id).await.map_err(store_error)?;
        let view = rows
            .into_iter()
            .next()
            .map(|s| view(s, &row.name))
            .unwrap_or_else(|| waiting(&row.id, &row.name));
        Ok(Response::new(view))
    }

    async fn list_status(
        &self,
        r: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListStatusResponse>, Status> {
        require_admin(&r)?;
        let snap = self.state.snapshots.borrow().clone();
        let rows = self.state.store.statuses().await.map_err(store_error)?;
        let mut statuses = Vec::new();
        for m in &snap.admin.mailboxes {
            let mine: Vec<_> = rows.iter().filter(|s| s.mailbox_id == m.id).cloned().collect();
            if mine.is_empty() {
                statuses.push(waiting(&m.id, &m.name));
            }
            statuses.extend(mine.into_iter().map(|s| view(s, &m.name)));
        }
        let total_size = i32::try_from(statuses.len()).unwrap_or(i32::MAX);
        Ok(Response::new(pb::ListStatusResponse { statuses, next_page_token: String::new(), total_size }))
    }

    async fn store_refresh_token(
        &self,
        r: Request<pb::StoreRefreshTokenRequest>,
    ) -> Result<Response<pb::StoreRefreshTokenResponse>, Status> {
        let req = r.into_inner();
        let path = match pb::Direction::try_from(req.direction).unwrap_or_default() {
            pb::Direction::Inbound => "inbound.oauth2.refresh_token",
            pb::Direction::Outbound => "outbound.oauth2.refresh_token",
            pb::Direction::Unspecified => {
                return Err(bad_request(vec![(
                    "direction".to_owned(),
                    "must be INBOUND or OUTBOUND".to_owned(),
                )]));
            }
        };
        if req.refresh_token.trim().is_empty() {
            return Err(bad_request(vec![("refresh_token".to_owned(), "must not be empty".to_owned())]));
        }
        let row = find_row::<pb::Mailbox>(&self.state, &req.mailbox_id).await?;
        let sealed = self
            .state
            .secrets
            .seal(&row.id, path, req.refresh_token.trim())
            .map_err(|e| Status::internal(e.to_string()))?;
        write(&self.state, vec![Op::Put { row, secrets: vec![(path.to_owned(), Some(sealed))] }]).await?;
        Ok(Response::new(pb::StoreRefreshTokenResponse {}))
    }
}

fn view(s: status::Model, name: &str) -> pb::MailboxStatusView {
    pb::MailboxStatusView {
        mailbox_id: s.mailbox_id.clone(),
        mailbox_name: name.to_owned(),
        direction: s.direction,
        status: Some(pb::MailboxStatus {
            mailbox_id: s.mailbox_id,
            state: s.state,
            reason: s.reason,
            message: s.message,
            last_success: timestamp(s.last_success),
            last_error: timestamp(s.last_error),
            messages_total: u64::try_from(s.messages_total).unwrap_or(0),
            consecutive_errors: u32::try_from(s.consecutive_errors).unwrap_or(0),
        }),
        reporter: s.reporter,
        update_time: timestamp(s.updated_at),
    }
}

fn waiting(id: &str, name: &str) -> pb::MailboxStatusView {
    pb::MailboxStatusView {
        mailbox_id: id.to_owned(),
        mailbox_name: name.to_owned(),
        status: Some(pb::MailboxStatus {
            mailbox_id: id.to_owned(),
            state: pb::MailboxState::Waiting as i32,
            message: "not tried yet".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl pb::lease_service_server::LeaseService for Resources {
    async fn acquire_leases(
        &self,
        r: Request<pb::AcquireLeasesRequest>,
    ) -> Result<Response<pb::AcquireLeasesResponse>, Status> {
        let req = r.into_inner();
        if req.holder.trim().is_empty() {
            return Err(bad_request(vec![("holder".into(), "is required".into())]));
        }
        holder_rule(&req.holder)?;
        let ttl = if req.ttl_seconds == 0 { 30 } else { req.ttl_seconds };
        if !(5..=3600).contains(&ttl) {
            return Err(bad_request(vec![(
                "ttl_seconds".into(),
                format!("{ttl} is not between 5 and 3600"),
            )]));
        }
        let snap = self.state.snapshots.borrow().clone();
        let eligible: Vec<String> = snap
            .admin
            .mailboxes
            .iter()
            .filter(|m| m.enabled.unwrap_or(true) && m.inbound.is_some())
            .map(|m| m.id.clone())
            .collect();
        let grants = self
            .state
            .store
            .acquire_leases(
                &req.holder,
                &eligible,
                i64::from(ttl) * 1_000_000,
                usize::try_from(req.max).unwrap_or(usize::MAX),
                now_micros(),
            )
            .await
            .map_err(store_error)?;
        let leases = grants
            .into_iter()
            .map(|g| pb::Lease { mailbox_id: g.mailbox_id, expire_time: timestamp(g.expires_at) })
            .collect();
        Ok(Response::new(pb::AcquireLeasesResponse { leases }))
    }

    async fn release_leases(
        &self,
        r: Request<pb::ReleaseLeasesRequest>,
    ) -> Result<Response<pb::ReleaseLeasesResponse>, Status> {
        let req = r.into_inner();
        holder_rule(&req.holder)?;
        let bad: Vec<_> = req
            .mailbox_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| id.contains('\0'))
            .map(|(i, _)| (format!("mailbox_ids[{i}]"), "contains NUL".to_owned()))
            .collect();
        if !bad.is_empty() {
            return Err(bad_request(bad));
        }
        self.state.store.release_leases(&req.holder, &req.mailbox_ids).await.map_err(store_error)?;
        Ok(Response::new(pb::ReleaseLeasesResponse {}))
    }
}

/// A holder id is stored as text: at most 200 characters, no control characters (NUL is
/// refused by PostgreSQL).
fn holder_rule(holder: &str) -> Result<(), Status> {
    if holder.chars().count() > 200 {
        return Err(bad_request(vec![("holder".into(), "is longer than 200 characters".into())]));
    }
    if holder.chars().any(char::is_control) {
        return Err(bad_request(vec![("holder".into(), "contains control characters".into())]));
    }
    Ok(())
}
