//! `proto/outbound-job.schema.json` and `deskmail_core::OutboundJob` describe the same job:
//! every field of one is in the other, serialized jobs validate, and bad jobs are refused by
//! both the schema and the sender.

use std::collections::BTreeSet;

use deskmail_core::{JobAttachment, OutboundJob};
use serde_json::{Value, json};

fn schema() -> Value {
    let path = crate::harness::crate_dir().join("../../proto/outbound-job.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn full_job() -> OutboundJob {
    OutboundJob {
        job_id: "job-1".into(),
        correlation_id: Some("c-1".into()),
        mailbox_id: Some("support".into()),
        contract: Some("Gold".into()),
        company: Some("Acme".into()),
        from: Some("Support <support@desk.test>".into()),
        to: vec!["customer@client.test".into()],
        cc: vec!["Boss <boss@client.test>".into()],
        bcc: vec!["audit@desk.test".into()],
        reply_to: Some("replies@desk.test".into()),
        subject: "Grüße".into(),
        text: Some("hello".into()),
        html: Some("<p>hello</p>".into()),
        attachments: vec![JobAttachment {
            filename: "a.pdf".into(),
            content_type: Some("application/pdf".into()),
            content_base64: "JVBERi0xLjQK".into(),
            content_id: Some("a1".into()),
        }],
        headers: [("X-Campaign".to_owned(), "spring".to_owned())].into(),
        in_reply_to: Some("<orig@client.test>".into()),
        references: vec!["<a@client.test>".into(), "b@client.test".into()],
        ticket_number: Some("2026112901000001".into()),
        read_receipt: true,
    }
}

fn sender_accepts(v: &Value) -> Result<(), String> {
    let job = deskmail_sender::job::parse(&serde_json::to_vec(v).unwrap()).map_err(|e| e.to_string())?;
    deskmail_sender::job::validate(job).map(drop).map_err(|e| e.to_string())
}

#[test]
fn schema_and_struct_have_the_same_fields() {
    let s = schema();
    let job = serde_json::to_value(full_job()).unwrap();
    let struct_fields: BTreeSet<&str> = job.as_object().unwrap().keys().map(String::as_str).collect();
    let schema_fields: BTreeSet<&str> =
        s["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(struct_fields, schema_fields);
    let att = &job["attachments"][0];
    let att_fields: BTreeSet<&str> = att.as_object().unwrap().keys().map(String::as_str).collect();
    let schema_att: BTreeSet<&str> = s["properties"]["attachments"]["items"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(att_fields, schema_att);
    assert_eq!(s["additionalProperties"], json!(false));
}

#[test]
fn serialized_jobs_validate_and_bad_jobs_are_refused_by_both() {
    let v = jsonschema::validator_for(&schema()).unwrap();
    let full = serde_json::to_value(full_job()).unwrap();
    let minimal = serde_json::to_value(OutboundJob {
        job_id: "m".into(),
        bcc: vec!["x@y.test".into()],
        html: Some("<p>x</p>".into()),
        ..Default::default()
    })
    .unwrap();
    for good in [&full, &minimal] {
        let errors: Vec<String> = v.iter_errors(good).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{good}: {errors:?}");
        sender_accepts(good).unwrap();
    }
    let bad = |f: fn(&mut Value)| {
        let mut j = full.clone();
        f(&mut j);
        j
    };
    let cases = [
        ("unknown field", bad(|j| j["colour"] = json!("red"))),
        ("no job_id", bad(|j| drop(j.as_object_mut().unwrap().remove("job_id")))),
        ("empty job_id", bad(|j| j["job_id"] = json!(""))),
        ("long job_id", bad(|j| j["job_id"] = json!("x".repeat(201)))),
        (
            "no body",
            bad(|j| {
                let o = j.as_object_mut().unwrap();
                o.remove("text");
                o.remove("html");
            }),
        ),
        (
            "no recipient",
            bad(|j| {
                let o = j.as_object_mut().unwrap();
                o.remove("to");
                o.remove("cc");
                o.remove("bcc");
            }),
        ),
        ("to not a list", bad(|j| j["to"] = json!("a@b.test"))),
        ("address without @", bad(|j| j["to"] = json!(["nobody"]))),
        ("subject with CRLF", bad(|j| j["subject"] = json!("a\r\nBcc: x@y.test"))),
        ("header value with LF", bad(|j| j["headers"] = json!({"X-A": "1\nBcc: x@y.test"}))),
        ("structural header", bad(|j| j["headers"] = json!({"Subject": "x"}))),
        ("header name with space", bad(|j| j["headers"] = json!({"X A": "x"}))),
        ("bad base64", bad(|j| j["attachments"][0]["content_base64"] = json!("***"))),
        (
            "attachment without filename",
            bad(|j| drop(j["attachments"][0].as_object_mut().unwrap().remove("filename"))),
        ),
        ("attachment unknown field", bad(|j| j["attachments"][0]["size"] = json!(3))),
        ("read_receipt not bool", bad(|j| j["read_receipt"] = json!("yes"))),
        ("bad in_reply_to", bad(|j| j["in_reply_to"] = json!("no at sign"))),
    ];
    for (what, job) in &cases {
        assert!(!v.is_valid(job), "schema accepted {what}: {job}");
        assert!(sender_accepts(job).is_err(), "sender accepted {what}: {job}");
    }
}
