//! Requests whose body does not decode are the client's fault: `INVALID_ARGUMENT` with a
//! field violation naming the field that did not decode (or `request`), not the `INTERNAL`
//! tonic answers with (its codec maps every protobuf decode error to `INTERNAL`). A request
//! over the 4 MiB limit is `RESOURCE_EXHAUSTED`, as the gRPC status code table has it
//! (tonic says `OUT_OF_RANGE`).
//!
//! The request is decoded before the handler runs, so these failures always come back as a
//! trailers-only response (the status in the headers); that is what [`RejectUndecodable`]
//! rewrites. Statuses the handlers return are left alone, and so is the `INTERNAL` that the
//! gRPC compression spec requires for a compressed flag without an encoding.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::errors::bad_request;

/// Wraps one gRPC service (see the module docs).
#[derive(Debug, Clone)]
pub struct RejectUndecodable<S> {
    inner: S,
}

impl<S> RejectUndecodable<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for RejectUndecodable<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RejectUndecodable<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>, Error = Infallible>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move { Ok(rewrite(answer.await?)) })
    }
}

fn rewrite<B: Default>(response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else { return response };
    match replacement(&status) {
        Some(better) => better.into_http(),
        None => response,
    }
}

/// tonic's own words for a request body that did not decode (tonic-prost's codec and the
/// server's framing), and what to answer instead.
fn replacement(status: &Status) -> Option<Status> {
    const PROTOBUF: &str = "failed to decode Protobuf message: ";
    let message = status.message();
    match status.code() {
        Code::Internal => {
            if let Some(rest) = message.strip_prefix(PROTOBUF) {
                let (field, why) = decode_error_field(rest);
                Some(bad_request(vec![(field, format!("does not decode: {why}"))]))
            } else if message == "Unexpected EOF decoding stream." {
                Some(bad_request(vec![("request".to_owned(), "the message frame is cut short".to_owned())]))
            } else if message == "Missing request message." {
                Some(bad_request(vec![("request".to_owned(), "no request message was sent".to_owned())]))
            } else {
                None
            }
        }
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            Some(Status::resource_exhausted(message.to_owned()))
        }
        _ => None,
    }
}

/// prost's error text is its field stack, innermost first (`Mailbox.name: CreateMailboxRequest.mailbox:
/// invalid string value: ...`): returns the field path (`mailbox.name`, or `request` when the
/// error is not in a field) and the description.
fn decode_error_field(text: &str) -> (String, String) {
    let mut fields = Vec::new();
    let mut rest = text;
    while let Some((head, tail)) = rest.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else { break };
        let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(message) || !ident(field) {
            break;
        }
        fields.push(field);
        rest = tail;
    }
    fields.reverse();
    let field = if fields.is_empty() { "request".to_owned() } else { fields.join(".") };
    (field, rest.to_owned())
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn decode_errors_name_the_field() {
        let (field, why) = decode_error_field(
            "Mailbox.name: CreateMailboxRequest.mailbox: invalid string value: data is not UTF-8 encoded",
        );
        assert_eq!(field, "mailbox.name");
        assert_eq!(why, "invalid string value: data is not UTF-8 encoded");
        assert_eq!(decode_error_field("invalid wire type value: 7").0, "request");
    }

    #[test]
    fn only_tonic_decode_failures_are_rewritten() {
        let s = replacement(&Status::internal(
            "failed to decode Protobuf message: GetRequest.id: invalid string value: data is not UTF-8 encoded",
        ))
        .unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        let bad = s.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "id");
        assert_eq!(
            replacement(&Status::internal("Missing request message.")).unwrap().code(),
            Code::InvalidArgument
        );
        assert!(replacement(&Status::internal("stored queue q1 does not decode: x")).is_none());
        assert!(
            replacement(&Status::internal("protocol error: received message with compressed-flag")).is_none()
        );
        assert!(replacement(&Status::not_found("failed to decode Protobuf message: x")).is_none());
    }
}
