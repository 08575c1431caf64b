//! Building a create or update request from flags: the message and, for updates, the field
//! mask of exactly the flags given (plus the fields a `--from-json` document sets).

use std::io::Read;

use clap::Args;
use clap::builder::BoolishValueParser;

use crate::fail::Fail;
use crate::proto::{self, Proto};

/// `--from-json FILE|-`, shared by every create and update command.
#[derive(Debug, Clone, Default, Args)]
pub struct JsonArg {
    /// The whole resource as proto3 JSON (a file, or - for stdin), for fields no flag covers;
    /// flags given as well override it. On update, the mask names the fields it contains.
    #[arg(long, value_name = "FILE|-")]
    pub from_json: Option<String>,
}

/// Parser for `--flag true|false` (also yes/no, on/off, 1/0).
pub fn boolish() -> BoolishValueParser {
    BoolishValueParser::new()
}

pub struct Patch<T> {
    pub message: T,
    pub paths: Vec<String>,
}

impl<T: Proto> Patch<T> {
    /// Starts from the `--from-json` document, or from an empty message.
    pub fn new(json: &JsonArg) -> Result<Self, Fail> {
        match &json.from_json {
            None => Ok(Self { message: T::default(), paths: Vec::new() }),
            Some(source) => {
                let text = read_source(source)?;
                let (message, paths) = proto::from_json::<T>(&text, source)?;
                Ok(Self { message, paths })
            }
        }
    }

    /// When the flag was given: applies it and records its path.
    pub fn set<V>(&mut self, path: &str, value: Option<V>, apply: impl FnOnce(&mut T, V)) {
        if let Some(v) = value {
            apply(&mut self.message, v);
            self.add(path);
        }
    }

    pub fn add(&mut self, path: &str) {
        if !self.paths.iter().any(|p| p == path) {
            self.paths.push(path.to_owned());
        }
    }

    /// For updates: refuses an update that changes nothing.
    pub fn require_changes(&self) -> Result<(), Fail> {
        if self.paths.is_empty() {
            return Err(Fail::Usage(
                "nothing to update: give the flags of the fields to change (see --help)".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A file's text, or stdin's for `-`.
pub fn read_source(source: &str) -> Result<String, Fail> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Fail::Usage(format!("--from-json -: cannot read stdin: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(source).map_err(|e| Fail::Usage(format!("--from-json {source}: {e}")))
    }
}

/// Seconds, or a duration with a unit (`90s`, `5m`).
pub fn parse_seconds(value: &str) -> Result<u32, String> {
    let seconds = match value.parse::<u64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(value).map_err(|e| e.to_string())?.as_secs(),
    };
    u32::try_from(seconds).map_err(|_| format!("{value} is too long"))
}

/// Bytes, or with a binary suffix: `512K`, `25M`, `1G` (`KB`/`MB`/`GB`/`KiB`... accepted too).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(digits);
    let n: u64 = number.parse().map_err(|_| format!("{value:?} is not a size (bytes, or 512K, 25M, 1G)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{value:?} is not a size (bytes, or 512K, 25M, 1G)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("{value} is too large"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("25M").unwrap(), 25 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12X").is_err());
        assert_eq!(parse_seconds("90").unwrap(), 90);
        assert_eq!(parse_seconds("5m").unwrap(), 300);
        assert!(parse_seconds("soon").is_err());
    }
}
