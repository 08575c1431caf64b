use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A TCP port, 1-65535. Deserializes from an integer (or a numeric string, as environment
/// variables are) and refuses anything else with `70000 is not a port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(u16);

impl Port {
    /// A port known at compile time; 0 is refused at compile time.
    pub const fn from_const(n: u16) -> Self {
        assert!(n != 0, "0 is not a port");
        Self(n)
    }

    /// `None` for 0, which is not a port one can connect to or announce.
    pub const fn new(n: u16) -> Option<Self> {
        if n == 0 { None } else { Some(Self(n)) }
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (1-65535)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .ok()
                    .and_then(Port::new)
                    .ok_or_else(|| E::custom(format!("{v} is not a port (1-65535)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("{v} is not a port (1-65535)"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                match v.trim().parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("{v:?} is not a port (1-65535)"))),
                }
            }
        }
        d.deserialize_any(PortVisitor)
    }
}

/// A secret from config (a token, a password, a database URL with a password in it).
/// Its `Debug` and `Display` never show the value; call [`Secret::expose`] where it is used.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The value itself: pass it on, never log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Format;

    #[derive(Deserialize)]
    struct P {
        port: Port,
    }

    #[test]
    fn ports() {
        let ok: P = toml_de("port = 25");
        assert_eq!(ok.port.get(), 25);
        for (text, msg) in [
            ("port = 70000", "70000 is not a port"),
            ("port = 0", "0 is not a port"),
            ("port = -1", "-1 is not a port"),
            ("port = \"x\"", "\"x\" is not a port"),
        ] {
            let err = figment::Figment::from(figment::providers::Toml::string(text))
                .extract::<P>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(msg), "{text}: {err}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    fn toml_de<T: serde::de::DeserializeOwned>(s: &str) -> T {
        figment::Figment::from(figment::providers::Toml::string(s)).extract().unwrap()
    }
}
