//! deskmail-configclient: the daemons' side of configd.
//!
//! - [`ConfigClient`]: one authenticated, lazily connected channel to configd (TLS for
//!   `https://` URLs, the daemon bearer token marked sensitive so it is never logged), with the
//!   calls daemons make: status reports, fetch leases, rotated OAuth2 refresh tokens.
//! - [`ConfigWatcher`]: follows configd's `Watch` stream in the background, reconnecting with
//!   backoff; keeps the last good snapshot while configd is away (the design's rule), and says
//!   whether it is connected (for `/readyz`).

mod watcher;

use std::time::Duration;

use deskmail_config::ConfigServiceConfig;
use deskmail_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use watcher::{ConfigWatcher, Snapshot};

/// What went wrong talking to configd.
#[derive(Debug, thiserror::Error)]
pub enum ConfigClientError {
    /// The `[config_service]` section cannot be used (bad URL, unreadable CA file, bad token).
    #[error("config_service.{key}: {message}")]
    Config { key: &'static str, message: String },
    /// configd answered with an error, or could not be reached.
    #[error("configd {call}: {status_code:?}: {message}")]
    Call { call: &'static str, status_code: tonic::Code, message: String },
}

impl ConfigClientError {
    fn call(call: &'static str, status: tonic::Status) -> Self {
        Self::Call { call, status_code: status.code(), message: status.message().to_owned() }
    }

    /// True when configd could not be reached (or was busy): worth retrying as is.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Call {
                status_code: tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Cancelled,
                ..
            }
        )
    }
}

/// Adds `authorization: Bearer <token>` (sensitive: tonic never logs it) to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// `Bearer <token>`, marked sensitive; `None` when the token is not printable ASCII.
    pub fn from_token(token: &str) -> Option<Self> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.trim()).parse().ok()?;
        value.set_sensitive(true);
        Some(Self(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel with the bearer token on every call.
pub type Authed = InterceptedService<Channel, Bearer>;

/// One connection to configd for a daemon. Cheap to clone.
#[derive(Clone)]
pub struct ConfigClient {
    channel: Channel,
    bearer: Bearer,
    url: String,
}

impl std::fmt::Debug for ConfigClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigClient").field("url", &self.url).finish_non_exhaustive()
    }
}

/// How long one unary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

impl ConfigClient {
    /// Builds the channel; nothing is dialled until the first call, so a daemon can start
    /// while configd is still coming up.
    pub fn new(config: &ConfigServiceConfig) -> Result<Self, ConfigClientError> {
        let url = config.url.as_str().trim_end_matches('/').to_owned();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ConfigClientError::Config { key: "url", message: format!("{url}: {e}") })?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if config.url.scheme() == "https" {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(ca) = &config.ca_file {
                let pem = std::fs::read(ca).map_err(|e| ConfigClientError::Config {
                    key: "ca_file",
                    message: format!("{}: {e}", ca.display()),
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ConfigClientError::Config { key: "url", message: format!("TLS: {e}") })?;
        }
        let bearer = Bearer::from_token(config.token.expose()).ok_or_else(|| ConfigClientError::Config {
            key: "token",
            message: "must be printable ASCII".to_owned(),
        })?;
        Ok(Self { channel: endpoint.connect_lazy(), bearer, url })
    }

    /// configd's URL, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn parts(&self) -> (Channel, Bearer) {
        (self.channel.clone(), self.bearer.clone())
    }

    pub fn watch_client(&self) -> pb::config_watch_client::ConfigWatchClient<Authed> {
        let (c, b) = self.parts();
        pb::config_watch_client::ConfigWatchClient::with_interceptor(c, b)
    }
    pub fn status_client(&self) -> pb::status_service_client::StatusServiceClient<Authed> {
        let (c, b) = self.parts();
        pb::status_service_client::StatusServiceClient::with_interceptor(c, b)
    }
    pub fn lease_client(&self) -> pb::lease_service_client::LeaseServiceClient<Authed> {
        let (c, b) = self.parts();
        pb::lease_service_client::LeaseServiceClient::with_interceptor(c, b)
    }

    fn request<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// The current config, once (the watcher is the usual way).
    pub async fn get_snapshot(&self) -> Result<pb::ConfigSnapshot, ConfigClientError> {
        self.watch_client()
            .get_snapshot(Self::request(pb::GetSnapshotRequest {}))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ConfigClientError::call("GetSnapshot", s))
    }

    /// Reports the outcome of a poll or send. Messages are cut to what configd keeps.
    pub async fn report_status(&self, report: pb::ReportStatusRequest) -> Result<(), ConfigClientError> {
        self.status_client()
            .report_status(Self::request(report))
            .await
            .map(|_| ())
            .map_err(|s| ConfigClientError::call("ReportStatus", s))
    }

    /// Takes and renews fetch leases for `holder`; returns the mailbox ids it now holds.
    pub async fn acquire_leases(
        &self,
        holder: &str,
        ttl: Duration,
        max: u32,
    ) -> Result<Vec<pb::Lease>, ConfigClientError> {
        let ttl_seconds = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).max(5);
        self.lease_client()
            .acquire_leases(Self::request(pb::AcquireLeasesRequest {
                holder: holder.to_owned(),
                ttl_seconds,
                max,
            }))
            .await
            .map(|r| r.into_inner().leases)
            .map_err(|s| ConfigClientError::call("AcquireLeases", s))
    }

    /// Gives leases back (all of the holder's when `mailbox_ids` is empty), so another
    /// fetcher can take them at once instead of waiting for the TTL.
    pub async fn release_leases(
        &self,
        holder: &str,
        mailbox_ids: Vec<String>,
    ) -> Result<(), ConfigClientError> {
        self.lease_client()
            .release_leases(Self::request(pb::ReleaseLeasesRequest {
                holder: holder.to_owned(),
                mailbox_ids,
            }))
            .await
            .map(|_| ())
            .map_err(|s| ConfigClientError::call("ReleaseLeases", s))
    }

    /// Stores the refresh token an OAuth2 provider rotated.
    pub async fn store_refresh_token(
        &self,
        mailbox_id: &str,
        direction: pb::Direction,
        refresh_token: &str,
    ) -> Result<(), ConfigClientError> {
        self.status_client()
            .store_refresh_token(Self::request(pb::StoreRefreshTokenRequest {
                mailbox_id: mailbox_id.to_owned(),
                direction: direction as i32,
                refresh_token: refresh_token.to_owned(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| ConfigClientError::call("StoreRefreshToken", s))
    }
}

/// A stable id for this process, for leases and status reports: `name@host:pid:start`.
pub fn holder_id(daemon: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{daemon}@{host}:{}:{start}", std::process::id())
}
