//! What the router tells the outside about itself: the metric calls of `deskmail-telemetry`
//! (`docs/metrics.md`), the per-batch phase profile, and the readiness checks' owners.

use std::time::Duration;

use deskmail_runtime::CancellationToken;
use deskmail_telemetry::ReadyFlag;
use deskmail_telemetry::router::{self as m, AutoReplySuppressed, RouteOutcome};

use crate::store::Outcome;

/// The metric outcome of a store outcome.
pub fn route_outcome(o: &Outcome) -> RouteOutcome {
    match o {
        Outcome::Created { .. } => RouteOutcome::NewTicket,
        Outcome::FollowUp { .. } => RouteOutcome::FollowUp,
        Outcome::Ignored { .. } => RouteOutcome::Ignored,
        Outcome::Duplicate => RouteOutcome::Duplicate,
    }
}

/// The metric reason of a loop rule or configuration that kept a new ticket from its
/// auto-reply (`autoreply::draft`'s words); `None` when it is no such reason (no sender
/// address, an unparsable mail).
pub fn suppressed_reason(why: &str) -> Option<AutoReplySuppressed> {
    Some(match why {
        "no queue" | "queue has auto-reply off" => AutoReplySuppressed::Disabled,
        "auto-submitted" => AutoReplySuppressed::AutoSubmitted,
        "precedence bulk/junk/list" | "mailing list" => AutoReplySuppressed::Bulk,
        "bounce" | "from a mailer-daemon" => AutoReplySuppressed::Bounce,
        "from a system address" => AutoReplySuppressed::OwnAddress,
        _ => return None,
    })
}

/// One mail handled and acked.
pub fn mail_routed(outcome: RouteOutcome, mailbox_id: Option<&str>, elapsed: Duration) {
    m::mail_routed(outcome, mailbox_id.unwrap_or(""), elapsed);
}

/// Where the time of the settled batches went (sums since the start). `parse` and
/// `dispatch` are CPU time summed over the mails (they run in parallel); the others are
/// wall time of the committer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    pub batches: u64,
    pub mails: u64,
    /// First delivery of a batch to its cut.
    pub collect: Duration,
    pub parse: Duration,
    pub dispatch: Duration,
    /// Wall time of parsing and planning batches in parallel.
    pub plan_wall: Duration,
    /// The batch's statements (dedup, lookups, multi-row inserts).
    pub insert: Duration,
    /// The commits.
    pub commit: Duration,
    /// Publishing events, jobs and dead letters and waiting for the broker's confirms.
    pub publish: Duration,
    /// The multiple-acks.
    pub ack: Duration,
    /// `insert` by step (`store::WRITE_STEPS`).
    pub steps: [Duration; crate::store::WRITE_STEPS.len()],
}

impl std::ops::AddAssign for Phases {
    fn add_assign(&mut self, p: Phases) {
        self.batches += p.batches;
        self.mails += p.mails;
        self.collect += p.collect;
        self.parse += p.parse;
        self.dispatch += p.dispatch;
        self.plan_wall += p.plan_wall;
        self.insert += p.insert;
        self.commit += p.commit;
        self.publish += p.publish;
        self.ack += p.ack;
        for (t, d) in self.steps.iter_mut().zip(p.steps) {
            *t += d;
        }
    }
}

impl Phases {
    /// Logs the profile at INFO, in milliseconds per phase and microseconds per mail.
    pub fn log(&self) {
        let per_mail = |d: Duration| {
            if self.mails == 0 { 0 } else { d.as_micros() / u128::from(self.mails) }
        };
        tracing::info!(
            batches = self.batches,
            mails = self.mails,
            collect_ms = self.collect.as_millis(),
            parse_ms = self.parse.as_millis(),
            dispatch_ms = self.dispatch.as_millis(),
            plan_wall_ms = self.plan_wall.as_millis(),
            insert_ms = self.insert.as_millis(),
            commit_ms = self.commit.as_millis(),
            publish_ms = self.publish.as_millis(),
            ack_ms = self.ack.as_millis(),
            parse_us_per_mail = per_mail(self.parse),
            insert_us_per_mail = per_mail(self.insert),
            commit_us_per_mail = per_mail(self.commit),
            publish_us_per_mail = per_mail(self.publish),
            insert_steps_ms = %crate::store::WRITE_STEPS
                .iter()
                .zip(&self.steps)
                .map(|(n, d)| format!("{n}:{}", d.as_millis()))
                .collect::<Vec<_>>()
                .join(","),
            "Phase profile."
        );
    }
}

/// The `database` readiness check: a `SELECT 1` every `every` (the committer also sets it
/// the moment a batch fails on the database, and when it answers again).
pub fn spawn_database_check(
    store: crate::store::Store,
    flag: ReadyFlag,
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    flag.spawn_probe(every, shutdown, move || {
        let store = store.clone();
        async move {
            let ping = tokio::time::timeout(every.max(Duration::from_secs(1)), store.ping()).await;
            if matches!(ping, Ok(true)) {
                Ok(())
            } else {
                Err("the tickets database does not answer".to_owned())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loop_rule_has_a_reason() {
        let cases = [
            ("queue has auto-reply off", Some(AutoReplySuppressed::Disabled)),
            ("auto-submitted", Some(AutoReplySuppressed::AutoSubmitted)),
            ("precedence bulk/junk/list", Some(AutoReplySuppressed::Bulk)),
            ("mailing list", Some(AutoReplySuppressed::Bulk)),
            ("bounce", Some(AutoReplySuppressed::Bounce)),
            ("from a mailer-daemon", Some(AutoReplySuppressed::Bounce)),
            ("from a system address", Some(AutoReplySuppressed::OwnAddress)),
            ("unparsable", None),
        ];
        for (why, want) in cases {
            assert_eq!(suppressed_reason(why), want, "{why}");
        }
    }
}
