//! Generic protobuf handling through reflection (prost-reflect and the descriptor set of
//! `deskmail-proto`): proto3 JSON out and in, and the flattened `field: value` view of the
//! detail tables. Write-only secrets never leave here.

use std::sync::OnceLock;

use deskmail_proto::v1 as pb;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};
use serde_json::Value as Json;

use crate::fail::Fail;

/// Field names that hold write-only secrets: never printed, whatever the server sends.
const SECRETS: [&str; 3] = ["password", "client_secret", "refresh_token"];
/// Output-only fields: a `--from-json` document may carry them (from `get -o json`), but an
/// update mask must not name them.
const OUTPUT_ONLY: [&str; 6] =
    ["id", "create_time", "update_time", "has_password", "has_client_secret", "has_refresh_token"];

/// A generated message with its full protobuf name.
pub trait Proto: prost::Message + Default + Clone + 'static {
    const NAME: &'static str;
}

macro_rules! proto_names {
    ($($ty:ident),* $(,)?) => {
        $(impl Proto for pb::$ty {
            const NAME: &'static str = concat!("deskmail.v1.", stringify!($ty));
        })*
    };
}

proto_names!(
    Mailbox,
    Queue,
    SystemAddress,
    Company,
    Contract,
    Filter,
    Settings,
    ConfigSnapshot,
    MailboxStatusView,
    PresetSettings,
    TestConnectionResponse,
    SendTestEmailResponse,
    ListMailboxesResponse,
    ListQueuesResponse,
    ListSystemAddressesResponse,
    ListCompaniesResponse,
    ListContractsResponse,
    ListFiltersResponse,
    ListStatusResponse,
    DeleteResponse,
);

fn pool() -> Result<&'static DescriptorPool, Fail> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(deskmail_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Fail::Failed(format!("the built-in proto descriptors do not decode: {e}")))
}

pub fn descriptor<T: Proto>() -> Result<MessageDescriptor, Fail> {
    pool()?.get_message_by_name(T::NAME).ok_or_else(|| Fail::Failed(format!("no descriptor for {}", T::NAME)))
}

fn dynamic<T: Proto>(message: &T) -> Result<DynamicMessage, Fail> {
    DynamicMessage::decode(descriptor::<T>()?, message.encode_to_vec().as_slice())
        .map_err(|e| Fail::Failed(format!("{} does not decode: {e}", T::NAME)))
}

/// proto3 JSON with the proto field names and every field (defaults too), secrets removed.
pub fn to_json<T: Proto>(message: &T) -> Result<Json, Fail> {
    let options = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(false);
    let mut json = dynamic(message)?
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| Fail::Failed(format!("cannot print {} as JSON: {e}", T::NAME)))?;
    strip_secrets(&mut json);
    Ok(json)
}

pub fn list_json<T: Proto>(items: &[T]) -> Result<Json, Fail> {
    items.iter().map(to_json).collect::<Result<Vec<_>, _>>().map(Json::Array)
}

fn strip_secrets(json: &mut Json) {
    match json {
        Json::Object(map) => {
            map.retain(|k, _| !SECRETS.contains(&k.as_str()));
            map.values_mut().for_each(strip_secrets);
        }
        Json::Array(items) => items.iter_mut().for_each(strip_secrets),
        _ => {}
    }
}

/// Parses a proto3 JSON document (proto or JSON field names) into `T`, with the field paths
/// it sets (leaves of deskmail messages; lists and well-known types whole), for update masks.
pub fn from_json<T: Proto>(text: &str, source: &str) -> Result<(T, Vec<String>), Fail> {
    let bad = |e: &dyn std::fmt::Display| Fail::Usage(format!("--from-json {source}: {e}"));
    let desc = descriptor::<T>()?;
    let json: Json = serde_json::from_str(text).map_err(|e| bad(&e))?;
    let Json::Object(object) = &json else {
        return Err(bad(&format!("expected a JSON object (a {})", T::NAME)));
    };
    let mut paths = Vec::new();
    json_paths(&desc, object, "", &mut paths);
    let message = DynamicMessage::deserialize_with_options(desc, &json, &DeserializeOptions::new())
        .map_err(|e| bad(&e))?;
    let typed = message.transcode_to::<T>().map_err(|e| bad(&e))?;
    Ok((typed, paths))
}

fn json_paths(
    desc: &MessageDescriptor,
    object: &serde_json::Map<String, Json>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for (key, value) in object {
        let Some(field) = desc.get_field_by_name(key).or_else(|| desc.get_field_by_json_name(key)) else {
            continue;
        };
        if OUTPUT_ONLY.contains(&field.name()) {
            continue;
        }
        let path = format!("{prefix}{}", field.name());
        match (field.kind(), value) {
            (Kind::Message(m), Json::Object(sub))
                if !field.is_list() && !field.is_map() && m.package_name() == "deskmail.v1" =>
            {
                json_paths(&m, sub, &format!("{path}."), out);
            }
            _ => out.push(path),
        }
    }
}

/// `(path, value)` rows for a detail table: nested messages flattened with dots, enums by
/// their short lower-case name, booleans as yes/no, timestamps in RFC 3339, secrets left out.
pub fn flatten<T: Proto>(message: &T) -> Result<Vec<(String, String)>, Fail> {
    let mut rows = Vec::new();
    flatten_into(&dynamic(message)?, "", &mut rows);
    Ok(rows)
}

