//! glibc malloc settings for a daemon that handles mail of several MiB.
//!
//! With glibc's defaults, freeing one large block (a 5 MiB mail) raises the mmap threshold
//! to that size, so later blocks up to 32 MiB come from the arenas instead of `mmap`; the
//! arenas keep what is freed, and a daemon's RSS settles far above what it holds. [`tune`]
//! fixes the threshold at glibc's own starting value, 128 KiB (setting it turns the dynamic
//! raise off), so a big mail's buffers are mapped and unmapped whole.
//!
//! Measured on the router bench (10,000 mails with ten of 1-5 MiB, SQLite, rounds of the
//! same session): peak RSS 119-135 MiB with the defaults, 102-104 with the threshold fixed;
//! rate and p99 latency alike within the noise. Capping the arenas as well (two) took the
//! peak to 99 MiB but raised the p99 latency (median 182 against 148 ms), so the arenas are
//! left at glibc's default.
//!
//! An operator's own `GLIBC_TUNABLES` with any `glibc.malloc.` setting wins: nothing is
//! changed then. There is no crate for one `mallopt` call, and the workspace denies
//! `unsafe`: this module is the one place that allows it.

/// The mmap threshold [`tune`] sets, in bytes.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// What [`tune`] did, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MallocTuning {
    /// Threshold fixed at `mmap_threshold` bytes.
    Tuned { mmap_threshold: usize },
    /// `GLIBC_TUNABLES` sets malloc: left as the operator chose.
    LeftToTunables,
    /// Not glibc (or `mallopt` refused): nothing to do.
    NotApplicable,
}

/// Fixes the mmap threshold (see the module docs). Call before any thread starts.
pub fn tune() -> MallocTuning {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return MallocTuning::LeftToTunables;
    }
    set_mmap_threshold(MMAP_THRESHOLD)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_mmap_threshold(bytes: usize) -> MallocTuning {
    let Ok(threshold) = i32::try_from(bytes) else {
        return MallocTuning::NotApplicable;
    };
    // SAFETY: `mallopt` only changes malloc's parameters; glibc takes its own lock for it,
    // and any value is accepted (1) or refused (0), never undefined behaviour.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) } == 1;
    if ok { MallocTuning::Tuned { mmap_threshold: bytes } } else { MallocTuning::NotApplicable }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> MallocTuning {
    MallocTuning::NotApplicable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_threshold() {
        assert_eq!(set_mmap_threshold(MMAP_THRESHOLD), MallocTuning::Tuned { mmap_threshold: 128 * 1024 });
    }
}
