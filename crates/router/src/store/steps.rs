//! Where a batch's write spends its time, step by step (the router's phase profile).

/// The steps of a batch's write, in order, for the phase profile.
pub const WRITE_STEPS: [&str; 9] =
    ["dedup", "lookups", "numbers", "rows", "tickets", "articles", "attachments", "outbox", "rest"];

/// Time per step of [`WRITE_STEPS`].
pub(super) struct StepClock {
    last: std::time::Instant,
    steps: [std::time::Duration; WRITE_STEPS.len()],
}

impl StepClock {
    pub(super) fn new() -> Self {
        Self { last: std::time::Instant::now(), steps: Default::default() }
    }

    /// Charges the time since the last mark to step `i`.
    pub(super) fn mark(&mut self, i: usize) {
        let now = std::time::Instant::now();
        if let Some(s) = self.steps.get_mut(i) {
            *s += now - self.last;
        }
        self.last = now;
    }

    pub(super) fn done(mut self) -> [std::time::Duration; WRITE_STEPS.len()] {
        self.mark(WRITE_STEPS.len() - 1);
        self.steps
    }
}
