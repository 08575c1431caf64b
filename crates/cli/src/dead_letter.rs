//! What a dead letter says about itself, read from its AMQP properties and body, and how a
//! replayed copy looks. Pure: no broker here (see `dead_browse.rs` for that).

use std::time::{Duration, UNIX_EPOCH};

use deskmail_mq::Topology;
use deskmail_mq::lapin::BasicProperties;
use deskmail_mq::lapin::types::{AMQPValue, FieldTable, ShortString};
use deskmail_mq::topology::{DEAD_AT_HEADER, ERROR_HEADER, routing_keys};
use serde_json::{Value, json};

/// Header counting how often `deskmailctl dead replay` put a message back.
pub const REPLAYED_HEADER: &str = "x-deskmail-replayed";

/// Headers of the dead-lettering that would mislead once the message is back at work: the
/// broker's death records and delivery count, the reason and time of death, and the sender's
/// retry bookkeeping (a replayed job gets all its retries again).
const DROPPED_ON_REPLAY: [&str; 12] = [
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-last-death-exchange",
    "x-delivery-count",
    ERROR_HEADER,
    DEAD_AT_HEADER,
    "x-deskmail-retries",
    "x-deskmail-last-error",
];

/// One line of `dead list`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The dead queue's full name.
    pub queue: String,
    /// 1-based position in the queue (1 = oldest).
    pub position: usize,
    /// `message_id`: the source id of a raw mail, the job id of a job.
    pub message_id: Option<String>,
    /// When it was dead-lettered (Unix seconds), when known.
    pub dead_at: Option<u64>,
    /// `x-deskmail-error`, or the broker's reason from `x-death`.
    pub reason: String,
    /// Body size in bytes.
    pub size: usize,
    /// How often it was replayed before.
    pub replayed: i64,
}

impl Summary {
    pub fn new(queue: &str, position: usize, props: &BasicProperties, size: usize) -> Summary {
        Summary {
            queue: queue.to_owned(),
            position,
            message_id: props.message_id().as_ref().map(|s| s.as_str().to_owned()),
            dead_at: dead_at(props),
            reason: reason(props),
            size,
            replayed: header(props, REPLAYED_HEADER).and_then(int).unwrap_or(0),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "queue": self.queue,
            "position": self.position,
            "message_id": self.message_id,
            "dead_at": self.dead_at.map(rfc3339),
            "reason": self.reason,
            "size": self.size,
            "replayed": self.replayed,
        })
    }
}

/// One `x-death` record (the broker adds one per queue and reason it dead-lettered from).
#[derive(Debug, Clone, PartialEq)]
pub struct Death {
    pub queue: String,
    pub reason: String,
    pub count: i64,
    pub exchange: String,
    pub routing_keys: Vec<String>,
    pub time: Option<u64>,
}

impl Death {
    pub fn to_json(&self) -> Value {
        json!({
            "queue": self.queue,
            "reason": self.reason,
            "count": self.count,
            "exchange": self.exchange,
            "routing_keys": self.routing_keys,
            "time": self.time.map(rfc3339),
        })
    }
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref()?.inner().get(name)
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

fn int(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok()?,
        _ => return None,
    })
}

/// The `x-death` records, most recent first (the broker's order).
pub fn deaths(props: &BasicProperties) -> Vec<Death> {
    let Some(AMQPValue::FieldArray(records)) = header(props, "x-death") else {
        return Vec::new();
    };
    records
        .as_slice()
        .iter()
        .filter_map(|r| match r {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        })
        .map(|t| {
            let get = |k: &str| t.inner().get(k);
            Death {
                queue: get("queue").and_then(text).unwrap_or_default(),
                reason: get("reason").and_then(text).unwrap_or_default(),
                count: get("count").and_then(int).unwrap_or(0),
                exchange: get("exchange").and_then(text).unwrap_or_default(),
                routing_keys: match get("routing-keys") {
                    Some(AMQPValue::FieldArray(a)) => a.as_slice().iter().filter_map(text).collect(),
                    _ => Vec::new(),
                },
                time: get("time").and_then(int).and_then(|t| u64::try_from(t).ok()),
            }
        })
        .collect()
}

/// `x-deskmail-error`; for what the broker dead-lettered itself, `broker: <reason> in <queue>`.
pub fn reason(props: &BasicProperties) -> String {
    if let Some(r) = header(props, ERROR_HEADER).and_then(text) {
        return r;
    }
    match deaths(props).first() {
        Some(d) => format!("broker: {} in {}", d.reason, d.queue),
        None => "(no reason recorded)".to_owned(),
    }
}

/// `x-deskmail-dead-at`, else the time of the latest `x-death` record.
pub fn dead_at(props: &BasicProperties) -> Option<u64> {
    header(props, DEAD_AT_HEADER)
        .and_then(int)
        .and_then(|t| u64::try_from(t).ok())
        .or_else(|| deaths(props).first().and_then(|d| d.time))
}

/// `2026-11-29T14:46:40Z`.
pub fn rfc3339(unix_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_seconds)).to_string()
}

