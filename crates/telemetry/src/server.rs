//! The HTTP listener: `/metrics`, `/healthz` and `/readyz` on the metrics port.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::readiness::{CheckState, Readiness};

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) daemon: String,
    pub(crate) handle: PrometheusHandle,
    pub(crate) readiness: Readiness,
    /// The daemon's shutdown token: once cancelled, `/readyz` answers 503 so load
    /// balancers stop sending work while the daemon drains.
    pub(crate) shutdown: CancellationToken,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Rendering does not drain histogram samples by itself; upkeep does.
    state.handle.run_upkeep();
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], state.handle.render()).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, PLAIN_TEXT)], format!("ok: {} is running\n", state.daemon)).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, body) = readyz_body(&state.readiness, state.shutdown.is_cancelled());
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, PLAIN_TEXT)], body).into_response()
}

/// The verdict and the plain-text body of `/readyz`: a first line `ready` or `not ready`,
/// then one line per check (`name: ready` or `name: not ready: reason`).
pub(crate) fn readyz_body(readiness: &Readiness, shutting_down: bool) -> (bool, String) {
    let report = readiness.report();
    let ready = report.is_ready() && !shutting_down;
    let mut body = String::from(if ready { "ready\n" } else { "not ready\n" });
    if shutting_down {
        body.push_str("shutdown: not ready: shutting down\n");
    }
    for (name, state) in &report.checks {
        // Writing to a String cannot fail.
        let _ = match state {
            CheckState::Ready => writeln!(body, "{name}: ready"),
            CheckState::Unready(reason) => writeln!(body, "{name}: not ready: {reason}"),
        };
    }
    if report.checks.is_empty() && !shutting_down {
        body.push_str("starting: not ready: no readiness check registered yet\n");
    }
    (ready, body)
}
