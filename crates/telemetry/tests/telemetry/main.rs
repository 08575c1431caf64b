//! deskmail-telemetry over real HTTP (a real client, `ureq`, against the real listener) and,
//! for consumer lag, against the local RabbitMQ in a vhost of its own. Fails, never skips,
//! when the broker is unreachable: run `make services`.
//!
//! The `metrics` recorder is process-wide: tests that share a process share it, so every
//! test labels its series with ids of its own (`deskmail_testkit::unique`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http;
mod lag;
mod metrics;
mod readiness;

use std::net::{IpAddr, Ipv4Addr, TcpListener};

use deskmail_config::{MetricsConfig, Port};

/// A metrics config on 127.0.0.1 and a port that was free a moment ago.
pub fn config_on_free_port() -> MetricsConfig {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    MetricsConfig { bind: IpAddr::V4(Ipv4Addr::LOCALHOST), port: Port::new(port) }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
