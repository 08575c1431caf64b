//! gRPC statuses for what can go wrong: field violations as `google.rpc.BadRequest`
//! details, store failures without internals a client cannot act on.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::resource::Violation;
use crate::store::StoreError;

/// `INVALID_ARGUMENT` with one field violation per problem; the message lists them too, for
/// clients that do not read details.
pub fn bad_request(violations: Vec<Violation>) -> Status {
    let summary = violations.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; ");
    let mut details = ErrorDetails::new();
    for (field, description) in violations {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

pub fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::Duplicate { kind, name } => {
            Status::already_exists(format!("a {kind} named {name:?} exists already"))
        }
        other => {
            tracing::error!(error = %other, "Config store failed.");
            Status::unavailable(format!("config store: {other}"))
        }
    }
}
