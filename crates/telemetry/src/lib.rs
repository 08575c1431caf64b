//! Observability for the deskmail daemons: a Prometheus recorder behind the `metrics` facade,
//! one small HTTP listener on the configured metrics port serving `GET /metrics`,
//! `GET /healthz` and `GET /readyz`, named readiness checks (plus one that follows a RabbitMQ
//! connection, [`rabbitmq`]), and the name and helper of every deskmail metric ([`fetcher`],
//! [`router`], [`sender`], [`queue`]; documented in `docs/metrics.md`). Depends on
//! `deskmail-config` (the `[metrics]` section), `deskmail-core` (reason codes) and lapin
//! (queue depth, connection state); never on a daemon crate.
//!
//! ```no_run
//! # async fn demo(cfg: deskmail_config::MetricsConfig, shutdown: tokio_util::sync::CancellationToken)
//! # -> Result<(), deskmail_telemetry::TelemetryError> {
//! let telemetry = deskmail_telemetry::Telemetry::start(&cfg, "deskmail-fetcher", &shutdown).await?;
//! let rabbit = telemetry.readiness().register("rabbitmq");
//! rabbit.set_ready();
//! deskmail_telemetry::fetcher::mail_fetched("mb-1");
//! // ... run until shutdown, then:
//! telemetry.stop().await;
//! # Ok(()) }
//! ```
//!
//! Label values are bounded by construction: config ids (mailbox, box), queue names, and
//! codes from closed enums. No helper takes an address, a subject or free text.

pub mod configd;
pub mod fetcher;
pub mod queue;
pub mod rabbitmq;
mod readiness;
mod recorder;
pub mod router;
pub mod sender;
mod server;

use std::net::SocketAddr;

use deskmail_config::MetricsConfig;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use readiness::{CheckState, NOT_CHECKED_YET, OWNER_STOPPED, Readiness, ReadinessReport, ReadyFlag};
pub use recorder::DURATION_BUCKETS;

/// How long [`Telemetry::stop`] lets requests in flight finish.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What can stop telemetry from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The metrics listener could not bind (port in use, address not on this host, port
    /// below 1024 without the capability).
    #[error(
        "metrics.port: cannot listen on {addr}: {source} (set metrics.port to a free port, or remove it)"
    )]
    Bind {
        /// `metrics.bind`:`metrics.port`.
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Another `metrics` recorder was installed in this process before ours.
    #[error("metrics: another metrics recorder is already installed in this process")]
    RecorderTaken,
    /// The exporter refused its settings (a bug here, not a config problem).
    #[error("metrics: cannot build the Prometheus recorder: {0}")]
    Recorder(String),
}

/// A daemon's telemetry: the recorder (installed once per process), the readiness checks and,
/// when `metrics.port` is set, the HTTP listener.
///
/// The listener keeps serving after the daemon's shutdown token is cancelled (so the last
/// scrape and `/healthz` still work while work in flight drains; `/readyz` answers 503
/// "shutting down" from then on); it stops on [`Telemetry::stop`] or when this value is dropped.
pub struct Telemetry {
    handle: PrometheusHandle,
    readiness: Readiness,
    local_addr: Option<SocketAddr>,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl Telemetry {
    /// Installs the recorder (the first time in this process; later calls share it), records
    /// `deskmail_build_info{daemon}` and, when `cfg.port` is set, binds `cfg.bind:cfg.port`
    /// and serves `/metrics`, `/healthz` and `/readyz` there. Without a port there is no
    /// listener, but the recorder is still installed: metric calls cost what they always do
    /// and [`Telemetry::render`] shows them.
    pub async fn start(
        cfg: &MetricsConfig,
        daemon: &str,
        shutdown: &CancellationToken,
    ) -> Result<Telemetry, TelemetryError> {
        let handle = recorder::install()?;
        queue::build_info(daemon);
        let readiness = Readiness::new();
        let stop = CancellationToken::new();
        let (local_addr, server) = match cfg.port {
            None => {
                info!(daemon, "No metrics.port: no metrics, health or readiness listener.");
                (None, None)
            }
            Some(port) => {
                let addr = SocketAddr::new(cfg.bind, port.get());
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| TelemetryError::Bind { addr, source })?;
                let local = listener.local_addr().unwrap_or(addr);
                let app = server::router(server::AppState {
                    daemon: daemon.to_owned(),
                    handle: handle.clone(),
                    readiness: readiness.clone(),
                    shutdown: shutdown.clone(),
                });
                let until = stop.clone();
                let task = tokio::spawn(async move {
                    let served =
                        axum::serve(listener, app).with_graceful_shutdown(until.cancelled_owned()).await;
                    if let Err(e) = served {
                        warn!(error = %e, "Metrics listener stopped on an error.");
                    }
                });
                info!(daemon, %local, "Serving /metrics, /healthz and /readyz.");
                (Some(local), Some(task))
            }
        };
        // Histogram samples are drained into buckets on upkeep; scrapes do it too, but
        // without scrapes (no port) memory must stay bounded.
        let upkeep_handle = handle.clone();
        let upkeep_stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = upkeep_stop.cancelled() => break,
                    _ = tick.tick() => upkeep_handle.run_upkeep(),
                }
            }
        });
        Ok(Telemetry { handle, readiness, local_addr, stop, server })
    }

    /// The readiness checks `/readyz` reports; register one per dependency.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The address the listener is bound to (`None` without `metrics.port`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The Prometheus text `/metrics` would serve now.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Stops the listener (letting requests in flight finish, for up to 5 s) and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(mut server) = self.server.take() {
            // A listener task that panicked has nothing left to stop; one still serving a
            // slow client after the grace is cut off.
            if tokio::time::timeout(STOP_GRACE, &mut server).await.is_err() {
                server.abort();
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("local_addr", &self.local_addr)
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

/// Gives every deskmail metric its `# HELP` line (called once, when the recorder is installed).
fn describe_all() {
    fetcher::describe();
    router::describe();
    sender::describe();
    queue::describe();
}
