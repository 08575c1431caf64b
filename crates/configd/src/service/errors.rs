//! gRPC statuses for what can go wrong: field violations as `google.rpc.BadRequest`
//! details, store failures without internals a client cannot act on.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::resource::{Violation, quote};
use crate::store::StoreError;

/// At most this many violations are reported, each description at most [`MAX_DESCRIPTION`]
/// characters: the status travels in HTTP/2 headers, and clients refuse big ones (grpcio at
/// 8 KiB) by dropping the connection.
const MAX_VIOLATIONS: usize = 20;
const MAX_DESCRIPTION: usize = 300;

/// `INVALID_ARGUMENT` with one field violation per problem; the message lists them too, for
/// clients that do not read details.
pub fn bad_request(violations: Vec<Violation>) -> Status {
    let more = violations.len().saturating_sub(MAX_VIOLATIONS);
    let violations: Vec<Violation> = violations
        .into_iter()
        .take(MAX_VIOLATIONS)
        .map(|(f, d)| (f.chars().take(MAX_DESCRIPTION).collect(), d.chars().take(MAX_DESCRIPTION).collect()))
        .collect();
    let mut summary = violations.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; ");
    if more > 0 {
        summary.push_str(&format!("; and {more} more"));
    }
    let mut details = ErrorDetails::new();
    for (field, description) in violations {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

pub fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::Duplicate { kind, name } => {
            Status::already_exists(format!("a {kind} named {} exists already", quote(&name)))
        }
        other => {
            tracing::error!(error = %other, "Config store failed.");
            Status::unavailable(format!("config store: {other}"))
        }
    }
}
