//! configd metrics: the config revision the daemons are served and the mailboxes by state
//! (what `deskmailctl status` shows), refreshed by configd's store check every few seconds.

use metrics::{describe_gauge, gauge};

/// Gauge: the config revision configd serves (bumps on every admin write).
pub const CONFIG_REVISION: &str = "deskmail_configd_config_revision";
/// Gauge `{direction, state}`: mailbox parts by their last reported state (`active`,
/// `waiting`, `error`, `unknown` for never reported).
pub const MAILBOXES: &str = "deskmail_configd_mailboxes";

/// Mailbox states, in the order of the proto enum `MailboxState` (0 = unknown).
pub const STATES: [&str; 4] = ["unknown", "active", "waiting", "error"];

/// Sets [`CONFIG_REVISION`].
pub fn config_revision(revision: u64) {
    // A revision beyond 2^53 does not occur (one per admin write).
    #[allow(clippy::cast_precision_loss)]
    gauge!(CONFIG_REVISION).set(revision as f64);
}

/// Sets [`MAILBOXES`] for one direction (`inbound`/`outbound`): `counts[i]` parts in
/// state [`STATES`]`[i]`. Every state is written, zeros included, so a state that empties
/// drops to 0 instead of keeping its last value.
pub fn mailboxes(direction: &'static str, counts: [u64; 4]) {
    for (state, count) in STATES.iter().zip(counts) {
        #[allow(clippy::cast_precision_loss)]
        gauge!(MAILBOXES, "direction" => direction, "state" => *state).set(count as f64);
    }
}

/// Describes the configd metrics (HELP lines).
pub fn init() {
    describe_gauge!(CONFIG_REVISION, "The config revision configd serves.");
    describe_gauge!(MAILBOXES, "Mailbox parts by their last reported state.");
}
