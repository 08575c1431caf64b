//! `/metrics` over real HTTP: the recorded values, histograms with buckets, help and type lines.

use std::time::Duration;

use deskmail_config::MetricsConfig;
use deskmail_core::StatusReason;
use deskmail_telemetry::router::{AutoReplySuppressed, RouteOutcome};
use deskmail_telemetry::sender::DeadLetterReason;
use deskmail_telemetry::{Telemetry, fetcher, router, sender};
use deskmail_testkit::unique;
use tokio_util::sync::CancellationToken;

use crate::http::{get, parse, value};

#[tokio::test]
async fn scrape_shows_counters_and_histograms_as_recorded() {
    crate::init_tracing();
    let shutdown = CancellationToken::new();
    let telemetry =
        Telemetry::start(&crate::config_on_free_port(), "deskmail-test", &shutdown).await.unwrap();
    let addr = telemetry.local_addr().unwrap();
    let mb = unique("mb");
    let bx = unique("box");

    fetcher::init_mailbox(&mb);
    fetcher::mails_fetched(&mb, 3);
    fetcher::mail_published(&mb);
    fetcher::mail_published(&mb);
    fetcher::mail_oversized(&mb);
    fetcher::poll_error(&mb, StatusReason::Timeout);
    fetcher::poll_duration(&mb, Duration::from_millis(200));
    fetcher::poll_duration(&mb, Duration::from_secs(3));
    router::mail_routed(RouteOutcome::NewTicket, &mb, Duration::from_millis(30));
    router::mail_routed(RouteOutcome::NewTicket, &mb, Duration::from_millis(40));
    router::mail_routed(RouteOutcome::FollowUp, &mb, Duration::from_millis(20));
    router::auto_reply_suppressed(AutoReplySuppressed::Bulk);
    sender::init_box(&bx);
    sender::job_sent(&bx, Duration::from_millis(120));
    sender::job_retried(&bx);
    sender::box_error(&bx, StatusReason::AuthFailed);
    sender::job_dead_lettered(DeadLetterReason::Rejected);

    let answer = get(addr, "/metrics").await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.content_type.starts_with("text/plain; version=0.0.4"), "{}", answer.content_type);
    let text = &answer.body;
    let samples = parse(text).unwrap();
    let mbl = [("mailbox", mb.as_str())];
    let bxl = [("box", bx.as_str())];

    assert_eq!(value(&samples, fetcher::MAILS_FETCHED_TOTAL, &mbl), Some(3.0));
    assert_eq!(value(&samples, fetcher::MAILS_PUBLISHED_TOTAL, &mbl), Some(2.0));
    assert_eq!(value(&samples, fetcher::MAILS_OVERSIZED_TOTAL, &mbl), Some(1.0));
    let errors =
        |reason: &str| value(&samples, fetcher::POLL_ERRORS_TOTAL, &[("mailbox", &mb), ("reason", reason)]);
    assert_eq!(errors("timeout"), Some(1.0));
    assert_eq!(errors("auth_failed"), Some(0.0), "init_mailbox creates every reason at 0");

    // The poll histogram: a real histogram with the configured buckets, not a summary.
    assert!(text.contains(&format!("# TYPE {} histogram", fetcher::POLL_DURATION_SECONDS)), "{text}");
    let bucket = |le: f64| {
        samples
            .iter()
            .find(|s| {
                s.name == format!("{}_bucket", fetcher::POLL_DURATION_SECONDS)
                    && s.labels.get("mailbox") == Some(&mb)
                    && s.labels
                        .get("le")
                        .map(|v| if v == "+Inf" { f64::INFINITY } else { v.parse().unwrap() })
                        == Some(le)
            })
            .map(|s| s.value)
    };
    assert_eq!(bucket(0.1), Some(0.0));
    assert_eq!(bucket(0.25), Some(1.0));
    assert_eq!(bucket(2.5), Some(1.0));
    assert_eq!(bucket(5.0), Some(2.0));
    assert_eq!(bucket(f64::INFINITY), Some(2.0));
    let bucket_lines = samples
        .iter()
        .filter(|s| s.name.ends_with("_bucket") && s.labels.get("mailbox") == Some(&mb))
        .count();
    assert_eq!(bucket_lines, deskmail_telemetry::DURATION_BUCKETS.len() + 1, "every bound plus +Inf");
    let count = value(&samples, &format!("{}_count", fetcher::POLL_DURATION_SECONDS), &mbl);
    assert_eq!(count, Some(2.0));
    let sum = value(&samples, &format!("{}_sum", fetcher::POLL_DURATION_SECONDS), &mbl).unwrap();
    assert!((sum - 3.2).abs() < 1e-9, "sum {sum}");

    let routed =
        |o: RouteOutcome| value(&samples, router::MAILS_ROUTED_TOTAL, &[("outcome", o.code())]).unwrap();
    assert!(routed(RouteOutcome::NewTicket) >= 2.0, "process-wide, other tests may add");
    assert_eq!(value(&samples, router::TICKETS_CREATED_TOTAL, &mbl), Some(2.0));
    assert_eq!(value(&samples, router::FOLLOWUPS_TOTAL, &mbl), Some(1.0));
    let latency = format!("{}_count", router::PROCESSING_DURATION_SECONDS);
    assert!(value(&samples, &latency, &[("outcome", "new_ticket")]).unwrap() >= 2.0);
    assert!(value(&samples, router::AUTO_REPLIES_SUPPRESSED_TOTAL, &[("reason", "bulk")]).unwrap() >= 1.0);

    assert_eq!(value(&samples, sender::JOBS_SENT_TOTAL, &bxl), Some(1.0));
    assert_eq!(value(&samples, sender::JOBS_DRY_RUN_TOTAL, &bxl), Some(0.0));
    assert_eq!(value(&samples, sender::JOBS_RETRIED_TOTAL, &bxl), Some(1.0));
    assert_eq!(
        value(&samples, sender::BOX_ERRORS_TOTAL, &[("box", &bx), ("reason", "auth_failed")]),
        Some(1.0)
    );
    assert_eq!(value(&samples, &format!("{}_count", sender::SEND_DURATION_SECONDS), &bxl), Some(1.0));
    assert!(value(&samples, sender::JOBS_DEAD_LETTERED_TOTAL, &[("reason", "rejected")]).unwrap() >= 1.0);

    assert_eq!(
        value(
            &samples,
            deskmail_telemetry::queue::BUILD_INFO,
            &[("daemon", "deskmail-test"), ("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(
        text.contains(&format!("# HELP {} ", fetcher::MAILS_FETCHED_TOTAL)),
        "metrics carry help text: {text}"
    );

    // A second scrape sees later increments (and histogram samples drained since).
    fetcher::mail_fetched(&mb);
    fetcher::poll_duration(&mb, Duration::from_millis(1));
    let samples = parse(&get(addr, "/metrics").await.unwrap().body).unwrap();
    assert_eq!(value(&samples, fetcher::MAILS_FETCHED_TOTAL, &mbl), Some(4.0));
    assert_eq!(value(&samples, &format!("{}_count", fetcher::POLL_DURATION_SECONDS), &mbl), Some(3.0));

    telemetry.stop().await;
}

#[tokio::test]
async fn without_a_port_there_is_no_listener_but_metrics_still_record() {
    let shutdown = CancellationToken::new();
    let cfg = MetricsConfig::default();
    assert!(cfg.port.is_none());
    let telemetry = Telemetry::start(&cfg, "deskmail-test", &shutdown).await.unwrap();
    assert_eq!(telemetry.local_addr(), None);
    let bx = unique("box");
    sender::job_dry_run(&bx);
    let samples = parse(&telemetry.render()).unwrap();
    assert_eq!(value(&samples, sender::JOBS_DRY_RUN_TOTAL, &[("box", &bx)]), Some(1.0));
    telemetry.stop().await;
}
