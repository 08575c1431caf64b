//! mailconn's chained sends (PIPELINING across transactions), as the sender's lanes use
//! them: every mail gets its own answer, once; a refused mail in the middle ends only that
//! session; dot-stuffing survives; the mails arrive intact.

use std::time::Duration;

use deskmail_mailconn::smtp::{SendError, SenderConfig, SmtpSender};
use deskmail_mailconn::{Credentials, Security, ServerEndpoint};
use lettre::Address;
use lettre::address::Envelope;

use crate::harness::*;

const REJECT: &str = "reject@client.test";

fn mail(i: usize, to: &str) -> Vec<u8> {
    format!(
        "From: support@desk.test\r\nTo: {to}\r\nSubject: chained {i}\r\nMessage-ID: <chained-{i}@desk.test>\r\n\r\n.line {i} starts with a dot\r\n.\r\nend\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_batch_answers_each_mail_once_and_survives_a_refusal() {
    let h = Harness::new("sender-chained", &[]).await;
    h.stack.set_recipient_answer(REJECT, "550 5.1.1 no such user").unwrap();
    let ep = ServerEndpoint::new("127.0.0.1", h.stack.smtp_port(), Security::None)
        .with_timeout(Duration::from_secs(20));
    let config = SenderConfig { pipelining: true, max_connections: 1, ..SenderConfig::default() };
    let sender = SmtpSender::new(ep, Credentials::None, Some("desk.test"), config).unwrap();
    const N: usize = 30;
    const REFUSED: usize = 11;
    let from: Address = SUPPORT.parse().unwrap();
    let envelopes: Vec<Envelope> = (0..N)
        .map(|i| {
            let to = if i == REFUSED { REJECT } else { CUSTOMER };
            Envelope::new(Some(from.clone()), vec![to.parse().unwrap()]).unwrap()
        })
        .collect();
    let raws: Vec<Vec<u8>> = (0..N).map(|i| mail(i, if i == REFUSED { REJECT } else { CUSTOMER })).collect();
    let mails: Vec<(&Envelope, &[u8])> =
        envelopes.iter().zip(&raws).map(|(e, r)| (e, r.as_slice())).collect();
    let mut answers: Vec<Vec<Result<u16, String>>> = vec![Vec::new(); N];
    sender
        .send_batch(&mails, |i, r| {
            answers[i].push(match r {
                Ok(reply) => Ok(reply.code),
                Err(SendError::Rejected(reply)) => Err(reply.to_string()),
                Err(e) => Err(format!("unexpected: {e}")),
            })
        })
        .await;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.len(), 1, "mail {i} answered {a:?}");
        if i == REFUSED {
            assert!(matches!(&a[0], Err(t) if t.starts_with("550 5.1.1")), "mail {i}: {a:?}");
        } else {
            assert_eq!(a[0], Ok(250), "mail {i}");
        }
    }
    // One session up to the refusal, a second one for the rest.
    assert_eq!(sender.connections_opened(), 2);
    sender.close().await;
    h.wait_for_mail(CUSTOMER, N - 1, Duration::from_secs(60)).await;
    let got = h.fetch_all(CUSTOMER, CUSTOMER_PW).await;
    assert_eq!(got.len(), N - 1);
    for raw in &got {
        let text = String::from_utf8_lossy(raw);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(body.starts_with(".line ") && body.contains("\r\n.\r\nend"), "dot-stuffing undone: {body:?}");
    }
}