/// Where a message of dead queue `queue` goes back to: (exchange, routing key). The design's
/// dead queues map to their work exchange; any other queue to the exchange and first routing
/// key of its latest `x-death` record. `None` when neither tells.
pub fn origin(topology: &Topology, queue: &str, props: &BasicProperties) -> Option<(String, String)> {
    if queue == topology.inbound_dead_queue() {
        return Some((topology.inbound_exchange(), routing_keys::MAIL_RAW.to_owned()));
    }
    if queue == topology.outbound_dead_queue() {
        return Some((topology.outbound_exchange(), routing_keys::MAIL_SEND.to_owned()));
    }
    let d = deaths(props).into_iter().next()?;
    let key = d.routing_keys.into_iter().next()?;
    Some((d.exchange, key))
}

/// The properties of the replayed copy: the original's, minus the dead-letter bookkeeping,
/// plus `x-deskmail-replayed` (one more than before).
pub fn replay_properties(props: &BasicProperties) -> BasicProperties {
    let before = header(props, REPLAYED_HEADER).and_then(int).unwrap_or(0);
    let mut headers: FieldTable = props.headers().clone().unwrap_or_default();
    let kept = headers
        .inner()
        .iter()
        .filter(|(k, _)| !DROPPED_ON_REPLAY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<std::collections::BTreeMap<ShortString, AMQPValue>>();
    headers = FieldTable::from(kept);
    headers.insert(REPLAYED_HEADER.into(), AMQPValue::LongLongInt(before.saturating_add(1)));
    props.clone().with_headers(headers).with_delivery_mode(2)
}

/// Whether a header or JSON key names something secret.
fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "secret", "token", "authorization", "credential", "api_key", "apikey"]
        .iter()
        .any(|s| n.contains(s))
}

/// A header value as JSON (secrets by name replaced by `***`).
pub fn header_json(name: &str, v: &AMQPValue) -> Value {
    if is_secret(name) {
        return json!("***");
    }
    amqp_json(v)
}

fn amqp_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::Timestamp(t) => json!(rfc3339(*t)),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner().iter().map(|(k, v)| (k.to_string(), header_json(k.as_str(), v))).collect(),
        ),
        AMQPValue::ByteArray(b) => json!(format!("<{} bytes>", b.len())),
        AMQPValue::Void => Value::Null,
        AMQPValue::DecimalValue(d) => json!(format!("{d:?}")),
        other => match (int(other), text(other)) {
            (Some(i), _) => json!(i),
            (None, Some(s)) => json!(s),
            (None, None) => Value::Null,
        },
    }
}

/// The application headers for `dead show`, without `x-death` (summarised apart) and
/// `x-delivery-count` (in a dead queue it only counts how often it was browsed).
pub fn headers_json(props: &BasicProperties) -> Value {
    let Some(h) = props.headers().as_ref() else {
        return json!({});
    };
    Value::Object(
        h.inner()
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "x-death" | "x-delivery-count"))
            .map(|(k, v)| (k.to_string(), header_json(k.as_str(), v)))
            .collect(),
    )
}

/// The body for `dead show`: a job's JSON pretty-printed (attachment contents replaced by
/// their size, secret-looking keys by `***`), a raw mail's header section and size, or just
/// the size of anything else.
pub fn body_json(content_type: Option<&str>, body: &[u8]) -> Value {
    let json_type = content_type.is_some_and(|c| c.contains("json"));
    let mail_type = content_type.is_some_and(|c| c.starts_with("message/"));
    if !mail_type && let Ok(mut v) = serde_json::from_slice::<Value>(body) {
        redact_job(&mut v);
        return json!({"kind": "json", "size": body.len(), "json": v});
    }
    if json_type {
        let start: String = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return json!({"kind": "invalid json", "size": body.len(), "start": start});
    }
    if mail_type || looks_like_mail(body) {
        let end = header_end(body);
        let headers = String::from_utf8_lossy(&body[..end]).trim_end().to_owned();
        return json!({"kind": "mail", "size": body.len(), "headers": headers});
    }
    json!({"kind": "bytes", "size": body.len()})
}

fn looks_like_mail(body: &[u8]) -> bool {
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    first
        .iter()
        .position(|b| *b == b':')
        .is_some_and(|i| i > 0 && first[..i].iter().all(|b| b.is_ascii_graphic() && *b != b':'))
}

/// Where the header section of a mail ends (the blank line), or the whole body when none.
fn header_end(body: &[u8]) -> usize {
    let crlf = body.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = body.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => body.len(),
    }
}