fn flatten_into(message: &DynamicMessage, prefix: &str, rows: &mut Vec<(String, String)>) {
    for field in message.descriptor().fields() {
        if SECRETS.contains(&field.name()) {
            continue;
        }
        let path = format!("{prefix}{}", field.name());
        let set = message.has_field(&field);
        if field.supports_presence() && !set {
            if !matches!(field.kind(), Kind::Message(_)) || is_timestamp(&field.kind()) {
                rows.push((path, "-".to_owned()));
            }
            continue;
        }
        let value = message.get_field(&field);
        match (field.kind(), value.as_ref()) {
            (kind, Value::Message(sub)) if !is_timestamp(&kind) => {
                flatten_into(sub, &format!("{path}."), rows);
            }
            (kind, Value::List(items)) => {
                let shown: Vec<String> = items.iter().map(|v| display(&kind, v)).collect();
                rows.push((path, if shown.is_empty() { "-".to_owned() } else { shown.join(", ") }));
            }
            (kind, v) => rows.push((path, display(&kind, v))),
        }
    }
}

fn is_timestamp(kind: &Kind) -> bool {
    matches!(kind, Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp")
}

fn display(kind: &Kind, value: &Value) -> String {
    match (kind, value) {
        (_, Value::Bool(b)) => yes_no(*b).to_owned(),
        (_, Value::String(s)) if s.is_empty() => "-".to_owned(),
        (_, Value::String(s)) => s.clone(),
        (Kind::Enum(e), Value::EnumNumber(n)) => match e.get_value(*n) {
            Some(v) => short_enum(v.name(), e.name()),
            None => n.to_string(),
        },
        (_, Value::Message(m)) => {
            let seconds = m.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
            timestamp_secs(seconds)
        }
        (_, Value::I32(n)) => n.to_string(),
        (_, Value::I64(n)) => n.to_string(),
        (_, Value::U32(n)) => n.to_string(),
        (_, Value::U64(n)) => n.to_string(),
        (_, other) => format!("{other:?}"),
    }
}

pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `SECURITY_STARTTLS` of enum `Security` -> `starttls`; `*_UNSPECIFIED` -> `-`.
pub fn short_enum(value_name: &str, enum_name: &str) -> String {
    let mut prefix = String::new();
    for (i, c) in enum_name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            prefix.push('_');
        }
        prefix.push(c.to_ascii_uppercase());
    }
    prefix.push('_');
    let short = value_name.strip_prefix(&prefix).unwrap_or(value_name);
    if short == "UNSPECIFIED" { "-".to_owned() } else { short.to_lowercase() }
}

/// An RFC 3339 time (UTC, seconds), or `-` for none.
pub fn timestamp(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| timestamp_secs(t.seconds))
}

fn timestamp_secs(seconds: i64) -> String {
    match u64::try_from(seconds) {
        Ok(s) if s > 0 => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
                .to_string()
        }
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn enum_names_shorten() {
        assert_eq!(short_enum("SECURITY_STARTTLS", "Security"), "starttls");
        assert_eq!(short_enum("STATUS_REASON_AUTH_FAILED", "StatusReason"), "auth_failed");
        assert_eq!(short_enum("AUTH_METHOD_OAUTH2", "AuthMethod"), "oauth2");
        assert_eq!(short_enum("DIRECTION_UNSPECIFIED", "Direction"), "-");
    }

    #[test]
    fn json_round_trips_without_secrets_and_paths_skip_output_only() {
        let m = pb::Mailbox {
            id: "m1".into(),
            name: "support".into(),
            inbound: Some(pb::InboundSettings {
                host: "h".into(),
                password: "secret".into(),
                has_password: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = to_json(&m).unwrap();
        let text = json.to_string();
        assert!(!text.contains("secret") && text.contains("\"has_password\":true"), "{text}");
        let (back, paths) = from_json::<pb::Mailbox>(&text, "-").unwrap();
        assert_eq!(back.inbound.unwrap().host, "h");
        assert!(paths.contains(&"inbound.host".to_owned()) && paths.contains(&"name".to_owned()));
        assert!(!paths.iter().any(|p| p == "id" || p.ends_with("has_password")), "{paths:?}");
        let (_, paths) =
            from_json::<pb::Mailbox>(r#"{"inbound": {"pollIntervalSeconds": 30}}"#, "-").unwrap();
        assert_eq!(paths, vec!["inbound.poll_interval_seconds"]);
    }

    #[test]
    fn flatten_hides_secrets_and_absent_parts() {
        let m = pb::Mailbox {
            name: "support".into(),
            inbound: Some(pb::InboundSettings {
                security: pb::Security::Tls as i32,
                password: "secret".into(),
                has_password: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let rows = flatten(&m).unwrap();
        let get = |k: &str| rows.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
        assert_eq!(get("inbound.security").as_deref(), Some("tls"));
        assert_eq!(get("inbound.has_password").as_deref(), Some("yes"));
        assert_eq!(get("inbound.password"), None);
        assert!(!rows.iter().any(|(p, _)| p.starts_with("outbound")), "{rows:?}");
        assert_eq!(get("enabled").as_deref(), Some("-"));
    }
}
