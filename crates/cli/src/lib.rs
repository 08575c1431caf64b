//! deskmailctl: the admin CLI over configd's gRPC API. Readable tables by default,
//! `--output json` for scripts, and exit codes scripts can trust:
//! 0 ok, 1 the call failed (the server said no, or it is unreachable), 2 usage,
//! 78 the CLI's own config is invalid.
//!
//! Depends on the config loader and the generated proto code only.

mod config;

pub use config::CliConfig;

/// Exit code when the server answered with an error or could not be reached.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for an invalid CLI config (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
