//! Mailbox status rows: one per mailbox and direction, upserted by daemon reports.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entity::status;
use super::{Store, StoreError};

/// A daemon's report of one attempt.
#[derive(Debug, Clone)]
pub struct StatusRecord {
    pub mailbox_id: String,
    pub direction: i32,
    pub state: i32,
    pub reason: i32,
    pub message: String,
    pub messages: u64,
    pub reporter: String,
    /// Whether the attempt succeeded (state active).
    pub success: bool,
    pub now_micros: i64,
}

impl Store {
    /// Records an attempt: success resets the error streak, an error extends it.
    pub async fn report_status(&self, r: StatusRecord) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let db = self.connection();
        let previous = status::Entity::find_by_id((r.mailbox_id.clone(), r.direction)).one(db).await?;
        let (mut last_success, mut last_error, mut total, mut streak) = previous
            .map(|p| (p.last_success, p.last_error, p.messages_total, p.consecutive_errors))
            .unwrap_or((0, 0, 0, 0));
        total = total.saturating_add(i64::try_from(r.messages).unwrap_or(i64::MAX));
        if r.success {
            last_success = r.now_micros;
            streak = 0;
        } else if r.reason != 0 {
            last_error = r.now_micros;
            streak = streak.saturating_add(1);
        }
        let row = status::ActiveModel {
            mailbox_id: Set(r.mailbox_id),
            direction: Set(r.direction),
            state: Set(r.state),
            reason: Set(r.reason),
            message: Set(r.message),
            last_success: Set(last_success),
            last_error: Set(last_error),
            messages_total: Set(total),
            consecutive_errors: Set(streak),
            reporter: Set(r.reporter),
            updated_at: Set(r.now_micros),
        };
        use status::Column as C;
        status::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([C::MailboxId, C::Direction])
                    .update_columns([
                        C::State,
                        C::Reason,
                        C::Message,
                        C::LastSuccess,
                        C::LastError,
                        C::MessagesTotal,
                        C::ConsecutiveErrors,
                        C::Reporter,
                        C::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(db)
            .await?;
        Ok(())
    }

    pub async fn statuses(&self) -> Result<Vec<status::Model>, StoreError> {
        Ok(status::Entity::find()
            .order_by_asc(status::Column::MailboxId)
            .order_by_asc(status::Column::Direction)
            .all(self.connection())
            .await?)
    }

    pub async fn statuses_of(&self, mailbox_id: &str) -> Result<Vec<status::Model>, StoreError> {
        Ok(status::Entity::find()
            .filter(status::Column::MailboxId.eq(mailbox_id))
            .order_by_asc(status::Column::Direction)
            .all(self.connection())
            .await?)
    }
}
