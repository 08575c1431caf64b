//! Fetch leases: which fetcher polls which inbound mailbox. The primary key on the mailbox id
//! makes two holders impossible; an expired lease is free for anyone; each holder takes at most
//! its fair share so that a second fetcher gets boxes as soon as it asks.

use std::collections::BTreeSet;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};

use super::entity::{lease, lease_holder};
use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    pub mailbox_id: String,
    pub expires_at: i64,
}

impl Store {
    /// Renews `holder`'s leases among `eligible` (enabled inbound mailboxes, in a stable
    /// order), takes free ones up to its fair share (capped by `max` when non-zero), gives
    /// back any above the share, and drops leases on mailboxes no longer eligible.
    pub async fn acquire_leases(
        &self,
        holder: &str,
        eligible: &[String],
        ttl_micros: i64,
        max: usize,
        now: i64,
    ) -> Result<Vec<LeaseGrant>, StoreError> {
        let _turn = self.write_turn().await;
        let tx = self.connection().begin().await?;
        let expires = now.saturating_add(ttl_micros);
        lease::Entity::delete_many().filter(lease::Column::ExpiresAt.lt(now)).exec(&tx).await?;
        if !eligible.is_empty() {
            lease::Entity::delete_many()
                .filter(lease::Column::MailboxId.is_not_in(eligible.iter().cloned()))
                .exec(&tx)
                .await?;
        } else {
            lease::Entity::delete_many().exec(&tx).await?;
        }
        // Who is asking: holders seen within one TTL count, the others are gone.
        lease_holder::Entity::insert(lease_holder::ActiveModel {
            holder: Set(holder.to_owned()),
            seen_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(lease_holder::Column::Holder)
                .update_column(lease_holder::Column::SeenAt)
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
        lease_holder::Entity::delete_many()
            .filter(lease_holder::Column::SeenAt.lt(now.saturating_sub(ttl_micros)))
            .exec(&tx)
            .await?;
        let asking = lease_holder::Entity::find().all(&tx).await?;
        let live = lease::Entity::find().order_by_asc(lease::Column::MailboxId).all(&tx).await?;
        let mut holders: BTreeSet<&str> = live.iter().map(|l| l.holder.as_str()).collect();
        holders.extend(asking.iter().map(|h| h.holder.as_str()));
        let share = eligible.len().div_ceil(holders.len().max(1));
        let share = if max > 0 { share.min(max) } else { share };
        let mine: Vec<&lease::Model> = live.iter().filter(|l| l.holder == holder).collect();
        let taken: BTreeSet<&str> = live.iter().map(|l| l.mailbox_id.as_str()).collect();
        let mut keep: Vec<String> = mine.iter().map(|l| l.mailbox_id.clone()).collect();
        keep.sort();
        let excess: Vec<String> = if keep.len() > share { keep.split_off(share) } else { Vec::new() };
        if !excess.is_empty() {
            lease::Entity::delete_many()
                .filter(lease::Column::Holder.eq(holder))
                .filter(lease::Column::MailboxId.is_in(excess))
                .exec(&tx)
                .await?;
        }
        if !keep.is_empty() {
            lease::Entity::update_many()
                .col_expr(lease::Column::ExpiresAt, sea_orm::sea_query::Expr::value(expires))
                .filter(lease::Column::Holder.eq(holder))
                .filter(lease::Column::MailboxId.is_in(keep.clone()))
                .exec(&tx)
                .await?;
        }
        for mailbox_id in eligible.iter().filter(|m| !taken.contains(m.as_str())) {
            if keep.len() >= share {
                break;
            }
            let inserted = lease::Entity::insert(lease::ActiveModel {
                mailbox_id: Set(mailbox_id.clone()),
                holder: Set(holder.to_owned()),
                expires_at: Set(expires),
            })
            .on_conflict(OnConflict::column(lease::Column::MailboxId).do_nothing().to_owned())
            .exec_without_returning(&tx)
            .await?;
            if inserted > 0 {
                keep.push(mailbox_id.clone());
            }
        }
        tx.commit().await?;
        keep.sort();
        Ok(keep.into_iter().map(|mailbox_id| LeaseGrant { mailbox_id, expires_at: expires }).collect())
    }

    /// Gives leases back (all of the holder's when `mailbox_ids` is empty).
    pub async fn release_leases(&self, holder: &str, mailbox_ids: &[String]) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        if mailbox_ids.is_empty() {
            // Leaving altogether: no longer counted in the others' fair share.
            lease_holder::Entity::delete_by_id(holder.to_owned()).exec(self.connection()).await?;
        }
        let mut query = lease::Entity::delete_many().filter(lease::Column::Holder.eq(holder));
        if !mailbox_ids.is_empty() {
            query = query.filter(lease::Column::MailboxId.is_in(mailbox_ids.iter().cloned()));
        }
        query.exec(self.connection()).await?;
        Ok(())
    }
}
