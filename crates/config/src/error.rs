use std::fmt;

/// One thing wrong with a config: where it came from, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file name (`sender.toml`), the environment variable (`DESKMAIL_METRICS__PORT`),
    /// or `defaults` when neither set the key.
    pub source: String,
    /// The dotted key path, e.g. `metrics.port`.
    pub key: String,
    /// What is wrong, in words, e.g. `70000 is not a port`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.message)
        }
    }
}

/// A config that could not be loaded: every problem found, each naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given with `--config` could not be read.
    #[error("{path}: cannot read the config file: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The values are wrong: one line per problem.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems, for tests and tools that want them one by one.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Unreadable { .. } => &[],
            ConfigError::Invalid(p) => p,
        }
    }
}

fn join_lines(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}
