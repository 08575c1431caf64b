//! `/healthz` and `/readyz` over real HTTP, the listener's lifetime, and bind errors.

use std::net::{Ipv4Addr, TcpListener};

use deskmail_config::{MetricsConfig, Port};
use deskmail_telemetry::{Telemetry, TelemetryError};
use tokio_util::sync::CancellationToken;

use crate::http::get;

#[tokio::test]
async fn readyz_follows_the_checks_with_reasons() {
    crate::init_tracing();
    let shutdown = CancellationToken::new();
    let telemetry =
        Telemetry::start(&crate::config_on_free_port(), "deskmail-test", &shutdown).await.unwrap();
    let addr = telemetry.local_addr().unwrap();

    // Before the daemon registers its checks it is still starting: not ready.
    let no_checks = get(addr, "/readyz").await.unwrap();
    assert_eq!(no_checks.status, 503, "{}", no_checks.body);
    assert!(
        no_checks.body.contains("starting: not ready: no readiness check registered yet"),
        "{}",
        no_checks.body
    );

    let readiness = telemetry.readiness();
    let rabbit = readiness.register("rabbitmq");
    let configd = readiness.register("configd");
    let answer = get(addr, "/readyz").await.unwrap();
    assert_eq!(answer.status, 503);
    assert!(answer.content_type.starts_with("text/plain"), "{}", answer.content_type);
    assert!(answer.body.starts_with("not ready\n"), "{}", answer.body);
    assert!(answer.body.contains("rabbitmq: not ready: not checked yet\n"), "{}", answer.body);
    assert!(answer.body.contains("configd: not ready: not checked yet\n"), "{}", answer.body);

    configd.set_ready();
    rabbit.set_unready("connect_failed: Connection refused (os error 111)");
    let answer = get(addr, "/readyz").await.unwrap();
    assert_eq!(answer.status, 503);
    assert!(answer.body.contains("rabbitmq: not ready: connect_failed: Connection refused (os error 111)\n"));
    assert!(answer.body.contains("configd: ready\n"), "{}", answer.body);

    rabbit.set_ready();
    let answer = get(addr, "/readyz").await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, "ready\nconfigd: ready\nrabbitmq: ready\n");

    // Back to unready; a reason quoting a URL does not publish its password.
    rabbit.set_unready("amqp://guest:s3cret@127.0.0.1:5672/%2f: connection closed");
    let answer = get(addr, "/readyz").await.unwrap();
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains("rabbitmq: not ready: amqp://guest:***@127.0.0.1:5672/%2f: connection closed")
    );
    assert!(!answer.body.contains("s3cret"), "{}", answer.body);

    // A dropped flag leaves its check unready rather than vanishing.
    rabbit.set_ready();
    drop(configd);
    let answer = get(addr, "/readyz").await.unwrap();
    assert_eq!(answer.status, 503);
    assert!(answer.body.contains("configd: not ready: its owner stopped\n"), "{}", answer.body);

    telemetry.stop().await;
}

#[tokio::test]
async fn healthz_answers_while_running_and_readyz_fails_once_shutdown_begins() {
    let shutdown = CancellationToken::new();
    let telemetry =
        Telemetry::start(&crate::config_on_free_port(), "deskmail-test", &shutdown).await.unwrap();
    let addr = telemetry.local_addr().unwrap();
    let flag = telemetry.readiness().register("database");
    flag.set_ready();

    let health = get(addr, "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok: deskmail-test is running\n");
    assert_eq!(get(addr, "/readyz").await.unwrap().status, 200);
    assert_eq!(get(addr, "/nothing-here").await.unwrap().status, 404);

    // Draining: still alive and scrapeable, no longer ready.
    shutdown.cancel();
    let ready = get(addr, "/readyz").await.unwrap();
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("shutdown: not ready: shutting down\n"), "{}", ready.body);
    assert_eq!(get(addr, "/healthz").await.unwrap().status, 200);
    assert_eq!(get(addr, "/metrics").await.unwrap().status, 200);

    telemetry.stop().await;
    assert!(get(addr, "/healthz").await.is_err(), "the listener is closed after stop()");
}

#[tokio::test]
async fn a_port_in_use_is_refused_naming_metrics_port() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = MetricsConfig { bind: Ipv4Addr::LOCALHOST.into(), port: Port::new(port) };
    let err = Telemetry::start(&cfg, "deskmail-test", &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, TelemetryError::Bind { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("metrics.port: "), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("address already in use"), "{msg}");
}

/// The container image's HEALTHCHECK speaks HTTP/1.0 through bash's `/dev/tcp` (no curl in
/// the image): the listener must answer it.
#[tokio::test]
async fn healthz_answers_a_bare_http_1_0_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let shutdown = CancellationToken::new();
    let telemetry =
        Telemetry::start(&crate::config_on_free_port(), "deskmail-test", &shutdown).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(telemetry.local_addr().unwrap()).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_string(&mut reply))
        .await
        .expect("HTTP/1.0: the server closes after the answer")
        .unwrap();
    let status_line = reply.lines().next().unwrap_or_default();
    assert_eq!(status_line.split(' ').nth(1), Some("200"), "{reply}");
    assert!(reply.ends_with("ok: deskmail-test is running\n"), "{reply}");
    telemetry.stop().await;
}
