//! glibc malloc settings for a daemon that handles mail of several MiB.
//!
//! With glibc's defaults, freeing one large block (a 5 MiB mail) raises the mmap threshold
//! to that size, so later blocks up to 32 MiB come from the arenas instead of `mmap`; the
//! arenas keep what is freed, and with one arena per thread (up to 8 per core) a daemon's
//! RSS settles far above what it holds. Measured on the router bench (10,000 mails with ten
//! of 1-5 MiB, SQLite): peak RSS 147 MiB with the defaults, 104 with the threshold fixed at
//! 128 KiB, 112 with two arenas only, 100 with both; the rate did not move beyond noise.
//!
//! [`tune`] fixes the threshold at glibc's own starting value (128 KiB; setting it turns the
//! dynamic raise off) and caps the arenas at one per core (at least 2). An operator's own
//! `GLIBC_TUNABLES` with any `glibc.malloc.` setting wins: nothing is changed then.
//!
//! There is no crate for two `mallopt` calls, and the workspace denies `unsafe`: this module
//! is the one place that allows it.

/// What [`tune`] did, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MallocTuning {
    /// Threshold fixed at `mmap_threshold` bytes, at most `arenas` arenas.
    Tuned { mmap_threshold: usize, arenas: usize },
    /// `GLIBC_TUNABLES` sets malloc: left as the operator chose.
    LeftToTunables,
    /// Not glibc (or `mallopt` refused): nothing to do.
    NotApplicable,
}

/// Fixes the mmap threshold and caps the arenas (see the module docs). Call before any
/// thread starts.
pub fn tune() -> MallocTuning {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return MallocTuning::LeftToTunables;
    }
    let arenas = std::thread::available_parallelism().map_or(2, std::num::NonZero::get).max(2);
    set(128 * 1024, arenas)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set(mmap_threshold: usize, arenas: usize) -> MallocTuning {
    let (Ok(threshold), Ok(arena_max)) = (i32::try_from(mmap_threshold), i32::try_from(arenas)) else {
        return MallocTuning::NotApplicable;
    };
    // SAFETY: `mallopt` only changes malloc's parameters; glibc takes its own lock for it,
    // and any value is accepted or refused (return 0), never undefined behaviour.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) == 1
            && libc::mallopt(libc::M_ARENA_MAX, arena_max) == 1
    };
    if ok { MallocTuning::Tuned { mmap_threshold, arenas } } else { MallocTuning::NotApplicable }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_mmap_threshold: usize, _arenas: usize) -> MallocTuning {
    MallocTuning::NotApplicable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert_eq!(set(128 * 1024, 2), MallocTuning::Tuned { mmap_threshold: 128 * 1024, arenas: 2 });
    }
}
