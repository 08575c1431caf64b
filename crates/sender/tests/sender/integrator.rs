//! An integrator publishes a job with a real AMQP client in another language (Python's pika,
//! run as a script) and the mail arrives.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_published_with_python_pika_arrives() {
    let mut h = Harness::new("sender-pika", &[]).await;
    let b = h.create_box("relay", plain_box(&h.stack, SUPPORT)).await;
    h.set_default_box(&b.id).await;
    let running = h.start_sender("").await;
    let script = crate_dir().join("tests/publish_job.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(h.vhost.amqp_url())
        .arg("deskmail")
        .arg("pika-job-1")
        .arg(CUSTOMER)
        .output()
        .await
        .expect("python3 runs (make services installs pika)");
    assert!(
        out.status.success(),
        "publish_job.py failed (pika missing? run `make services`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = h.event_for("pika-job-1", Duration::from_secs(30)).await;
    assert_eq!(e["event"], "mail.sent", "{e}");
    assert_eq!(e["correlation_id"], "python-corr-1");
    h.wait_for_mail(CUSTOMER, 1, Duration::from_secs(30)).await;
    running.stop().await;
    let mails = h.fetch_all(CUSTOMER, CUSTOMER_PW).await;
    let m = parse(&mails[0]);
    assert_eq!(m.subject(), Some("Hallo aus Python ✓"));
    assert_eq!(job_id_of(&mails[0]).as_deref(), Some("pika-job-1"));
    assert!(m.body_text(0).unwrap().contains("published with pika"));
}
