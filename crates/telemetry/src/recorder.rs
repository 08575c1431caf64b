//! The process-wide Prometheus recorder behind the `metrics` facade.

use std::sync::{Mutex, PoisonError};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::TelemetryError;

/// Upper bounds (seconds) of the buckets of every histogram. All deskmail histograms are
/// durations (`*_seconds`), from a 5 ms parse to a minutes-long poll of a slow server. Set
/// explicitly: without buckets the exporter renders histograms as summaries.
pub const DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// The handle of the recorder this crate installed, once installed.
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the recorder the first time and returns its handle; later calls (a second
/// daemon in the same process, tests) share it. Fails when some other recorder was
/// installed first, since the `metrics` facade takes exactly one per process.
pub(crate) fn install() -> Result<PrometheusHandle, TelemetryError> {
    let mut slot = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| TelemetryError::RecorderTaken)?;
    crate::describe_all();
    *slot = Some(handle.clone());
    Ok(handle)
}
