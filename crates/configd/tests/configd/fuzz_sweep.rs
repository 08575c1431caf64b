//! A schemathesis-like sweep over every configd RPC (issue 8, "bad input"): random messages
//! built from the descriptors (random and boundary values, invalid UTF-8, unknown enum
//! numbers, field masks with unknown, duplicate and nested paths, unknown fields, wrong wire
//! types), valid requests with random fields changed, per-field boundary cases with the violation they must name, garbage bytes and
//! broken gRPC framing as the request body, and every kind of wrong token. Every answer must
//! be a proper gRPC status (never UNKNOWN, INTERNAL or UNAVAILABLE, never a dropped
//! connection), and configd must still be healthy and consistent afterwards.
//!
//! The requests go over raw HTTP/2 (`Raw`), so that the bodies can be anything. The methods
//! come from `FILE_DESCRIPTOR_SET`: a method added to the protos is swept at once, and
//! `every_configd_method_is_in_the_sweep` fails until its access rule is written down here.
//!
//! `CONFIGD_FUZZ_CASES` (default 100) is the number of random messages per method;
//! `CONFIGD_FUZZ_SEED` replays a run (the seed is printed on failure).
//! (Not `DESKMAIL_*`: the in-process configd reads those as config keys and refuses unknown ones.)

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use deskmail_proto::v1 as pb;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::codegen::{Bytes, Service, http};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::*;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Admin-only service: the daemon token is refused by the interceptor.
    Admin,
    /// A method of a service both roles use that refuses the daemon itself.
    AdminMethod,
    /// Admin and daemon.
    Any,
}

/// Every configd method and who may call it. A method missing here fails
/// `every_configd_method_is_in_the_sweep`.
const METHODS: &[(&str, Access)] = &[
    ("deskmail.v1.MailboxService/ListMailboxes", Access::Admin),
    ("deskmail.v1.MailboxService/GetMailbox", Access::Admin),
    ("deskmail.v1.MailboxService/CreateMailbox", Access::Admin),
    ("deskmail.v1.MailboxService/UpdateMailbox", Access::Admin),
    ("deskmail.v1.MailboxService/DeleteMailbox", Access::Admin),
    ("deskmail.v1.MailboxService/ListPresets", Access::Admin),
    ("deskmail.v1.MailboxService/TestConnection", Access::Admin),
    ("deskmail.v1.MailboxService/SendTestEmail", Access::Admin),
    ("deskmail.v1.QueueService/ListQueues", Access::Admin),
    ("deskmail.v1.QueueService/GetQueue", Access::Admin),
    ("deskmail.v1.QueueService/CreateQueue", Access::Admin),
    ("deskmail.v1.QueueService/UpdateQueue", Access::Admin),
    ("deskmail.v1.QueueService/DeleteQueue", Access::Admin),
    ("deskmail.v1.SystemAddressService/ListSystemAddresses", Access::Admin),
    ("deskmail.v1.SystemAddressService/GetSystemAddress", Access::Admin),
    ("deskmail.v1.SystemAddressService/CreateSystemAddress", Access::Admin),
    ("deskmail.v1.SystemAddressService/UpdateSystemAddress", Access::Admin),
    ("deskmail.v1.SystemAddressService/DeleteSystemAddress", Access::Admin),
    ("deskmail.v1.CompanyService/ListCompanies", Access::Admin),
    ("deskmail.v1.CompanyService/GetCompany", Access::Admin),
    ("deskmail.v1.CompanyService/CreateCompany", Access::Admin),
    ("deskmail.v1.CompanyService/UpdateCompany", Access::Admin),
    ("deskmail.v1.CompanyService/DeleteCompany", Access::Admin),
    ("deskmail.v1.ContractService/ListContracts", Access::Admin),
    ("deskmail.v1.ContractService/GetContract", Access::Admin),
    ("deskmail.v1.ContractService/CreateContract", Access::Admin),
    ("deskmail.v1.ContractService/UpdateContract", Access::Admin),
    ("deskmail.v1.ContractService/DeleteContract", Access::Admin),
    ("deskmail.v1.FilterService/ListFilters", Access::Admin),
    ("deskmail.v1.FilterService/GetFilter", Access::Admin),
    ("deskmail.v1.FilterService/CreateFilter", Access::Admin),
    ("deskmail.v1.FilterService/UpdateFilter", Access::Admin),
    ("deskmail.v1.FilterService/DeleteFilter", Access::Admin),
    ("deskmail.v1.SettingsService/GetSettings", Access::Admin),
    ("deskmail.v1.SettingsService/UpdateSettings", Access::Admin),
    ("deskmail.v1.StatusService/ReportStatus", Access::Any),
    ("deskmail.v1.StatusService/GetStatus", Access::AdminMethod),
    ("deskmail.v1.StatusService/ListStatus", Access::AdminMethod),
    ("deskmail.v1.StatusService/StoreRefreshToken", Access::Any),
    ("deskmail.v1.ConfigWatch/Watch", Access::Any),
    ("deskmail.v1.ConfigWatch/GetSnapshot", Access::Any),
    ("deskmail.v1.LeaseService/AcquireLeases", Access::Any),
    ("deskmail.v1.LeaseService/ReleaseLeases", Access::Any),
];

/// What a well-formed request may get with the right token.
const WELL_FORMED: &[Code] =
    &[Code::Ok, Code::InvalidArgument, Code::NotFound, Code::AlreadyExists, Code::FailedPrecondition];

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A Watch that is still open after this long is fine (nothing newer to send).
const STREAM_WAIT: Duration = Duration::from_millis(300);
/// Longer status messages would not fit the 8 KiB metadata limit of common clients (grpcio).
const MAX_STATUS_MESSAGE: usize = 4096;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(deskmail_proto::FILE_DESCRIPTOR_SET).unwrap()
}

/// `package.Service/Method` of every method in the deskmail protos.
fn methods(pool: &DescriptorPool) -> Vec<MethodDescriptor> {
    pool.services()
        .filter(|s| s.package_name() == "deskmail.v1")
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect()
}

fn method_name(m: &MethodDescriptor) -> String {
    format!("{}/{}", m.parent_service().full_name(), m.name())
}

fn access_of(name: &str) -> Option<Access> {
    METHODS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

fn cases() -> usize {
    std::env::var("CONFIGD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

#[test]
fn every_configd_method_is_in_the_sweep() {
    let pool = pool();
    let served: BTreeSet<String> = methods(&pool).iter().map(method_name).collect();
    let listed: BTreeSet<String> = METHODS.iter().map(|(n, _)| (*n).to_owned()).collect();
    let missing: Vec<_> = served.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&served).collect();
    assert!(missing.is_empty(), "methods the sweep does not know (add them to METHODS): {missing:?}");
    assert!(stale.is_empty(), "METHODS lists methods the protos no longer have: {stale:?}");
    assert_eq!(served.len(), 43, "the sweep covers every method: {served:?}");
}

// ---------------------------------------------------------------------------------------
// A raw gRPC client: any bytes as the body, any authorization header.

#[derive(Debug)]
struct Reply {
    status: Status,
    messages: Vec<Vec<u8>>,
}

#[derive(Clone)]
struct Raw {
    channel: tonic::transport::Channel,
}

/// One gRPC message frame (uncompressed).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl Raw {
    async fn call(
        &self,
        path: &str,
        auth: Option<&[u8]>,
        body: Vec<u8>,
        streaming: bool,
    ) -> Result<Reply, String> {
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("/{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(a) = auth {
            req = req.header("authorization", http::HeaderValue::from_bytes(a).unwrap());
        }
        let req = req.body(tonic::body::Body::new(Full::new(Bytes::from(body)))).unwrap();
        let mut channel = self.channel.clone();
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(|e| format!("channel: {e}"))?;
        let response = tokio::time::timeout(CALL_TIMEOUT, channel.call(req))
            .await
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
            .map_err(|e| format!("connection dropped: {e:?}"))?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(format!("HTTP status {}", parts.status));
        }
        if let Some(status) = Status::from_header_map(&parts.headers) {
            return Ok(Reply { status, messages: Vec::new() }); // trailers-only
        }
        let mut data = Vec::new();
        let mut trailers = None;
        let started = Instant::now();
        loop {
            if streaming && (!complete_messages(&data)?.is_empty() || started.elapsed() > STREAM_WAIT) {
                // An open stream: fine so far; dropping it cancels the call.
                return Ok(Reply { status: Status::ok(""), messages: complete_messages(&data)? });
            }
            let wait = if streaming { STREAM_WAIT } else { CALL_TIMEOUT };
            let next = match tokio::time::timeout(wait, body.frame()).await {
                Ok(next) => next,
                Err(_) if streaming => continue,
                Err(_) => return Err("the body did not end".to_owned()),
            };
            match next {
                None => break,
                Some(Err(e)) => return Err(format!("body failed (connection dropped?): {e}")),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            trailers = Some(t);
                        }
                    }
                },
            }
        }
        let status = trailers
            .as_ref()
            .and_then(Status::from_header_map)
            .ok_or_else(|| "the answer has no grpc-status".to_owned())?;
        Ok(Reply { status, messages: complete_messages(&data)? })
    }
}