fn redact_job(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map.iter_mut() {
                if is_secret(k) {
                    *inner = json!("***");
                } else if k == "content_base64"
                    && let Value::String(s) = inner
                {
                    *inner = json!(format!("<{} base64 characters>", s.len()));
                } else {
                    redact_job(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_job),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use deskmail_mq::lapin::types::{FieldArray, LongString};

    use super::*;

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    fn props(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in headers {
            t.insert((*k).into(), v.clone());
        }
        BasicProperties::default().with_message_id("job-1".into()).with_headers(t)
    }

    fn death(queue: &str, reason: &str, exchange: &str, key: &str, time: u64) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("queue".into(), s(queue));
        t.insert("reason".into(), s(reason));
        t.insert("count".into(), AMQPValue::LongLongInt(1));
        t.insert("exchange".into(), s(exchange));
        t.insert("routing-keys".into(), AMQPValue::FieldArray(FieldArray::from(vec![s(key)])));
        t.insert("time".into(), AMQPValue::Timestamp(time));
        AMQPValue::FieldTable(t)
    }

    #[test]
    fn reason_and_time_from_the_daemon_or_the_broker() {
        let daemon =
            props(&[(ERROR_HEADER, s("SMTP 550")), (DEAD_AT_HEADER, AMQPValue::Timestamp(1_800_000_000))]);
        let broker = props(&[(
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![death(
                "p.outbound.jobs",
                "delivery_limit",
                "p.outbound",
                "mail.send",
                1_700_000_000,
            )])),
        )]);
        let cases = [
            (&daemon, "SMTP 550", Some(1_800_000_000)),
            (&broker, "broker: delivery_limit in p.outbound.jobs", Some(1_700_000_000)),
            (&props(&[]), "(no reason recorded)", None),
        ];
        for (p, want_reason, want_time) in cases {
            assert_eq!((reason(p).as_str(), dead_at(p)), (want_reason, want_time));
        }
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn origin_per_queue() {
        let t = Topology::new("p").unwrap();
        let with_death = props(&[(
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![death(
                "p.custom",
                "rejected",
                "p.custom-x",
                "k",
                1,
            )])),
        )]);
        let cases = [
            ("p.inbound.dead", &props(&[]), Some(("p.inbound", "mail.raw"))),
            ("p.outbound.dead", &with_death, Some(("p.outbound", "mail.send"))),
            ("p.other.dead", &with_death, Some(("p.custom-x", "k"))),
            ("p.other.dead", &props(&[]), None),
        ];
        for (queue, p, want) in cases {
            let got = origin(&t, queue, p);
            assert_eq!(got.as_ref().map(|(e, k)| (e.as_str(), k.as_str())), want, "{queue}");
        }
    }

    #[test]
    fn replay_drops_the_bookkeeping_and_counts() {
        let p = props(&[
            (ERROR_HEADER, s("why")),
            (DEAD_AT_HEADER, AMQPValue::Timestamp(5)),
            ("x-deskmail-retries", AMQPValue::LongLongInt(4)),
            ("x-deskmail-last-error", s("451")),
            ("x-delivery-count", AMQPValue::LongInt(3)),
            ("x-death", AMQPValue::FieldArray(FieldArray::default())),
            ("x-first-death-queue", s("q")),
            ("x-deskmail-trace-id", s("trace")),
            (REPLAYED_HEADER, AMQPValue::LongLongInt(2)),
        ]);
        let r = replay_properties(&p);
        let h = r.headers().as_ref().unwrap().inner();
        let names: Vec<&str> = h.keys().map(ShortString::as_str).collect();
        assert_eq!(names, ["x-deskmail-replayed", "x-deskmail-trace-id"]);
        assert_eq!(h.get(REPLAYED_HEADER), Some(&AMQPValue::LongLongInt(3)));
        assert_eq!(r.message_id().as_ref().map(ShortString::as_str), Some("job-1"));
        assert_eq!(*r.delivery_mode(), Some(2));
        let first = replay_properties(&props(&[]));
        assert_eq!(
            first.headers().as_ref().unwrap().inner().get(REPLAYED_HEADER),
            Some(&AMQPValue::LongLongInt(1))
        );
    }

    #[test]
    fn bodies_are_shown_without_secrets_or_attachment_bytes() {
        let job = br#"{"job_id":"j","attachments":[{"filename":"a","content_base64":"QUJD"}],"headers":{"X-Api-Token":"t0p"}}"#;
        let v = body_json(Some("application/json"), job);
        assert_eq!(v["kind"], "json");
        assert_eq!(v["json"]["attachments"][0]["content_base64"], "<4 base64 characters>");
        assert_eq!(v["json"]["headers"]["X-Api-Token"], "***");
        let mail = b"From: a@b\r\nSubject: hi\r\n\r\nbody secret";
        let v = body_json(Some("message/rfc822"), mail);
        assert_eq!((v["kind"].as_str(), v["size"].as_u64()), (Some("mail"), Some(mail.len() as u64)));
        assert_eq!(v["headers"], "From: a@b\r\nSubject: hi");
        assert_eq!(body_json(Some("application/json"), b"{nope")["kind"], "invalid json");
        assert_eq!(body_json(None, &[0, 1, 2])["kind"], "bytes");
        let h = headers_json(&props(&[("x-auth-token", s("t")), ("x-mailbox-id", s("m"))]));
        assert_eq!(h, json!({"x-auth-token": "***", "x-mailbox-id": "m"}));
    }
}
