//! Loading and validating daemon configuration: a TOML file overridden by
//! `DESKMAIL_`-prefixed environment variables (figment), checked at load so that a bad or
//! missing value is refused with its key named (`sender.toml: metrics.port: 70000 is not a
//! port`). Also the config sections several daemons share (the config-service client,
//! metrics, databases) and the value types they are made of ([`Port`], [`Secret`]).
//!
//! Depends on no other deskmail crate; daemons compose their `Config` struct from the
//! sections here and those of the crates that own them (`deskmail_mq::AmqpConfig`,
//! `deskmail_runtime::LogConfig`).

mod error;
mod load;
mod sections;
mod values;

pub use error::{ConfigError, Problem};
pub use load::{ENV_PREFIX, Validate, load, load_with_env_prefix, prefixed};
pub use sections::{ConfigServiceConfig, DatabaseConfig, MetricsConfig};
pub use values::{Port, Secret};