/// Splits a response body into messages; a truncated trailing frame is left for later.
fn complete_messages(mut data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while data.len() >= 5 {
        if data[0] != 0 {
            return Err(format!("response frame with compression flag {}", data[0]));
        }
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if data.len() < 5 + len {
            break;
        }
        out.push(data[5..5 + len].to_vec());
        data = &data[5 + len..];
    }
    Ok(out)
}

/// What was wrong with one answer, or nothing.
fn check(reply: &Reply, allowed: &[Code], output: &MessageDescriptor) -> Result<(), String> {
    let status = &reply.status;
    if !allowed.contains(&status.code()) {
        return Err(format!("{:?} ({:.300}), expected one of {allowed:?}", status.code(), status.message()));
    }
    if status.message().len() > MAX_STATUS_MESSAGE {
        return Err(format!(
            "{:?} with a {} byte message (starts {:.120})",
            status.code(),
            status.message().len(),
            status.message()
        ));
    }
    match status.code() {
        Code::InvalidArgument => {
            let bad = status.get_details_bad_request().ok_or_else(|| {
                format!("INVALID_ARGUMENT without BadRequest details: {}", status.message())
            })?;
            if bad.field_violations.is_empty() || bad.field_violations.iter().any(|v| v.field.is_empty()) {
                return Err(format!("INVALID_ARGUMENT without a named field: {bad:?}"));
            }
        }
        Code::Ok => {
            for m in &reply.messages {
                DynamicMessage::decode(output.clone(), m.as_slice())
                    .map_err(|e| format!("the answer is not a {}: {e}", output.full_name()))?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The generator: protobuf wire bytes for a descriptor, with random and boundary values.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

const HUGE: usize = 1 << 20;

struct Gen {
    rng: StdRng,
    /// Ids and names of resources that exist (at the start), and other plausible keys.
    ids: Vec<String>,
    /// Field paths of every deskmail message, for field masks.
    paths: Vec<String>,
    /// A port on 127.0.0.1 nothing listens on: connection tests fail fast.
    closed_port: u32,
    /// One 1 MB string per message at most, so requests stay under the 4 MiB limit.
    huge_used: bool,
}

impl Gen {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn message(&mut self, desc: &MessageDescriptor, depth: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let p = if depth == 0 { 0.8 } else { 0.55 };
        for field in desc.fields() {
            if !self.rng.random_bool(p) {
                continue;
            }
            let n = if field.is_list() { self.rng.random_range(0..=4) } else { 1 };
            for _ in 0..n {
                self.field(&field, depth, &mut out);
            }
            // A singular field twice: the last one wins.
            if !field.is_list() && self.rng.random_bool(0.03) {
                self.field(&field, depth, &mut out);
            }
        }
        if self.rng.random_bool(0.05) {
            // An unknown field, which decoders skip.
            let number = self.rng.random_range(100..5000);
            match self.rng.random_range(0..3) {
                0 => put_uint(&mut out, number, self.rng.random()),
                1 => put_len(&mut out, number, b"unknown"),
                _ => {
                    put_key(&mut out, number, 5);
                    out.extend_from_slice(&self.rng.random::<u32>().to_le_bytes());
                }
            }
        }
        if self.rng.random_bool(0.02)
            && let Some(field) = desc.fields().nth(self.rng.random_range(0..desc.fields().len().max(1)))
        {
            // A known field with the wrong wire type.
            let wire =
                if matches!(field.kind(), Kind::String | Kind::Bytes | Kind::Message(_)) { 0 } else { 2 };
            if wire == 0 {
                put_uint(&mut out, field.number(), 7);
            } else {
                put_len(&mut out, field.number(), b"wrong");
            }
        }
        if self.rng.random_bool(0.02) && !out.is_empty() {
            let cut = self.rng.random_range(0..out.len());
            out.truncate(cut);
        }
        out
    }

    /// One field somewhere in `desc` set to a random value, as wire bytes to append to a
    /// valid message (the last value of a field wins; sub-messages merge field by field).
    fn mutation(&mut self, desc: &MessageDescriptor, depth: u32) -> Vec<u8> {
        let fields: Vec<FieldDescriptor> = desc.fields().collect();
        let mut out = Vec::new();
        if fields.is_empty() {
            return out;
        }
        let f = fields[self.rng.random_range(0..fields.len())].clone();
        match f.kind() {
            Kind::Message(m)
                if !f.is_list()
                    && m.package_name() == "deskmail.v1"
                    && depth < 3
                    && self.rng.random_bool(0.7) =>
            {
                let inner = self.mutation(&m, depth + 1);
                put_len(&mut out, f.number(), &inner);
            }
            _ => self.field(&f, 3, &mut out),
        }
        out
    }

    fn field(&mut self, f: &FieldDescriptor, depth: u32, out: &mut Vec<u8>) {
        let n = f.number();
        match f.kind() {
            Kind::String => {
                let v = self.string(f.name());
                put_len(out, n, &v);
            }
            Kind::Bytes => {
                let len = self.rng.random_range(0..64);
                let v: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                put_len(out, n, &v);
            }
            Kind::Message(m) => {
                let body = match m.full_name() {
                    "google.protobuf.FieldMask" => self.field_mask(),
                    "google.protobuf.Timestamp" => self.timestamp(),
                    _ if depth >= 4 => Vec::new(),
                    _ => self.message(&m, depth + 1),
                };
                put_len(out, n, &body);
            }
            Kind::Enum(e) => {
                let known: Vec<i32> = e.values().map(|v| v.number()).collect();
                let v = match self.rng.random_range(0..10) {
                    0 => -1,
                    1 => i32::MIN,
                    2 => i32::MAX,
                    3 => 99,
                    _ => *self.pick(&known),
                };
                put_uint(out, n, i64::from(v) as u64);
            }
            Kind::Bool => {
                let v = *self.pick(&[0, 1, 1, 0, 2, u64::MAX]);
                put_uint(out, n, v);
            }
            Kind::Int32 | Kind::Int64 => {
                let v: i64 = match self.rng.random_range(0..10) {
                    0 => i64::from(i32::MIN),
                    1 => i64::from(i32::MAX),
                    2 => -1,
                    3 => i64::MIN,
                    4 => i64::MAX,
                    5 => self.rng.random_range(-1000..1000),
                    _ => *self.pick(&[0, 1, 7, 50, 499, 500, 501]),
                };
                put_uint(out, n, v as u64);
            }
            Kind::Uint32 => {
                let v = self.u32_for(f.name());
                put_uint(out, n, v);
            }
            Kind::Uint64 => {
                let v = match self.rng.random_range(0..6) {
                    0 => u64::MAX,
                    1 => i64::MAX as u64,
                    2 => self.rng.random(),
                    _ => *self.pick(&[0, 1, 2, 1000]),
                };
                put_uint(out, n, v);
            }
            Kind::Sint32 | Kind::Sint64 => {
                let v: i64 = self.rng.random_range(-1000..1000);
                put_uint(out, n, ((v << 1) ^ (v >> 63)) as u64);
            }
            Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => {
                put_key(out, n, 5);
                out.extend_from_slice(&self.rng.random::<u32>().to_le_bytes());
            }
            Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => {
                put_key(out, n, 1);
                out.extend_from_slice(&self.rng.random::<u64>().to_le_bytes());
            }
        }
    }

    fn u32_for(&mut self, name: &str) -> u64 {
        let boundary: &[u64] = match name {
            "port" => &[0, 1, 65535, 65536, u32::MAX as u64, 1 << 32],
            "ttl_seconds" => &[0, 1, 4, 5, 30, 3600, 3601, u32::MAX as u64],
            "poll_interval_seconds" => &[0, 4, 5, 60, 86400, 86401, u32::MAX as u64],
            "system_id" => &[0, 10, 99, 100, u32::MAX as u64],
            "set_priority" => &[0, 1, 5, 6, u32::MAX as u64],
            _ => &[0, 1, 2, 5, 100, u32::MAX as u64, 1 << 32],
        };
        if name == "port" && self.rng.random_bool(0.4) {
            return u64::from(self.closed_port);
        }
        if name != "port" && self.rng.random_bool(0.2) {
            return u64::from(self.rng.random::<u32>());
        }
        *self.pick(boundary)
    }

    fn timestamp(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let seconds = *self.pick(&[0, -1, i64::MIN, i64::MAX, 253_402_300_800, 1_700_000_000]);
        let nanos = *self.pick(&[0i64, -1, 999_999_999, 1_000_000_000, i64::from(i32::MIN)]);
        put_uint(&mut out, 1, seconds as u64);
        put_uint(&mut out, 2, nanos as u64);
        out
    }

    fn field_mask(&mut self) -> Vec<u8> {
        const ODD: &[&str] = &[
            "",
            ".",
            "..",
            "nope",
            "id",
            "create_time",
            "update_time",
            "inbound.",
            ".inbound",
            "inbound..host",
            "inbound.nope",
            "name.x",
            "domains.x",
            "inbound.oauth2.scopes.x",
            "inbound.has_password",
            "outbound.oauth2.has_refresh_token",
            "INBOUND.HOST",
            "inbound.host\u{0}",
            "inbound.oauth2.client_secret",
            "outbound.password",
            "inbound.port.x.y.z",
        ];
        let mut out = Vec::new();
        let n = self.rng.random_range(0..=4);
        let mut chosen = Vec::new();
        for _ in 0..n {
            let path = match self.rng.random_range(0..10) {
                0..=4 => self.pick(&self.paths.clone()).clone(),
                5..=7 => (*self.pick(ODD)).to_owned(),
                8 => chosen.last().cloned().unwrap_or_default(), // a duplicate
                _ => String::from_utf8_lossy(&self.string("paths")).into_owned(),
            };
            chosen.push(path);
        }
        for p in &chosen {
            put_len(&mut out, 1, p.as_bytes());
        }
        out
    }

    fn string(&mut self, name: &str) -> Vec<u8> {
        if self.rng.random_bool(0.03) {
            // Invalid UTF-8 where the wire allows any bytes: must not decode.
            return (*self.pick(&[&b"\xff\xfe"[..], b"a\xc3(b", b"\xed\xa0\x80", b"\xc0\xaf", b"abc\x80"]))
                .to_vec();
        }
        if !self.huge_used && self.rng.random_bool(0.01) {
            self.huge_used = true;
            return "a".repeat(HUGE).into_bytes();
        }
        let specific: Option<String> = match name {
            "id"
            | "mailbox_id"
            | "mailbox_ids"
            | "queue_id"
            | "fallback_queue_id"
            | "company_id"
            | "outbound_mailbox_id"
            | "default_outbound_mailbox_id"
            | "set_queue_id"
                if self.rng.random_bool(0.7) =>
            {
                Some(match self.rng.random_range(0..5) {
                    0 => uuid::Uuid::now_v7().to_string(),
                    1 => String::new(),
                    _ => self.pick(&self.ids.clone()).clone(),
                })
            }
            "host" if self.rng.random_bool(0.7) => Some(
                (*self.pick(&["127.0.0.1", "localhost", "::1", "nonexistent.invalid", "", "a b", "x/y"]))
                    .to_owned(),
            ),
            "token_url" if self.rng.random_bool(0.7) => Some(match self.rng.random_range(0..4) {
                0 => format!("http://127.0.0.1:{}/token", self.closed_port),
                1 => "ftp://x.invalid/".to_owned(),
                2 => "https://".to_owned(),
                _ => "http://nonexistent.invalid/token".to_owned(),
            }),
            "pattern" if self.rng.random_bool(0.6) => Some(
                (*self.pick(&[
                    "(",
                    "[a-",
                    "(a+)+$",
                    "a{1000}{1000}",
                    "\\",
                    "(?P<x>",
                    "^x$",
                    ".*",
                    "(?i)spam",
                ]))
                .to_owned(),
            ),
            "address" | "from_address" | "reply_to" | "return_path" | "read_receipt_to" | "to"
                if self.rng.random_bool(0.6) =>
            {
                Some(
                    (*self.pick(&[
                        "support@desk.example",
                        "a@b",
                        "@desk.example",
                        "a@.example",
                        "a@example.",
                        "a b@desk.example",
                        "x@desk.example\r\nBcc: victim@evil.example",
                        "<a@b.example>",
                        "a@b.example,c@d.example",
                        "üser@dësk.example",
                    ]))
                    .to_owned(),
                )
            }
            _ => None,
        };
        if let Some(s) = specific {
            return s.into_bytes();
        }
        const NASTY: &[&str] = &[
            "",
            " ",
            "x",
            "INBOX",
            "\u{0}",
            "a\u{0}b",
            "\r\n",
            "line\r\nBcc: victim@evil.example",
            "\t",
            "ü日本語🙂",
            "\u{202e}override",
            "\u{feff}bom",
            "../../etc/passwd",
            "' OR '1'='1",
            "%00%0d%0a",
            "{{ticket_number}}",
            "$(reboot)",
            "settings",
            "Ticket#",
        ];
        match self.rng.random_range(0..10) {
            0..=4 => (*self.pick(NASTY)).as_bytes().to_vec(),
            5 => "n".repeat(*self.pick(&[199, 200, 201, 253, 254, 5000])).into_bytes(),
            6 => {
                let len = self.rng.random_range(0..20);
                (0..len).map(|_| self.random_char()).collect::<String>().into_bytes()
            }
            _ => {
                let len = self.rng.random_range(1..24);
                (0..len)
                    .map(|_| char::from(self.rng.random_range(0x20u8..0x7f)))
                    .collect::<String>()
                    .into_bytes()
            }
        }
    }

    fn random_char(&mut self) -> char {
        let ranges: &[(u32, u32)] =
            &[(0, 0x20), (0x7f, 0xa0), (0x20, 0x7f), (0x100, 0x2fff), (0xe000, 0xfffd), (0x1f300, 0x1faff)];
        let (lo, hi) = *self.pick(ranges);
        char::from_u32(self.rng.random_range(lo..hi)).unwrap_or('?')
    }
}

/// Field paths of every deskmail message (`inbound.oauth2.client_id`), three levels deep.
fn all_paths(pool: &DescriptorPool) -> Vec<String> {
    fn walk(desc: &MessageDescriptor, prefix: &str, depth: u32, out: &mut BTreeSet<String>) {
        for f in desc.fields() {
            let path = format!("{prefix}{}", f.name());
            out.insert(path.clone());
            if let Kind::Message(m) = f.kind()
                && depth < 3
                && m.package_name() == "deskmail.v1"
                && !f.is_list()
            {
                walk(&m, &format!("{path}."), depth + 1, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for m in pool.all_messages().filter(|m| m.package_name() == "deskmail.v1") {
        walk(&m, "", 0, &mut out);
    }
    out.into_iter().collect()
}

/// Garbage request bodies: random bytes and a few malformed protobuf classics.
fn garbage(rng: &mut StdRng) -> Vec<u8> {
    let classics: &[&[u8]] = &[
        b"",
        b"\x00",
        b"\x08",                                         // a varint field with no value
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", // a varint too long
        b"\x0a\xff\xff\xff\xff\x0f",                     // a length far past the end
        b"\x0b",                                         // a group that never ends
        b"\x0c",                                         // an end-group with no start
        b"\x0e",                                         // wire type 6
        b"\x0f",                                         // wire type 7
        b"\x0a\x02\xff\xfe",                             // field 1 as invalid UTF-8
        b"\x12\x05\x0a\x03\xc3\x28\x41",                 // nested invalid UTF-8
        b"\x00\x01",                                     // field number 0
    ];
    match rng.random_range(0..7) {
        0 => classics[rng.random_range(0..classics.len())].to_vec(),
        1 => (0..rng.random_range(0..16)).map(|_| rng.random()).collect(),
        2 => (0..rng.random_range(16..512)).map(|_| rng.random()).collect(),
        3 => (0..4096).map(|_| rng.random()).collect(),
        4 => {
            // Unknown groups nested 1,000 deep (field 1000).
            let mut v = b"\xc3\x3e".repeat(1000);
            if rng.random_bool(0.5) {
                v.extend(b"\xc4\x3e".repeat(1000));
            }
            v
        }
        5 => {
            let mut v = b"\x0a\x05hello".to_vec();
            v.extend((0..rng.random_range(1..32)).map(|_| rng.random::<u8>()));
            v
        }
        _ => (0..rng.random_range(1..64)).map(|_| rng.random_range(0x20u8..0x7f)).collect(),
    }
}

// ---------------------------------------------------------------------------------------
// The sweep.

struct Fixtures {
    queue: pb::Queue,
    mailbox: pb::Mailbox,
    company: pb::Company,
    contract: pb::Contract,
    filter: pb::Filter,
    address: pb::SystemAddress,
}

fn closed_port() -> u32 {
    u32::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

fn valid_mailbox(name: &str, queue_id: &str, port: u32) -> pb::Mailbox {
    pb::Mailbox {
        name: name.to_owned(),
        inbound: Some(pb::InboundSettings {
            protocol: pb::Protocol::Imap as i32,
            host: "127.0.0.1".into(),
            port,
            security: pb::Security::None as i32,
            auth: pb::AuthMethod::Password as i32,
            username: "support".into(),
            password: "secret".into(),
            dispatch_mode: pb::DispatchMode::ByQueue as i32,
            queue_id: queue_id.to_owned(),
            ..Default::default()
        }),
        outbound: Some(pb::OutboundSettings {
            host: "127.0.0.1".into(),
            port,
            security: pb::Security::None as i32,
            auth: pb::AuthMethod::None as i32,
            from_address: "support@desk.example".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn fixtures(admin: &Admin, port: u32) -> Fixtures {
    let queue = admin.create_queue(pb::Queue { name: "fuzz-queue".into(), ..Default::default() }).await;
    let mailbox = admin.create_mailbox(valid_mailbox("fuzz-mailbox", &queue.id, port)).await;
    let company = admin
        .companies()
        .create_company(pb::CreateCompanyRequest {
            company: Some(pb::Company {
                name: "fuzz-company".into(),
                domains: vec!["customer.example".into()],
                outbound_mailbox_id: mailbox.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let contract = admin
        .contracts()
        .create_contract(pb::CreateContractRequest {
            contract: Some(pb::Contract {
                name: "fuzz-contract".into(),
                company_id: company.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let filter = admin
        .filters()
        .create_filter(pb::CreateFilterRequest {
            filter: Some(pb::Filter {
                name: "fuzz-filter".into(),
                header: "Subject".into(),
                pattern: "(?i)spam".into(),
                action: Some(pb::FilterAction { set_queue_id: queue.id.clone(), ..Default::default() }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let address = admin
        .addresses()
        .create_system_address(pb::CreateSystemAddressRequest {
            system_address: Some(pb::SystemAddress {
                address: "support@desk.example".into(),
                queue_id: queue.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    Fixtures { queue, mailbox, company, contract, filter, address }
}

fn bearer_of(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

/// The right token for a method: admin, or for daemon methods either.
fn token_for(access: Access, rng: &mut StdRng) -> Vec<u8> {
    match access {
        Access::Any if rng.random_bool(0.7) => bearer_of(DAEMON),
        _ => bearer_of(ADMIN),
    }
}

fn hex_head(bytes: &[u8]) -> String {
    let head: String = bytes.iter().take(48).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes: {head}{}", bytes.len(), if bytes.len() > 48 { "..." } else { "" })
}

struct Failure(String);

async fn sweep(db: Db) {
    let started = Instant::now();
    let seed: u64 = std::env::var("CONFIGD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let cases = cases();
    let pool = pool();
    let configd = Configd::start(db).await;
    let admin = configd.admin().await;
    let port = closed_port();
    let fx = fixtures(&admin, port).await;
    let raw = Raw { channel: configd.channel().await };
    let mut ids = vec![
        fx.queue.id.clone(),
        fx.queue.name.clone(),
        fx.mailbox.id.clone(),
        fx.mailbox.name.clone(),
        fx.company.id.clone(),
        fx.contract.id.clone(),
        fx.filter.id.clone(),
        fx.address.id.clone(),
        fx.address.address.clone(),
    ];
    ids.extend(["settings", "a\u{0}b", "\r\n", "' OR '1'='1"].map(str::to_owned));
    let paths = all_paths(&pool);

    // The valid requests of the boundary table are the templates that mutated requests
    // start from.
    let valid: Vec<(&str, Vec<u8>)> = boundary_cases(&fx, port)
        .into_iter()
        .filter(|c| c.code == Code::Ok)
        .map(|c| (c.method, c.body))
        .collect();
    // Every request is built from (seed, method, case) alone, so that a failure can be
    // replayed with CONFIGD_FUZZ_SEED whatever ran beside it.
    let mut jobs = Vec::new();
    for (mi, method) in methods(&pool).into_iter().enumerate() {
        let name = method_name(&method);
        let access = access_of(&name).unwrap_or_else(|| panic!("{name} is not in METHODS"));
        for case in 0..cases * 3 / 2 {
            let mut rng = StdRng::seed_from_u64(seed ^ ((mi as u64) << 32) ^ case as u64);
            let (body, label) = if case < cases {
                let mut g = Gen {
                    rng: StdRng::seed_from_u64(rng.random()),
                    ids: ids.clone(),
                    paths: paths.clone(),
                    closed_port: port,
                    huge_used: false,
                };
                let templates: Vec<&Vec<u8>> =
                    valid.iter().filter(|(m, _)| *m == name).map(|(_, body)| body).collect();
                if case % 2 == 1 && !templates.is_empty() {
                    // A valid request with one to three fields changed somewhere.
                    let mut body = templates[g.rng.random_range(0..templates.len())].clone();
                    for _ in 0..g.rng.random_range(1..=3) {
                        body.extend(g.mutation(&method.input(), 0));
                    }
                    (frame(&body), "mutated valid request")
                } else {
                    (frame(&g.message(&method.input(), 0)), "random message")
                }
            } else {
                (frame(&garbage(&mut rng)), "garbage body")
            };
            let token = token_for(access, &mut rng);
            jobs.push((name.clone(), method.clone(), case, label, body, token));
        }
    }
    // The targeted cases first, while the fixtures are as created; the random ones may
    // rename or delete them.
    let mut targeted = boundaries(&raw, &pool, &fx, port).await;
    targeted.extend(framing(&raw, &pool).await);
    targeted.extend(auth(&raw, &pool).await);
    // Deletes last, so that the other methods meet the fixtures.
    jobs.sort_by_key(|job| job.0.contains("/Delete"));
    let total = jobs.len();
    let results = futures::stream::iter(jobs)
        .map(|(name, method, case, label, body, token)| {
            let raw = raw.clone();
            async move {
                let streaming = method.is_server_streaming();
                let result = raw.call(&name, Some(&token), body.clone(), streaming).await;
                let code = result.as_ref().ok().map(|r| r.status.code());
                let verdict = result.and_then(|r| check(&r, WELL_FORMED, &method.output()));
                let failure = verdict.err().map(|why| {
                    Failure(format!("{name} case {case} ({label}, request {}): {why}", hex_head(&body)))
                });
                (name, code, failure)
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let mut answers: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (name, code, _) in &results {
        let code = code.map_or("no answer".to_owned(), |c| format!("{c:?}"));
        *answers.entry(name.clone()).or_default().entry(code).or_default() += 1;
    }
    let failures: Vec<Failure> = results.into_iter().filter_map(|(_, _, f)| f).collect();
    // The generator reaches past decoding into the handlers: most methods get some requests
    // through to an OK, and every method gets some INVALID_ARGUMENT.
    let with_ok = answers.values().filter(|codes| codes.contains_key("Ok")).count();
    let without_invalid: Vec<_> =
        answers.iter().filter(|(_, codes)| !codes.contains_key("InvalidArgument")).map(|(n, _)| n).collect();
    let mut failures = targeted.into_iter().chain(failures).collect::<Vec<_>>();
    if with_ok * 3 < answers.len() * 2 {
        failures
            .push(Failure(format!("only {with_ok} methods answered OK to a random request: {answers:#?}")));
    }
    if !without_invalid.is_empty() {
        failures.push(Failure(format!("never INVALID_ARGUMENT: {without_invalid:?}")));
    }
    failures.extend(still_healthy(&configd, &admin).await);
    let report: Vec<String> = failures.iter().map(|f| f.0.clone()).collect();
    assert!(
        report.is_empty(),
        "{} of the answers were wrong (seed {seed}, CONFIGD_FUZZ_SEED={seed} replays):\n{}",
        report.len(),
        report.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "swept {} methods: {total} random and garbage requests plus framing, auth and boundary cases \
         in {:?} (seed {seed}); answers: {answers:?}",
        METHODS.len(),
        started.elapsed()
    );
    configd.stop().await;
}

/// Broken gRPC framing, for every method.
async fn framing(raw: &Raw, pool: &DescriptorPool) -> Vec<Failure> {
    let mut failures = Vec::new();
    let bodies: Vec<(&str, Vec<u8>, &[Code])> = vec![
        ("no message at all", Vec::new(), &[Code::InvalidArgument]),
        ("a cut frame header", vec![0, 0, 0], &[Code::InvalidArgument]),
        ("a frame shorter than its length", vec![0, 0, 0, 0, 100, 1, 2, 3], &[Code::InvalidArgument]),
        ("a frame longer than 4 MiB", vec![0, 0, 0x50, 0, 0, 1], &[Code::ResourceExhausted]),
        ("two messages", [frame(b""), frame(b"")].concat(), WELL_FORMED),
        // The gRPC compression spec requires INTERNAL for a compressed flag without an
        // encoding; flags other than 0 and 1 are the same protocol error.
        ("a compressed flag without grpc-encoding", vec![1, 0, 0, 0, 1, 0], &[Code::Internal]),
        ("compression flag 7", vec![7, 0, 0, 0, 0], &[Code::Internal]),
    ];
    for method in methods(pool) {
        let name = method_name(&method);
        let access = access_of(&name).unwrap_or(Access::Admin);
        let token = bearer_of(if access == Access::Any { DAEMON } else { ADMIN });
        for (label, body, allowed) in &bodies {
            let streaming = method.is_server_streaming();
            let result = raw.call(&name, Some(&token), body.clone(), streaming).await;
            if let Err(why) = result.and_then(|r| check(&r, allowed, &method.output())) {
                failures.push(Failure(format!("{name} ({label}): {why}")));
            }
        }
    }
    failures
}

/// Missing, wrong and malformed tokens, and the daemon token where only admins may call.
async fn auth(raw: &Raw, pool: &DescriptorPool) -> Vec<Failure> {
    let mut failures = Vec::new();
    let wrong: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("no authorization", None),
        ("a wrong token", Some(b"Bearer wrong".to_vec())),
        ("an empty token", Some(b"Bearer ".to_vec())),
        ("Basic auth", Some(b"Basic YWRtaW46YWRtaW4=".to_vec())),
        ("the admin token without Bearer", Some(ADMIN.as_bytes().to_vec())),
        ("non-ASCII bytes", Some(b"Bearer \xff\xfe\x80".to_vec())),
        ("a 4 KB token", Some(format!("Bearer {}", "t".repeat(4096)).into_bytes())),
        ("the admin token with a suffix", Some(format!("Bearer {ADMIN}x").into_bytes())),
    ];
    for method in methods(pool) {
        let name = method_name(&method);
        let access = access_of(&name).unwrap_or(Access::Admin);
        let streaming = method.is_server_streaming();
        let out = method.output();
        for (label, header) in &wrong {
            let r = raw.call(&name, header.as_deref(), frame(b""), streaming).await;
            if let Err(why) = r.and_then(|r| check(&r, &[Code::Unauthenticated], &out)) {
                failures.push(Failure(format!("{name} with {label}: {why}")));
            }
        }
        let daemon_expect: &[Code] = match access {
            Access::Admin | Access::AdminMethod => &[Code::PermissionDenied],
            Access::Any => &[Code::Ok, Code::InvalidArgument, Code::NotFound],
        };
        let r = raw.call(&name, Some(&bearer_of(DAEMON)), frame(b""), streaming).await;
        if let Err(why) = r.and_then(|r| check(&r, daemon_expect, &out)) {
            failures.push(Failure(format!("{name} with the daemon token: {why}")));
        }
        // The admin token is let in (lower-case `bearer` too): whatever comes back is not
        // about auth, and not UNIMPLEMENTED (configd serves every method of the protos).
        let r = raw.call(&name, Some(format!("bearer {ADMIN}").as_bytes()), frame(b""), streaming).await;
        if let Err(why) = r.and_then(|r| check(&r, WELL_FORMED, &out)) {
            failures.push(Failure(format!("{name} with the admin token: {why}")));
        }
    }
    failures
}

/// One request with the answer it must get: the code, and for INVALID_ARGUMENT the field a
/// violation names.
struct Case {
    method: &'static str,
    label: String,
    body: Vec<u8>,
    code: Code,
    field: Option<&'static str>,
}

fn case<M: Message>(
    method: &'static str,
    label: &str,
    msg: M,
    code: Code,
    field: Option<&'static str>,
) -> Case {
    Case { method, label: label.to_owned(), body: msg.encode_to_vec(), code, field }
}

fn bad<M: Message>(method: &'static str, label: &str, msg: M, field: &'static str) -> Case {
    case(method, label, msg, Code::InvalidArgument, Some(field))
}

/// Per-field boundary values: just inside (OK) and just outside (INVALID_ARGUMENT naming the
/// field), plus the other answers a well-formed request can get.
fn boundary_cases(fx: &Fixtures, port: u32) -> Vec<Case> {
    const CM: &str = "deskmail.v1.MailboxService/CreateMailbox";
    const UM: &str = "deskmail.v1.MailboxService/UpdateMailbox";
    const CQ: &str = "deskmail.v1.QueueService/CreateQueue";
    let q = &fx.queue.id;
    let mb = |name: &str, f: &dyn Fn(&mut pb::Mailbox)| {
        let mut m = valid_mailbox(name, q, port);
        f(&mut m);
        pb::CreateMailboxRequest { mailbox: Some(m) }
    };
    let queue =
        |name: String| pb::CreateQueueRequest { queue: Some(pb::Queue { name, ..Default::default() }) };
    let update = |paths: &[&str]| pb::UpdateMailboxRequest {
        mailbox: Some(pb::Mailbox {
            id: fx.mailbox.id.clone(),
            name: "fuzz-mailbox".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
    };
    let filter = |f: &dyn Fn(&mut pb::Filter)| {
        let mut x = pb::Filter {
            name: format!("bf-{}", uuid::Uuid::now_v7()),
            header: "Subject".into(),
            pattern: "x".into(),
            action: Some(pb::FilterAction { set_priority: 1, ..Default::default() }),
            ..Default::default()
        };
        f(&mut x);
        pb::CreateFilterRequest { filter: Some(x) }
    };
    let settings = |f: &dyn Fn(&mut pb::Settings)| {
        let mut s = pb::Settings {
            ticket_hook: "Ticket#".into(),
            number_format: pb::NumberFormat::Date as i32,
            system_id: 10,
            ..Default::default()
        };
        f(&mut s);
        pb::UpdateSettingsRequest { settings: Some(s), update_mask: None }
    };
    let report = |f: &dyn Fn(&mut pb::ReportStatusRequest)| {
        let mut r = pb::ReportStatusRequest {
            mailbox_id: fx.mailbox.id.clone(),
            direction: pb::Direction::Inbound as i32,
            state: pb::MailboxState::Active as i32,
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let leases = |holder: &str, ttl: u32, max: u32| pb::AcquireLeasesRequest {
        holder: holder.to_owned(),
        ttl_seconds: ttl,
        max,
    };
    use Code::*;
    vec![
        // Mailboxes.
        case(CM, "a valid mailbox", mb("b-valid", &|_| {}), Ok, None),
        case(CM, "port 65535", mb("b-65535", &|m| m.inbound.as_mut().unwrap().port = 65535), Ok, None),
        bad(
            CM,
            "inbound port 0",
            mb("b1", &|m| m.inbound.as_mut().unwrap().port = 0),
            "mailbox.inbound.port",
        ),
        bad(
            CM,
            "inbound port 65536",
            mb("b2", &|m| m.inbound.as_mut().unwrap().port = 65536),
            "mailbox.inbound.port",
        ),
        bad(
            CM,
            "outbound port u32::MAX",
            mb("b3", &|m| m.outbound.as_mut().unwrap().port = u32::MAX),
            "mailbox.outbound.port",
        ),
        case(CM, "name of 200 characters", mb(&"n".repeat(200), &|_| {}), Ok, None),
        bad(CM, "name of 201 characters", mb(&"n".repeat(201), &|_| {}), "mailbox.name"),
        bad(CM, "an empty name", mb("", &|_| {}), "mailbox.name"),
        bad(CM, "CR/LF in the name", mb("a\r\nb", &|_| {}), "mailbox.name"),
        bad(CM, "NUL in the name", mb("a\0b", &|_| {}), "mailbox.name"),
        case(CM, "a duplicate name", mb("fuzz-mailbox", &|_| {}), AlreadyExists, None),
        bad(
            CM,
            "no part at all",
            pb::CreateMailboxRequest {
                mailbox: Some(pb::Mailbox { name: "b4".into(), ..Default::default() }),
            },
            "mailbox.inbound",
        ),
        bad(CM, "no mailbox", pb::CreateMailboxRequest { mailbox: None }, "mailbox.name"),
        bad(
            CM,
            "protocol 99",
            mb("b5", &|m| m.inbound.as_mut().unwrap().protocol = 99),
            "mailbox.inbound.protocol",
        ),
        bad(
            CM,
            "security -1",
            mb("b6", &|m| m.inbound.as_mut().unwrap().security = -1),
            "mailbox.inbound.security",
        ),
        bad(
            CM,
            "auth i32::MIN",
            mb("b7", &|m| m.outbound.as_mut().unwrap().auth = i32::MIN),
            "mailbox.outbound.auth",
        ),
        bad(
            CM,
            "dispatch mode 7",
            mb("b8", &|m| m.inbound.as_mut().unwrap().dispatch_mode = 7),
            "mailbox.inbound.dispatch_mode",
        ),
        case(
            CM,
            "poll interval 5",
            mb("b-poll5", &|m| m.inbound.as_mut().unwrap().poll_interval_seconds = 5),
            Ok,
            None,
        ),
        bad(
            CM,
            "poll interval 4",
            mb("b9", &|m| m.inbound.as_mut().unwrap().poll_interval_seconds = 4),
            "mailbox.inbound.poll_interval_seconds",
        ),
        bad(
            CM,
            "poll interval 86401",
            mb("b10", &|m| m.inbound.as_mut().unwrap().poll_interval_seconds = 86401),
            "mailbox.inbound.poll_interval_seconds",
        ),
        bad(
            CM,
            "a host of 254 characters",
            mb("b11", &|m| m.inbound.as_mut().unwrap().host = "h".repeat(254)),
            "mailbox.inbound.host",
        ),
        bad(
            CM,
            "a 1 MB host",
            mb("b12", &|m| m.inbound.as_mut().unwrap().host = "h".repeat(HUGE)),
            "mailbox.inbound.host",
        ),
        bad(
            CM,
            "a host with a space",
            mb("b13", &|m| m.outbound.as_mut().unwrap().host = "a b".into()),
            "mailbox.outbound.host",
        ),
        bad(
            CM,
            "an empty host",
            mb("b14", &|m| m.outbound.as_mut().unwrap().host = String::new()),
            "mailbox.outbound.host",
        ),
        bad(
            CM,
            "a from address without @",
            mb("b15", &|m| m.outbound.as_mut().unwrap().from_address = "support".into()),
            "mailbox.outbound.from_address",
        ),
        bad(
            CM,
            "CRLF in the reply-to",
            mb("b16", &|m| m.outbound.as_mut().unwrap().reply_to = "a@b.example\r\nBcc: c@d.example".into()),
            "mailbox.outbound.reply_to",
        ),
        bad(
            CM,
            "header injection in the from name",
            mb("b17", &|m| m.outbound.as_mut().unwrap().from_name = "x\r\nBcc: victim@evil.example".into()),
            "mailbox.outbound.from_name",
        ),
        bad(
            CM,
            "by queue without a queue",
            mb("b18", &|m| m.inbound.as_mut().unwrap().queue_id = String::new()),
            "mailbox.inbound.queue_id",
        ),
        bad(
            CM,
            "an unknown queue",
            mb("b19", &|m| m.inbound.as_mut().unwrap().queue_id = "no-such-queue".into()),
            "mailbox.inbound.queue_id",
        ),
        bad(
            CM,
            "a 1 MB unknown queue id",
            mb("b20", &|m| m.inbound.as_mut().unwrap().queue_id = "q".repeat(HUGE)),
            "mailbox.inbound.queue_id",
        ),
        bad(
            CM,
            "password auth without a password",
            mb("b21", &|m| m.inbound.as_mut().unwrap().password = String::new()),
            "mailbox.inbound.password",
        ),
        bad(
            CM,
            "OAuth2 without settings",
            mb("b22", &|m| m.inbound.as_mut().unwrap().auth = pb::AuthMethod::Oauth2 as i32),
            "mailbox.inbound.oauth2",
        ),
        bad(
            CM,
            "a control character in the folder",
            mb("b23", &|m| m.inbound.as_mut().unwrap().folder = "IN\u{7}BOX".into()),
            "mailbox.inbound.folder",
        ),
        // Field masks.
        case(
            UM,
            "a nested path",
            update(&["inbound.username"]),
            InvalidArgument,
            Some("mailbox.inbound.username"),
        ),
        case(UM, "a duplicate path", update(&["name", "name"]), Ok, None),
        bad(UM, "an unknown path", update(&["nope"]), "update_mask"),
        bad(UM, "an empty path", update(&[""]), "update_mask"),
        bad(UM, "an output-only path", update(&["id"]), "update_mask"),
        bad(UM, "a path below a scalar", update(&["name.x"]), "update_mask"),
        bad(UM, "an unknown nested path", update(&["inbound.nope"]), "update_mask"),
        bad(UM, "a 1 MB path", update(&[&"p".repeat(HUGE)]), "update_mask"),
        bad(UM, "no id", pb::UpdateMailboxRequest::default(), "mailbox.id"),
        case(
            UM,
            "an unknown id",
            pb::UpdateMailboxRequest {
                mailbox: Some(pb::Mailbox { id: "nope".into(), ..Default::default() }),
                update_mask: None,
            },
            NotFound,
            None,
        ),
        case(
            UM,
            "an id with NUL",
            pb::UpdateMailboxRequest {
                mailbox: Some(pb::Mailbox { id: "a\0b".into(), ..Default::default() }),
                update_mask: None,
            },
            NotFound,
            None,
        ),
        case(
            UM,
            "a 1 MB id",
            pb::UpdateMailboxRequest {
                mailbox: Some(pb::Mailbox { id: "i".repeat(HUGE), ..Default::default() }),
                update_mask: None,
            },
            NotFound,
            None,
        ),
        // Queues.
        case(CQ, "a valid queue", queue("bq-valid".into()), Ok, None),
        bad(CQ, "an empty name", queue(String::new()), "queue.name"),
        bad(CQ, "a blank name", queue("   ".into()), "queue.name"),
        bad(CQ, "a 1 MB name", queue("q".repeat(HUGE)), "queue.name"),
        bad(
            CQ,
            "CR/LF in the subject",
            pb::CreateQueueRequest {
                queue: Some(pb::Queue {
                    name: "bq1".into(),
                    auto_reply_subject: "a\r\nb".into(),
                    ..Default::default()
                }),
            },
            "queue.auto_reply_subject",
        ),
        case(
            "deskmail.v1.QueueService/DeleteQueue",
            "a queue in use",
            pb::DeleteRequest { id: fx.queue.id.clone(), force: true },
            FailedPrecondition,
            None,
        ),
        case(
            "deskmail.v1.QueueService/GetQueue",
            "an unknown queue",
            pb::GetRequest { id: "nope".into() },
            NotFound,
            None,
        ),
        case(
            "deskmail.v1.QueueService/GetQueue",
            "a 1 MB id",
            pb::GetRequest { id: "i".repeat(HUGE) },
            NotFound,
            None,
        ),
        case(
            "deskmail.v1.QueueService/DeleteQueue",
            "an id with NUL",
            pb::DeleteRequest { id: "a\0b".into(), force: false },
            NotFound,
            None,
        ),
        // Lists.
        bad(
            "deskmail.v1.QueueService/ListQueues",
            "page size -1",
            pb::ListRequest { page_size: -1, page_token: String::new() },
            "page_size",
        ),
        case(
            "deskmail.v1.QueueService/ListQueues",
            "page size i32::MAX",
            pb::ListRequest { page_size: i32::MAX, page_token: String::new() },
            Ok,
            None,
        ),
        bad(
            "deskmail.v1.MailboxService/ListMailboxes",
            "a made-up page token",
            pb::ListRequest { page_size: 1, page_token: "garbage!".into() },
            "page_token",
        ),
        bad(
            "deskmail.v1.FilterService/ListFilters",
            "a page token without a separator",
            pb::ListRequest { page_size: 1, page_token: "YQ".into() },
            "page_token",
        ),
        // Valid requests of the other kinds (also the templates of mutated requests).
        case(
            "deskmail.v1.SystemAddressService/CreateSystemAddress",
            "a valid address",
            pb::CreateSystemAddressRequest {
                system_address: Some(pb::SystemAddress {
                    address: "Sales@Desk.example".into(),
                    display_name: "Sales".into(),
                    queue_id: q.clone(),
                    ..Default::default()
                }),
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.SystemAddressService/UpdateSystemAddress",
            "a new display name",
            pb::UpdateSystemAddressRequest {
                system_address: Some(pb::SystemAddress {
                    id: fx.address.id.clone(),
                    display_name: "Support ü".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.CompanyService/CreateCompany",
            "a valid company",
            pb::CreateCompanyRequest {
                company: Some(pb::Company {
                    name: "bc-valid".into(),
                    domains: vec!["@Valid.example".into()],
                    outbound_mailbox_id: fx.mailbox.id.clone(),
                    ..Default::default()
                }),
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.CompanyService/UpdateCompany",
            "new domains",
            pb::UpdateCompanyRequest {
                company: Some(pb::Company {
                    id: fx.company.id.clone(),
                    domains: vec!["a.example".into(), "b.example".into()],
                    ..Default::default()
                }),
                update_mask: None,
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.ContractService/CreateContract",
            "a valid contract",
            pb::CreateContractRequest {
                contract: Some(pb::Contract {
                    name: "bk-valid".into(),
                    company_id: fx.company.id.clone(),
                    outbound_mailbox_id: fx.mailbox.id.clone(),
                    ..Default::default()
                }),
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.ContractService/UpdateContract",
            "a new outbound box",
            pb::UpdateContractRequest {
                contract: Some(pb::Contract {
                    id: fx.contract.id.clone(),
                    outbound_mailbox_id: fx.mailbox.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["outbound_mailbox_id".into()] }),
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.FilterService/UpdateFilter",
            "a new pattern",
            pb::UpdateFilterRequest {
                filter: Some(pb::Filter {
                    id: fx.filter.id.clone(),
                    pattern: "^\\[SPAM\\]".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["pattern".into()] }),
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.QueueService/UpdateQueue",
            "an auto-reply",
            pb::UpdateQueueRequest {
                queue: Some(pb::Queue {
                    id: fx.queue.id.clone(),
                    auto_reply: true,
                    auto_reply_subject: "Re: {{subject}} [{{ticket_number}}]".into(),
                    auto_reply_body: "Thanks\r\n".into(),
                    ..Default::default()
                }),
                update_mask: None,
            },
            Ok,
            None,
        ),
        case(
            UM,
            "a new poll interval",
            pb::UpdateMailboxRequest {
                mailbox: Some(pb::Mailbox {
                    id: fx.mailbox.id.clone(),
                    inbound: Some(pb::InboundSettings { poll_interval_seconds: 30, ..Default::default() }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["inbound.poll_interval_seconds".into()],
                }),
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.MailboxService/GetMailbox",
            "by name",
            pb::GetRequest { id: "fuzz-mailbox".into() },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.CompanyService/GetCompany",
            "by id",
            pb::GetRequest { id: fx.company.id.clone() },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.ContractService/GetContract",
            "by id",
            pb::GetRequest { id: fx.contract.id.clone() },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.FilterService/GetFilter",
            "by id",
            pb::GetRequest { id: fx.filter.id.clone() },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.SystemAddressService/GetSystemAddress",
            "by address",
            pb::GetRequest { id: "support@desk.example".into() },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.StatusService/GetStatus",
            "of the mailbox",
            pb::GetRequest { id: fx.mailbox.id.clone() },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.MailboxService/SendTestEmail",
            "through a closed port",
            pb::SendTestEmailRequest {
                id: fx.mailbox.id.clone(),
                to: "customer@customer.example".into(),
                subject: "ü\r\nBcc: x@y.example".into(),
                body: "\0".into(),
            },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.MailboxService/TestConnection",
            "unsaved settings",
            pb::TestConnectionRequest {
                id: String::new(),
                mailbox: Some(valid_mailbox("unsaved", q, port)),
                direction: 0,
            },
            Ok,
            None,
        ),
        // Addresses, companies, contracts.
        bad(
            "deskmail.v1.SystemAddressService/CreateSystemAddress",
            "not an address",
            pb::CreateSystemAddressRequest {
                system_address: Some(pb::SystemAddress {
                    address: "nope".into(),
                    queue_id: q.clone(),
                    ..Default::default()
                }),
            },
            "system_address.address",
        ),
        bad(
            "deskmail.v1.SystemAddressService/CreateSystemAddress",
            "no queue",
            pb::CreateSystemAddressRequest {
                system_address: Some(pb::SystemAddress {
                    address: "x@desk.example".into(),
                    ..Default::default()
                }),
            },
            "system_address.queue_id",
        ),
        bad(
            "deskmail.v1.CompanyService/CreateCompany",
            "a domain without a dot",
            pb::CreateCompanyRequest {
                company: Some(pb::Company {
                    name: "bc1".into(),
                    domains: vec!["ok.example".into(), "nodot".into()],
                    ..Default::default()
                }),
            },
            "company.domains[1]",
        ),
        bad(
            "deskmail.v1.CompanyService/CreateCompany",
            "an unknown outbound box",
            pb::CreateCompanyRequest {
                company: Some(pb::Company {
                    name: "bc2".into(),
                    outbound_mailbox_id: "nope".into(),
                    ..Default::default()
                }),
            },
            "company.outbound_mailbox_id",
        ),
        case(
            "deskmail.v1.CompanyService/DeleteCompany",
            "a company with contracts",
            pb::DeleteRequest { id: fx.company.id.clone(), force: false },
            FailedPrecondition,
            None,
        ),
        bad(
            "deskmail.v1.ContractService/CreateContract",
            "no company",
            pb::CreateContractRequest {
                contract: Some(pb::Contract { name: "bk1".into(), ..Default::default() }),
            },
            "contract.company_id",
        ),
        // Filters.
        case(
            "deskmail.v1.FilterService/CreateFilter",
            "position i32::MIN",
            filter(&|f| f.position = i32::MIN),
            Ok,
            None,
        ),
        case(
            "deskmail.v1.FilterService/CreateFilter",
            "position i32::MAX",
            filter(&|f| f.position = i32::MAX),
            Ok,
            None,
        ),
        bad(
            "deskmail.v1.FilterService/CreateFilter",
            "a pattern that does not compile",
            filter(&|f| f.pattern = "(".into()),
            "filter.pattern",
        ),
        bad(
            "deskmail.v1.FilterService/CreateFilter",
            "a pattern too big",
            filter(&|f| f.pattern = "a{1000}{1000}".into()),
            "filter.pattern",
        ),
        bad(
            "deskmail.v1.FilterService/CreateFilter",
            "priority 6",
            filter(&|f| f.action.as_mut().unwrap().set_priority = 6),
            "filter.action.set_priority",
        ),
        bad(
            "deskmail.v1.FilterService/CreateFilter",
            "a header with a colon",
            filter(&|f| f.header = "Subject:".into()),
            "filter.header",
        ),
        bad(
            "deskmail.v1.FilterService/CreateFilter",
            "no action",
            filter(&|f| f.action = None),
            "filter.action",
        ),
        // Settings.
        case("deskmail.v1.SettingsService/UpdateSettings", "valid settings", settings(&|_| {}), Ok, None),
        bad(
            "deskmail.v1.SettingsService/UpdateSettings",
            "system id 100",
            settings(&|s| s.system_id = 100),
            "settings.system_id",
        ),
        bad(
            "deskmail.v1.SettingsService/UpdateSettings",
            "number format 99",
            settings(&|s| s.number_format = 99),
            "settings.number_format",
        ),
        bad(
            "deskmail.v1.SettingsService/UpdateSettings",
            "a ticket hook with brackets",
            settings(&|s| s.ticket_hook = "[T]".into()),
            "settings.ticket_hook",
        ),
        bad(
            "deskmail.v1.SettingsService/UpdateSettings",
            "an unknown default box",
            settings(&|s| s.default_outbound_mailbox_id = "nope".into()),
            "settings.default_outbound_mailbox_id",
        ),
        // Status, tokens, leases.
        case("deskmail.v1.StatusService/ReportStatus", "a valid report", report(&|_| {}), Ok, None),
        case(
            "deskmail.v1.StatusService/ReportStatus",
            "u64::MAX messages",
            report(&|r| r.messages = u64::MAX),
            Ok,
            None,
        ),
        case(
            "deskmail.v1.StatusService/ReportStatus",
            "NUL and CR/LF in the message",
            report(&|r| {
                r.message = "a\0b\r\nc".into();
                r.reporter = "\0".into();
                r.state = pb::MailboxState::Error as i32;
                r.reason = 99;
            }),
            Ok,
            None,
        ),
        case(
            "deskmail.v1.StatusService/ReportStatus",
            "a 1 MB message",
            report(&|r| r.message = "m".repeat(HUGE)),
            Ok,
            None,
        ),
        bad("deskmail.v1.StatusService/ReportStatus", "state 0", report(&|r| r.state = 0), "state"),
        bad(
            "deskmail.v1.StatusService/ReportStatus",
            "direction 99",
            report(&|r| r.direction = 99),
            "direction",
        ),
        bad(
            "deskmail.v1.StatusService/ReportStatus",
            "ERROR without a reason",
            report(&|r| r.state = pb::MailboxState::Error as i32),
            "reason",
        ),
        case(
            "deskmail.v1.StatusService/ReportStatus",
            "an unknown mailbox",
            report(&|r| r.mailbox_id = "nope".into()),
            NotFound,
            None,
        ),
        case(
            "deskmail.v1.StatusService/ReportStatus",
            "a mailbox id with NUL",
            report(&|r| r.mailbox_id = "a\0b".into()),
            NotFound,
            None,
        ),
        case(
            "deskmail.v1.StatusService/GetStatus",
            "an id with NUL",
            pb::GetRequest { id: "\0".into() },
            NotFound,
            None,
        ),
        bad(
            "deskmail.v1.StatusService/StoreRefreshToken",
            "direction 0",
            pb::StoreRefreshTokenRequest {
                mailbox_id: fx.mailbox.id.clone(),
                direction: 0,
                refresh_token: "t".into(),
            },
            "direction",
        ),
        bad(
            "deskmail.v1.StatusService/StoreRefreshToken",
            "a blank token",
            pb::StoreRefreshTokenRequest {
                mailbox_id: fx.mailbox.id.clone(),
                direction: 1,
                refresh_token: " \r\n".into(),
            },
            "refresh_token",
        ),
        case(
            "deskmail.v1.StatusService/StoreRefreshToken",
            "a token with NUL",
            pb::StoreRefreshTokenRequest {
                mailbox_id: fx.mailbox.id.clone(),
                direction: 2,
                refresh_token: "a\0b".into(),
            },
            Ok,
            None,
        ),
        bad("deskmail.v1.LeaseService/AcquireLeases", "no holder", leases("", 30, 0), "holder"),
        bad("deskmail.v1.LeaseService/AcquireLeases", "ttl 4", leases("h", 4, 0), "ttl_seconds"),
        bad("deskmail.v1.LeaseService/AcquireLeases", "ttl 3601", leases("h", 3601, 0), "ttl_seconds"),
        case(
            "deskmail.v1.LeaseService/AcquireLeases",
            "ttl 5, max u32::MAX",
            leases("h", 5, u32::MAX),
            Ok,
            None,
        ),
        // Regression cases: NUL reached PostgreSQL text (UNAVAILABLE) before the holder rule.
        bad("deskmail.v1.LeaseService/AcquireLeases", "a holder with NUL", leases("h\0x", 3600, 1), "holder"),
        bad(
            "deskmail.v1.LeaseService/AcquireLeases",
            "a holder of 201 characters",
            leases(&"h".repeat(201), 30, 0),
            "holder",
        ),
        case(
            "deskmail.v1.LeaseService/AcquireLeases",
            "a holder of 200 characters",
            leases(&"h".repeat(200), 30, 1),
            Ok,
            None,
        ),
        bad(
            "deskmail.v1.LeaseService/ReleaseLeases",
            "a holder with NUL",
            pb::ReleaseLeasesRequest { holder: "h\0x".into(), mailbox_ids: vec![] },
            "holder",
        ),
        bad(
            "deskmail.v1.LeaseService/ReleaseLeases",
            "a mailbox id with NUL",
            pb::ReleaseLeasesRequest { holder: "h".into(), mailbox_ids: vec!["ok".into(), "\0".into()] },
            "mailbox_ids[1]",
        ),
        // Connection tests.
        bad(
            "deskmail.v1.MailboxService/TestConnection",
            "neither id nor settings",
            pb::TestConnectionRequest::default(),
            "id",
        ),
        case(
            "deskmail.v1.MailboxService/TestConnection",
            "a closed port",
            pb::TestConnectionRequest { id: fx.mailbox.id.clone(), mailbox: None, direction: 0 },
            Ok,
            None,
        ),
        case(
            "deskmail.v1.MailboxService/TestConnection",
            "direction 99",
            pb::TestConnectionRequest { id: fx.mailbox.id.clone(), mailbox: None, direction: 99 },
            Ok,
            None,
        ),
        bad(
            "deskmail.v1.MailboxService/SendTestEmail",
            "not an address",
            pb::SendTestEmailRequest { id: fx.mailbox.id.clone(), to: "nope".into(), ..Default::default() },
            "to",
        ),
        bad(
            "deskmail.v1.MailboxService/SendTestEmail",
            "header injection in to",
            pb::SendTestEmailRequest {
                id: fx.mailbox.id.clone(),
                to: "a@b.example\r\nBcc: c@d.example".into(),
                ..Default::default()
            },
            "to",
        ),
        case(
            "deskmail.v1.MailboxService/SendTestEmail",
            "an unknown box",
            pb::SendTestEmailRequest { id: "nope".into(), to: "a@b.example".into(), ..Default::default() },
            NotFound,
            None,
        ),
    ]
}

async fn boundaries(raw: &Raw, pool: &DescriptorPool, fx: &Fixtures, port: u32) -> Vec<Failure> {
    let mut failures = Vec::new();
    for c in boundary_cases(fx, port) {
        let method = methods(pool).into_iter().find(|m| method_name(m) == c.method).unwrap();
        let access = access_of(c.method).unwrap();
        let token = bearer_of(if access == Access::Any { DAEMON } else { ADMIN });
        let result = raw.call(c.method, Some(&token), frame(&c.body), false).await;
        let verdict = result.and_then(|r| {
            check(&r, &[c.code], &method.output())?;
            if let Some(field) = c.field {
                let fields: Vec<String> = r
                    .status
                    .get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default();
                if !fields.iter().any(|f| f == field) {
                    return Err(format!(
                        "no violation names {field}: {fields:?} ({:.300})",
                        r.status.message()
                    ));
                }
            }
            Ok(())
        });
        if let Err(why) = verdict {
            failures.push(Failure(format!("{} ({}): {why}", c.method, c.label)));
        }
    }
    failures
}

/// After the sweep: health SERVING, every list pages through to what the snapshot holds,
/// every item is found by id, and writes still work.
async fn still_healthy(configd: &Configd, admin: &Admin) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut health = tonic_health::pb::health_client::HealthClient::new(configd.channel().await);
    match health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await {
        Ok(r)
            if r.get_ref().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 => {}
        other => failures.push(Failure(format!("health after the sweep: {other:?}"))),
    }
    let snapshot = admin.watch().get_snapshot(pb::GetSnapshotRequest {}).await.unwrap().into_inner();
    let mut listed: Vec<String> = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .mailboxes()
            .list_mailboxes(pb::ListRequest { page_size: 3, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.mailboxes.iter().map(|m| m.id.clone()));
        for m in &page.mailboxes {
            let got = admin.mailboxes().get_mailbox(pb::GetRequest { id: m.id.clone() }).await;
            if got.is_err() {
                failures.push(Failure(format!("listed mailbox {} is not found: {got:?}", m.id)));
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let in_snapshot: Vec<String> = snapshot.mailboxes.iter().map(|m| m.id.clone()).collect();
    if listed != in_snapshot || listed.iter().collect::<HashSet<_>>().len() != listed.len() {
        failures
            .push(Failure(format!("paged mailboxes {listed:?} differ from the snapshot's {in_snapshot:?}")));
    }
    for (kind, n) in [
        (
            "queues",
            admin.queues().list_queues(pb::ListRequest::default()).await.map(|r| r.into_inner().total_size),
        ),
        (
            "companies",
            admin
                .companies()
                .list_companies(pb::ListRequest::default())
                .await
                .map(|r| r.into_inner().total_size),
        ),
        (
            "contracts",
            admin
                .contracts()
                .list_contracts(pb::ListRequest::default())
                .await
                .map(|r| r.into_inner().total_size),
        ),
        (
            "filters",
            admin.filters().list_filters(pb::ListRequest::default()).await.map(|r| r.into_inner().total_size),
        ),
        (
            "addresses",
            admin
                .addresses()
                .list_system_addresses(pb::ListRequest::default())
                .await
                .map(|r| r.into_inner().total_size),
        ),
    ] {
        let want = match kind {
            "queues" => snapshot.queues.len(),
            "companies" => snapshot.companies.len(),
            "contracts" => snapshot.contracts.len(),
            "filters" => snapshot.filters.len(),
            _ => snapshot.system_addresses.len(),
        };
        match n {
            Ok(n) if usize::try_from(n).unwrap() == want => {}
            other => failures.push(Failure(format!("{kind}: total {other:?}, snapshot has {want}"))),
        }
    }
    // A contract's company exists (deleting a company took its contracts with it).
    for c in &snapshot.contracts {
        if !snapshot.companies.iter().any(|co| co.id == c.company_id) {
            failures.push(Failure(format!("contract {} belongs to a company that is gone", c.id)));
        }
    }
    if let Err(e) = admin.status().list_status(pb::ListRequest::default()).await {
        failures.push(Failure(format!("ListStatus after the sweep: {e:?}")));
    }
    let name = format!("after-sweep-{}", uuid::Uuid::now_v7());
    match admin
        .queues()
        .create_queue(pb::CreateQueueRequest { queue: Some(pb::Queue { name, ..Default::default() }) })
        .await
    {
        Ok(q) => {
            let id = q.into_inner().id;
            if let Err(e) = admin.queues().delete_queue(pb::DeleteRequest { id, force: false }).await {
                failures.push(Failure(format!("deleting a queue after the sweep: {e:?}")));
            }
        }
        Err(e) => failures.push(Failure(format!("creating a queue after the sweep: {e:?}"))),
    }
    failures
}

crate::on_both_stores!(sweep);
