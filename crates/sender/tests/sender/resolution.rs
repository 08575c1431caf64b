//! Box resolution: the job's box, else the contract's, else the company's, else the default;
//! none at all is a dead letter saying so.

use std::time::Duration;

use deskmail_proto::v1 as pb;
use serde_json::json;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_then_contract_then_company_then_default_box() {
    let mut h = Harness::new("sender-resolve", &[]).await;
    let jobbox = h.create_box("job-box", plain_box(&h.stack, "job-box@desk.test")).await;
    let contractbox = h.create_box("contract-box", plain_box(&h.stack, "contract-box@desk.test")).await;
    let companybox = h.create_box("company-box", plain_box(&h.stack, "company-box@desk.test")).await;
    let defaultbox = h.create_box("default-box", plain_box(&h.stack, "default-box@desk.test")).await;
    let admin = h.configd.admin().await;
    let acme = admin
        .companies()
        .create_company(pb::CreateCompanyRequest {
            company: Some(pb::Company {
                name: "Acme".into(),
                outbound_mailbox_id: companybox.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let plain = admin
        .companies()
        .create_company(pb::CreateCompanyRequest {
            company: Some(pb::Company { name: "Plain".into(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner();
    for (name, company, mailbox) in [("Gold", &acme.id, contractbox.id.as_str()), ("Silver", &acme.id, "")] {
        admin
            .contracts()
            .create_contract(pb::CreateContractRequest {
                contract: Some(pb::Contract {
                    name: name.into(),
                    company_id: company.clone(),
                    outbound_mailbox_id: mailbox.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    h.set_default_box(&defaultbox.id).await;
    let running = h.start_sender("").await;

    let cases = [
        (
            json!({"job_id": "r-job", "mailbox_id": jobbox.id, "contract": "Gold", "company": "Acme"}),
            "job-box@desk.test",
        ),
        (json!({"job_id": "r-contract", "contract": "Gold", "company": "Acme"}), "contract-box@desk.test"),
        (json!({"job_id": "r-contract-company", "contract": "Silver"}), "company-box@desk.test"),
        (json!({"job_id": "r-company", "company": acme.id}), "company-box@desk.test"),
        (json!({"job_id": "r-default-company", "company": plain.name}), "default-box@desk.test"),
        (json!({"job_id": "r-default"}), "default-box@desk.test"),
    ];
    for (job, _) in &cases {
        let mut job = job.clone();
        job["to"] = json!([CUSTOMER]);
        job["subject"] = json!("which box");
        job["text"] = json!("t");
        h.publish(&job).await;
    }
    for (job, _) in &cases {
        let e = h.event_for(job["job_id"].as_str().unwrap(), T).await;
        assert_eq!(e["event"], "mail.sent", "{e}");
    }
    h.wait_for_mail(CUSTOMER, cases.len(), T).await;

    running.stop().await;

    let mails = h.fetch_all(CUSTOMER, CUSTOMER_PW).await;
    for (job, from) in &cases {
        let id = job["job_id"].as_str().unwrap();
        let raw = mails
            .iter()
            .find(|m| job_id_of(m).as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{id} missing"));
        let m = parse(raw);
        assert_eq!(m.from().unwrap().first().unwrap().address(), Some(*from), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_box_at_all_is_dead_lettered_with_that_reason() {
    let mut h = Harness::new("sender-nobox", &[]).await;
    let admin = h.configd.admin().await;
    admin
        .companies()
        .create_company(pb::CreateCompanyRequest {
            company: Some(pb::Company { name: "Plain".into(), ..Default::default() }),
        })
        .await
        .unwrap();
    let running = h.start_sender("").await;
    h.publish(
        &json!({"job_id": "r-none", "company": "Plain", "to": [CUSTOMER], "subject": "s", "text": "t"}),
    )
    .await;
    h.publish(&json!({"job_id": "r-nothing", "to": [CUSTOMER], "subject": "s", "text": "t"})).await;
    for _ in 0..2 {
        let (id, reason, _) = h.next_dead(T).await;
        assert!(id == "r-none" || id == "r-nothing", "{id}");
        assert!(
            reason.contains("no outbound box") && reason.contains("default_outbound_mailbox_id is not set"),
            "{reason}"
        );
        let e = h.event_for(&id, T).await;
        assert_eq!(e["event"], "mail.failed", "{e}");
    }
    running.stop().await;
}
