//! What can go wrong, how it is reported on stderr and which exit code it gives.

use std::fmt::Write as _;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{EXIT_CONFIG, EXIT_FAILED, EXIT_INVALID, EXIT_USAGE};

#[derive(Debug)]
pub enum Fail {
    /// A gRPC call failed; `what` says which (`create mailbox "support"`).
    Call { what: String, status: Status },
    /// configd could not be reached, or something else on our side went wrong.
    Failed(String),
    /// The command line asks for something impossible (exit 2).
    Usage(String),
    /// Values that cannot be sent, by flag: (flag, problem) (exit 3).
    Invalid { what: String, problems: Vec<(String, String)> },
    /// The CLI config is incomplete (exit 78).
    Config(String),
}

impl Fail {
    pub fn exit_code(&self) -> u8 {
        match self {
            Fail::Call { status, .. } if status.code() == Code::InvalidArgument => EXIT_INVALID,
            Fail::Call { .. } | Fail::Failed(_) => EXIT_FAILED,
            Fail::Usage(_) => EXIT_USAGE,
            Fail::Invalid { .. } => EXIT_INVALID,
            Fail::Config(_) => EXIT_CONFIG,
        }
    }

    /// The text for stderr, ending with a newline.
    pub fn report(&self) -> String {
        let mut out = String::new();
        match self {
            Fail::Call { what, status } => {
                let violations =
                    status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
                if status.code() == Code::InvalidArgument && !violations.is_empty() {
                    let n = violations.len();
                    let plural = if n == 1 { "" } else { "s" };
                    let _ =
                        writeln!(out, "deskmailctl: {what}: INVALID_ARGUMENT: {n} invalid field{plural}:");
                    for v in violations {
                        let _ = writeln!(out, "  {}: {}", v.field, v.description);
                    }
                } else {
                    let _ = writeln!(
                        out,
                        "deskmailctl: {what}: {}: {}",
                        code_name(status.code()),
                        status.message()
                    );
                    if let Some(hint) = hint(status.code()) {
                        let _ = writeln!(out, "  {hint}");
                    }
                }
            }
            Fail::Invalid { what, problems } => {
                let _ = writeln!(out, "deskmailctl: {what}:");
                for (field, problem) in problems {
                    let _ = writeln!(out, "  {field}: {problem}");
                }
            }
            Fail::Failed(m) | Fail::Usage(m) | Fail::Config(m) => {
                let _ = writeln!(out, "deskmailctl: {m}");
            }
        }
        out
    }
}

fn hint(code: Code) -> Option<&'static str> {
    match code {
        Code::Unauthenticated => {
            Some("check the admin token (`token` in the config file, or DESKMAILCTL_TOKEN)")
        }
        Code::PermissionDenied => Some("this call needs the admin token, not the daemon token"),
        Code::Unavailable => Some("is configd running and is `endpoint` (DESKMAILCTL_ENDPOINT) right?"),
        Code::DeadlineExceeded => Some("raise `timeout` (DESKMAILCTL_TIMEOUT) if configd is just slow"),
        _ => None,
    }
}

/// The canonical gRPC code name (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Names the call on a failed gRPC result.
pub trait CallContext<T> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T, Fail>;
}

impl<T> CallContext<T> for Result<T, Status> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T, Fail> {
        self.map_err(|status| Fail::Call { what: what(), status })
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Failed(format!("cannot write the output: {e}"))
    }
}
