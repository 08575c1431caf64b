//! The connection to configd (TLS for https endpoints) and the bearer-token interceptor.

use std::time::Duration;

use deskmail_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::CliConfig;
use crate::fail::Fail;

/// Adds `authorization: Bearer <token>` (marked sensitive, so never logged) to every call.
pub use deskmail_configclient::Bearer;

pub type Svc = InterceptedService<Channel, Bearer>;

/// An authenticated connection; one typed client per service on demand.
#[derive(Clone)]
pub struct Api {
    channel: Channel,
    bearer: Bearer,
}

/// Opens the channel. `at_least` raises the call limit for slow calls (connection tests).
pub async fn channel(config: &CliConfig, at_least: Duration) -> Result<Channel, Fail> {
    let timeout = config.timeout.max(at_least);
    let mut endpoint = Endpoint::from_shared(config.endpoint.to_string())
        .map_err(|e| Fail::Config(format!("endpoint {}: {e}", config.endpoint)))?
        .timeout(timeout)
        .connect_timeout(config.timeout);
    if config.endpoint.scheme() == "https" {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(ca) = &config.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| Fail::Config(format!("ca_file {}: {e}", ca.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| Fail::Config(format!("TLS settings: {e}")))?;
    }
    endpoint.connect().await.map_err(|e| {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        Fail::Failed(format!("cannot reach configd at {}: {why}", config.endpoint))
    })
}

impl Api {
    /// Connects with the admin token; without one, a config error naming where to put it.
    pub async fn connect(config: &CliConfig, at_least: Duration) -> Result<Self, Fail> {
        let token = config.token.as_ref().map(|t| t.expose().trim()).unwrap_or_default();
        if token.is_empty() {
            return Err(Fail::Config(
                "no admin token: set `token` in the config file (--config) or DESKMAILCTL_TOKEN".to_owned(),
            ));
        }
        let bearer = Bearer::from_token(token)
            .ok_or_else(|| Fail::Config("token: must be printable ASCII".to_owned()))?;
        Ok(Self { channel: channel(config, at_least).await?, bearer })
    }

    fn parts(&self) -> (Channel, Bearer) {
        (self.channel.clone(), self.bearer.clone())
    }

    pub fn mailboxes(&self) -> pb::mailbox_service_client::MailboxServiceClient<Svc> {
        let (c, b) = self.parts();
        pb::mailbox_service_client::MailboxServiceClient::with_interceptor(c, b)
    }
    pub fn queues(&self) -> pb::queue_service_client::QueueServiceClient<Svc> {
        let (c, b) = self.parts();
        pb::queue_service_client::QueueServiceClient::with_interceptor(c, b)
    }
    pub fn addresses(&self) -> pb::system_address_service_client::SystemAddressServiceClient<Svc> {
        let (c, b) = self.parts();
        pb::system_address_service_client::SystemAddressServiceClient::with_interceptor(c, b)
    }
    pub fn companies(&self) -> pb::company_service_client::CompanyServiceClient<Svc> {
        let (c, b) = self.parts();
        pb::company_service_client::CompanyServiceClient::with_interceptor(c, b)
    }
    pub fn contracts(&self) -> pb::contract_service_client::ContractServiceClient<Svc> {
        let (c, b) = self.parts();
        pb::contract_service_client::ContractServiceClient::with_interceptor(c, b)
    }
    pub fn filters(&self) -> pb::filter_service_client::FilterServiceClient<Svc> {
        let (c, b) = self.parts();
        pb::filter_service_client::FilterServiceClient::with_interceptor(c, b)
    }
    pub fn settings(&self) -> pb::settings_service_client::SettingsServiceClient<Svc> {
        let (c, b) = self.parts();
        pb::settings_service_client::SettingsServiceClient::with_interceptor(c, b)
    }
    pub fn status(&self) -> pb::status_service_client::StatusServiceClient<Svc> {
        let (c, b) = self.parts();
        pb::status_service_client::StatusServiceClient::with_interceptor(c, b)
    }
    pub fn watch(&self) -> pb::config_watch_client::ConfigWatchClient<Svc> {
        let (c, b) = self.parts();
        pb::config_watch_client::ConfigWatchClient::with_interceptor(c, b)
    }
}
