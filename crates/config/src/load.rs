use std::path::Path;

use figment::Figment;
use figment::error::{Actual, Kind};
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;

use crate::error::{ConfigError, Problem};

/// The prefix of every environment variable that overrides a config key.
pub const ENV_PREFIX: &str = "DESKMAIL_";

/// Checks that go beyond types: ranges, combinations, formats. Returns every problem found,
/// as (dotted key, message) pairs, so that an operator fixes them all in one round.
pub trait Validate {
    fn validate(&self) -> Vec<(String, String)>;
}

/// Prefixes the keys of a section's problems with the section name (`port` -> `metrics.port`).
pub fn prefixed(section: &str, problems: Vec<(String, String)>) -> Vec<(String, String)> {
    problems.into_iter().map(|(k, m)| (format!("{section}.{k}"), m)).collect()
}

/// Loads `T` from the TOML file at `path` (when given), then `DESKMAIL_`-prefixed
/// environment variables (`DESKMAIL_AMQP__URL` sets `amqp.url`), then validates it.
///
/// A named file that does not exist is an error; with no file, defaults and the
/// environment must be enough.
pub fn load<T: DeserializeOwned + Validate>(path: Option<&Path>) -> Result<T, ConfigError> {
    load_with_env_prefix(path, ENV_PREFIX)
}

/// [`load`] with another environment prefix, for tools whose variables must not collide
/// with the daemons' (`deskmailctl` reads `DESKMAILCTL_*`).
pub fn load_with_env_prefix<T: DeserializeOwned + Validate>(
    path: Option<&Path>,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let file_label = path
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "defaults".to_owned());
    let mut figment = Figment::new();
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Unreadable { path: path.display().to_string(), source })?;
        figment = figment.merge(Toml::string(&text));
    }
    figment = figment.merge(Env::prefixed(env_prefix).split("__"));
    let value: T = figment.extract().map_err(|e| {
        ConfigError::Invalid(e.into_iter().map(|e| problem_from(&e, &file_label, env_prefix)).collect())
    })?;
    let problems: Vec<Problem> = value
        .validate()
        .into_iter()
        .map(|(key, message)| Problem {
            source: source_of(&figment, &key, &file_label, env_prefix),
            key,
            message,
        })
        .collect();
    if problems.is_empty() { Ok(value) } else { Err(ConfigError::Invalid(problems)) }
}

/// Which provider set `key`: the environment variable's name, or the file.
fn source_of(figment: &Figment, key: &str, file_label: &str, env_prefix: &str) -> String {
    match figment.find_metadata(key) {
        Some(md) if md.name.contains("environment") => env_name(env_prefix, key.split('.')),
        _ => file_label.to_owned(),
    }
}

fn env_name<'a>(env_prefix: &str, keys: impl Iterator<Item = &'a str>) -> String {
    let keys: Vec<String> = keys.map(|k| k.to_ascii_uppercase()).collect();
    format!("{env_prefix}{}", keys.join("__"))
}

fn problem_from(e: &figment::Error, file_label: &str, env_prefix: &str) -> Problem {
    let mut path: Vec<&str> = e.path.iter().map(String::as_str).collect();
    let message = match &e.kind {
        Kind::MissingField(name) => {
            if path.last() != Some(&name.as_ref()) {
                path.push(name);
            }
            "is required but missing".to_owned()
        }
        Kind::UnknownField(name, expected) => {
            // figment puts the unknown key in the path already; serde alone does not.
            if path.last() != Some(&name.as_str()) {
                path.push(name);
            }
            if expected.is_empty() {
                "is not a known key".to_owned()
            } else {
                format!("is not a known key (expected one of: {})", expected.join(", "))
            }
        }
        Kind::UnknownVariant(actual, expected) => {
            format!("{actual:?} is not one of: {}", expected.join(", "))
        }
        Kind::InvalidType(actual, expected) => format!("{} is not {expected}", describe(actual)),
        Kind::InvalidValue(actual, expected) => format!("{} is not {expected}", describe(actual)),
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    };
    let from_env = e.metadata.as_ref().is_some_and(|md| md.name.contains("environment"));
    let source = if from_env { env_name(env_prefix, path.iter().copied()) } else { file_label.to_owned() };
    Problem { source, key: path.join("."), message }
}

fn describe(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("{s:?}"),
        Actual::Signed(n) => n.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}
