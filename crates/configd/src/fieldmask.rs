//! Updates with field masks, for every resource kind at once through protobuf reflection.
//!
//! With paths, each named field (`name`, `inbound.host`, `inbound`) is copied from the patch,
//! cleared when the patch leaves it empty. With no paths, every field the patch sets is
//! copied (messages merged field by field, lists replaced), so that a client which sends only
//! what it changes gets what it expects. Output-only fields cannot be named.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};

use crate::resource::{Resource, Violation};

const OUTPUT_ONLY: [&str; 6] =
    ["id", "create_time", "update_time", "has_password", "has_client_secret", "has_refresh_token"];

fn pool() -> Result<&'static DescriptorPool, String> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(deskmail_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn descriptor(name: &str) -> Result<MessageDescriptor, Violation> {
    let pool = pool().map_err(|e| ("update_mask".to_owned(), format!("descriptors unavailable: {e}")))?;
    pool.get_message_by_name(name)
        .ok_or_else(|| ("update_mask".to_owned(), format!("no descriptor for {name}")))
}

/// Returns `stored` with the masked fields of `patch` applied.
pub fn apply<T: Resource>(stored: &T, patch: &T, paths: &[String]) -> Result<T, Vec<Violation>> {
    let desc = descriptor(T::PROTO_NAME).map_err(|v| vec![v])?;
    let mut target = to_dynamic(&desc, stored).map_err(|v| vec![v])?;
    let source = to_dynamic(&desc, patch).map_err(|v| vec![v])?;
    if paths.is_empty() {
        merge_set_fields(&mut target, &source);
    } else {
        let mut violations = Vec::new();
        for path in paths {
            if let Err(why) = copy_path(&mut target, &source, path) {
                violations
                    .push(("update_mask".to_owned(), format!("{}: {why}", crate::resource::quote(path))));
            }
        }
        if !violations.is_empty() {
            return Err(violations);
        }
    }
    target.transcode_to::<T>().map_err(|e| vec![("update_mask".to_owned(), e.to_string())])
}

fn to_dynamic<T: Resource>(desc: &MessageDescriptor, value: &T) -> Result<DynamicMessage, Violation> {
    DynamicMessage::decode(desc.clone(), value.encode_to_vec().as_slice())
        .map_err(|e| ("update_mask".to_owned(), e.to_string()))
}

fn copy_path(target: &mut DynamicMessage, source: &DynamicMessage, path: &str) -> Result<(), String> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    if OUTPUT_ONLY.contains(&head) {
        return Err("is output only".to_owned());
    }
    let field = target.descriptor().get_field_by_name(head).ok_or_else(|| "no such field".to_owned())?;
    match rest {
        None => {
            if source.has_field(&field) {
                target.set_field(&field, source.get_field(&field).into_owned());
            } else {
                target.clear_field(&field);
            }
            Ok(())
        }
        Some(rest) => {
            if field.is_list() || field.is_map() || field.kind().as_message().is_none() {
                return Err(format!("{head} has no sub-fields"));
            }
            let sub_source = match source.get_field(&field).as_ref() {
                Value::Message(m) => m.clone(),
                _ => return Err(format!("{head} is not a message")),
            };
            match target.get_field_mut(&field) {
                Value::Message(sub_target) => copy_path(sub_target, &sub_source, rest),
                _ => Err(format!("{head} is not a message")),
            }
        }
    }
}

fn merge_set_fields(target: &mut DynamicMessage, source: &DynamicMessage) {
    let fields: Vec<_> = source.fields().map(|(f, v)| (f, v.clone())).collect();
    for (field, value) in fields {
        if OUTPUT_ONLY.contains(&field.name()) {
            continue;
        }
        match value {
            Value::Message(sub) if !field.is_list() && !field.is_map() && is_plain_message(&field) => {
                if let Value::Message(existing) = target.get_field_mut(&field) {
                    merge_set_fields(existing, &sub);
                }
            }
            other => target.set_field(&field, other),
        }
    }
}

/// Sub-messages we merge field by field; well-known types (timestamps) are replaced whole.
fn is_plain_message(field: &prost_reflect::FieldDescriptor) -> bool {
    field.kind().as_message().is_some_and(|m| m.package_name() == "deskmail.v1")
}

#[cfg(test)]
mod tests {
    use deskmail_proto::v1 as pb;

    use super::*;

    fn mailbox() -> pb::Mailbox {
        pb::Mailbox {
            id: "m1".into(),
            name: "support".into(),
            inbound: Some(pb::InboundSettings {
                host: "a.example".into(),
                port: 993,
                folder: "INBOX".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn masked_paths_copy_and_clear() {
        let stored = mailbox();
        let patch = pb::Mailbox {
            name: "renamed".into(),
            inbound: Some(pb::InboundSettings { host: "b.example".into(), ..Default::default() }),
            ..Default::default()
        };
        let out = apply(&stored, &patch, &["inbound.host".into(), "inbound.folder".into()]).unwrap();
        assert_eq!(out.name, "support", "unmasked field kept");
        let i = out.inbound.unwrap();
        assert_eq!(i.host, "b.example");
        assert_eq!(i.folder, "", "masked and empty in the patch: cleared");
        assert_eq!(i.port, 993);
    }

    #[test]
    fn empty_mask_merges_what_is_set() {
        let stored = mailbox();
        let patch = pb::Mailbox {
            inbound: Some(pb::InboundSettings { port: 143, ..Default::default() }),
            ..Default::default()
        };
        let out = apply(&stored, &patch, &[]).unwrap();
        let i = out.inbound.unwrap();
        assert_eq!((i.host.as_str(), i.port), ("a.example", 143));
        assert_eq!(out.id, "m1");
    }

    #[test]
    fn bad_paths_are_named() {
        let err = apply(&mailbox(), &mailbox(), &["nope".into(), "id".into(), "name.x".into()]).unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("no such field") && text.contains("output only") && text.contains("no sub-fields"),
            "{text}"
        );
    }
}
