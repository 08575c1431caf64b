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
///
/// Deserializes from a string, or from a number or boolean (an environment variable of
/// digits arrives as a number) taken as its text. Errors never quote the value.
#[derive(Clone)]
pub struct Secret(SecretString);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl<'v> Visitor<'v> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("is not a string (quote the value)"))
            }
            fn visit_map<A: de::MapAccess<'v>>(self, _: A) -> Result<Secret, A::Error> {
                Err(de::Error::custom("is a table, not a string"))
            }
            fn visit_seq<A: de::SeqAccess<'v>>(self, _: A) -> Result<Secret, A::Error> {
                Err(de::Error::custom("is a list, not a string"))
            }
        }
        d.deserialize_any(SecretVisitor)
    }
}

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

    #[derive(Deserialize)]
    struct S {
        token: Secret,
    }

    #[test]
    fn a_secret_of_digits_is_taken_as_text_and_errors_never_quote_it() {
        let digits: S = toml_de("token = 1234567890123456789");
        assert_eq!(digits.token.expose(), "1234567890123456789");
        let env: S = figment::Figment::new()
            .merge(figment::providers::Serialized::default("token", 98765432109876543210_u128))
            .extract()
            .unwrap();
        assert_eq!(env.token.expose(), "98765432109876543210");
        for text in ["token = 3.14159", "token = [\"hunter2\"]", "token = { v = \"hunter2\" }"] {
            let err = figment::Figment::from(figment::providers::Toml::string(text))
                .extract::<S>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!err.is_empty(), "{text}");
            assert!(!err.contains("hunter2") && !err.contains("3.14159"), "{text}: {err}");
        }
    }

    fn toml_de<T: serde::de::DeserializeOwned>(s: &str) -> T {
        figment::Figment::from(figment::providers::Toml::string(s)).extract().unwrap()
    }
}
