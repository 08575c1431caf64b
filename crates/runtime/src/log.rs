use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?} is not a log format (text or json)")),
        }
    }
}

/// The `[log]` section of every daemon's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`. Default `text`. Env `DESKMAIL_LOG__FORMAT`; `--log-format` overrides.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,deskmail_mq=debug`. Default `info`.
    /// Env `DESKMAIL_LOG__LEVEL`; `RUST_LOG` overrides when set.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".to_owned()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::default(), level: default_level() }
    }
}

impl LogConfig {
    /// Problems with this section as (key, message) pairs; empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        match EnvFilter::try_new(&self.level) {
            Ok(_) => Vec::new(),
            Err(e) => vec![("level".to_owned(), format!("{:?} is not a log filter: {e}", self.level))],
        }
    }
}

/// Install the global tracing subscriber: logs go to standard error, as text or JSON.
/// `RUST_LOG`, when set, overrides the configured level. Calling it twice is harmless
/// (the second call keeps the first subscriber), so tests may start several daemons.
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match config.format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    // An already installed subscriber (a second daemon in one test process) is fine.
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn bad_level_is_named() {
        let c = LogConfig { format: LogFormat::Text, level: "info,=[".to_owned() };
        let problems = c.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "level");
    }
}
