//! [`Pop3Client`]: connect (plain, STLS, implicit TLS), log in, and the RFC 1939 commands.

use std::fmt;
use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::wire::{Status, Stream, Wire, tls_handshake};
use crate::{Capabilities, Pop3Config, Pop3Error, Security};

/// RFC 5034: an AUTH command line longer than this (CRLF included) must not carry the
/// initial response; it is sent after the server's empty `+ ` challenge instead.
const MAX_AUTH_LINE: usize = 255;
/// Upper bound for pre-allocating a message buffer from the size the server claims.
const MAX_PREALLOC: u64 = 16 * 1024 * 1024;

/// An open POP3 session. Drop it without [`Pop3Client::quit`] and the server discards the
/// deletions (DELE) of this session, as RFC 1939 specifies.
pub struct Pop3Client {
    wire: Wire,
    addr: String,
    greeting: String,
    /// Set after an error that leaves the connection out of step (I/O, timeout, garbage).
    broken: bool,
}

impl fmt::Debug for Pop3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pop3Client")
            .field("addr", &self.addr)
            .field("tls", &self.wire.is_tls())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// One LIST entry: message number and size in octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListEntry {
    /// Message number (1-based, valid for this session only).
    pub id: u32,
    /// Size in octets, as the server counts it (CRLF line ends).
    pub size: u64,
}

/// One UIDL entry: message number and the server's unique id, stable across sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlEntry {
    /// Message number.
    pub id: u32,
    /// Unique id (1-70 printable characters).
    pub uid: String,
}

fn no_crlf(what: &str, value: &str) -> Result<(), Pop3Error> {
    if value.contains(['\r', '\n']) {
        return Err(Pop3Error::InvalidInput(format!("{what} contains CR or LF")));
    }
    Ok(())
}

/// Replaces every secret (of 3 or more characters) in a server reply by `<redacted>`.
fn redact(text: &str, secrets: &[&str]) -> String {
    secrets.iter().filter(|s| s.len() >= 3).fold(text.to_string(), |t, s| t.replace(s, "<redacted>"))
}

fn parse_pair<T: std::str::FromStr>(verb: &'static str, text: &str) -> Result<(u32, T), Pop3Error> {
    let bad = || Pop3Error::Protocol { command: verb, reply: text.to_string() };
    let mut words = text.split_whitespace();
    let id = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let value = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    Ok((id, value))
}

impl Pop3Client {
    /// Connects, reads the greeting and, for [`Security::StartTls`], upgrades with STLS;
    /// it refuses to go on in plaintext when CAPA does not list STLS.
    pub async fn connect(config: &Pop3Config) -> Result<Self, Pop3Error> {
        let addr = format!("{}:{}", config.host, config.port);
        let timeout = config.timeout;
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect((config.host.as_str(), config.port)))
            .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(Pop3Error::Connect { addr, source }),
            Err(_) => return Err(Pop3Error::Timeout { during: "connect", after: timeout }),
        };
        let _ = tcp.set_nodelay(true);
        let tls = match config.security {
            Security::Plain => None,
            Security::StartTls | Security::Tls => {
                let name = config.tls_server_name.as_deref().unwrap_or(&config.host);
                let name = ServerName::try_from(name.to_string())
                    .map_err(|e| Pop3Error::InvalidInput(format!("TLS server name {name:?}: {e}")))?;
                Some((config.tls.client_config()?, name))
            }
        };
        let stream = match (&config.security, &tls) {
            (Security::Tls, Some((cfg, name))) => {
                tls_handshake(tcp, cfg.clone(), name.clone(), timeout).await?
            }
            _ => Stream::Plain(tcp),
        };
        let mut wire = Wire::new(stream, timeout);
        let greeting = match wire.status("greeting").await? {
            Status::Ok(text) => text,
            other => return Err(Pop3Error::Protocol { command: "greeting", reply: format!("{other:?}") }),
        };
        if let (Security::StartTls, Some((cfg, name))) = (&config.security, tls) {
            wire.send("CAPA", "CAPA").await?;
            let caps = match wire.status("CAPA").await? {
                Status::Ok(_) => Capabilities::new(wire.lines("CAPA").await?),
                _ => Capabilities::default(),
            };
            if !caps.has("STLS") {
                return Err(Pop3Error::Tls(io::Error::other(
                    "server does not offer STLS; refusing to continue in plaintext",
                )));
            }
            wire.send("STLS", "STLS").await?;
            match wire.status("STLS").await? {
                Status::Ok(_) => {}
                other => {
                    return Err(Pop3Error::Tls(io::Error::other(format!("server refused STLS: {other:?}"))));
                }
            }
            wire = wire.upgrade(cfg, name).await?;
        }
        Ok(Self { wire, addr, greeting, broken: false })
    }

    /// The text after `+OK` in the server's greeting.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Whether the session is encrypted (implicit TLS or after STLS).
    pub fn is_tls(&self) -> bool {
        self.wire.is_tls()
    }

    fn note<T>(&mut self, r: Result<T, Pop3Error>) -> Result<T, Pop3Error> {
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    async fn send(&mut self, verb: &'static str, line: &str) -> Result<(), Pop3Error> {
        if self.broken {
            return Err(Pop3Error::Protocol {
                command: verb,
                reply: "session unusable after an earlier I/O, timeout or protocol error".into(),
            });
        }
        let r = self.wire.send(verb, line).await;
        self.note(r)
    }

    async fn status(&mut self, verb: &'static str) -> Result<Status, Pop3Error> {
        let r = self.wire.status(verb).await;
        self.note(r)
    }

    async fn lines(&mut self, verb: &'static str) -> Result<Vec<String>, Pop3Error> {
        let r = self.wire.lines(verb).await;
        self.note(r)
    }

    /// Sends a command, expects `+OK`, returns the text after it.
    async fn simple(&mut self, verb: &'static str, line: &str) -> Result<String, Pop3Error> {
        self.send(verb, line).await?;
        match self.status(verb).await? {
            Status::Ok(text) => Ok(text),
            Status::Err(text) => Err(Pop3Error::Protocol { command: verb, reply: format!("-ERR {text}") }),
            Status::Continue(text) => {
                self.broken = true;
                Err(Pop3Error::Protocol { command: verb, reply: format!("+ {text}") })
            }
        }
    }

    /// CAPA (RFC 2449). A server without CAPA gives an empty list.
    pub async fn capa(&mut self) -> Result<Capabilities, Pop3Error> {
        self.send("CAPA", "CAPA").await?;
        match self.status("CAPA").await? {
            Status::Ok(_) => Ok(Capabilities::new(self.lines("CAPA").await?)),
            Status::Err(_) => Ok(Capabilities::default()),
            Status::Continue(text) => {
                self.broken = true;
                Err(Pop3Error::Protocol { command: "CAPA", reply: format!("+ {text}") })
            }
        }
    }

    /// USER + PASS. A refusal is [`Pop3Error::Auth`] with the server's words.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), Pop3Error> {
        no_crlf("user name", user)?;
        no_crlf("password", password)?;
        for (verb, line) in [("USER", format!("USER {user}")), ("PASS", format!("PASS {password}"))] {
            self.send(verb, &line).await?;
            match self.status(verb).await? {
                Status::Ok(_) => {}
                Status::Err(text) => return Err(Pop3Error::Auth(redact(&text, &[password]))),
                Status::Continue(_) => {
                    self.broken = true;
                    return Err(Pop3Error::Protocol { command: verb, reply: "unexpected '+ '".into() });
                }
            }
        }
        Ok(())
    }

    /// AUTH PLAIN (RFC 4616) with the credentials as initial response.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), Pop3Error> {
        let response = B64.encode(format!("\0{user}\0{password}"));
        self.sasl("PLAIN", &response, &[password]).await
    }

    /// AUTH XOAUTH2 (Google/Microsoft) with an OAuth2 access token.
    pub async fn auth_xoauth2(&mut self, user: &str, access_token: &str) -> Result<(), Pop3Error> {
        let response = B64.encode(format!("user={user}\x01auth=Bearer {access_token}\x01\x01"));
        self.sasl("XOAUTH2", &response, &[access_token]).await
    }

    /// RFC 5034 AUTH with one client response. A challenge after it (XOAUTH2 sends its
    /// error JSON that way) is answered with an empty line; the server then says -ERR.
    async fn sasl(&mut self, mech: &'static str, response: &str, secrets: &[&str]) -> Result<(), Pop3Error> {
        let scrub = |text: &str| redact(text, &[secrets, &[response]].concat());
        let with_ir = format!("AUTH {mech} {response}");
        if with_ir.len() + 2 <= MAX_AUTH_LINE {
            self.send("AUTH", &with_ir).await?;
        } else {
            self.send("AUTH", &format!("AUTH {mech}")).await?;
            match self.status("AUTH").await? {
                Status::Continue(_) => self.send("AUTH", response).await?,
                Status::Err(text) => return Err(Pop3Error::Auth(scrub(&text))),
                Status::Ok(_) => {
                    self.broken = true;
                    return Err(Pop3Error::Protocol {
                        command: "AUTH",
                        reply: "+OK before credentials".into(),
                    });
                }
            }
        }
        let mut detail = String::new();
        for _ in 0..2 {
            match self.status("AUTH").await? {
                Status::Ok(_) => return Ok(()),
                Status::Err(text) => return Err(Pop3Error::Auth(scrub(&format!("{text}{detail}")))),
                Status::Continue(challenge) => {
                    // XOAUTH2 puts its error JSON here and wants an empty reply; anything
                    // else we cannot answer, so cancel with "*".
                    let decoded = B64.decode(challenge.as_bytes()).unwrap_or_default();
                    let reply = if decoded.is_empty() {
                        "*"
                    } else {
                        detail = format!(" ({})", String::from_utf8_lossy(&decoded));
                        ""
                    };
                    self.send("AUTH", reply).await?;
                }
            }
        }
        self.broken = true;
        Err(Pop3Error::Protocol { command: "AUTH", reply: "too many SASL challenges".into() })
    }

    /// STAT: (number of messages, total size in octets).
    pub async fn stat(&mut self) -> Result<(u32, u64), Pop3Error> {
        let text = self.simple("STAT", "STAT").await?;
        parse_pair("STAT", &text)
    }

    /// LIST: every message's number and size.
    pub async fn list(&mut self) -> Result<Vec<ListEntry>, Pop3Error> {
        self.simple("LIST", "LIST").await?;
        let lines = self.lines("LIST").await?;
        lines.iter().map(|l| parse_pair("LIST", l).map(|(id, size)| ListEntry { id, size })).collect()
    }

    /// LIST n: the size of one message.
    pub async fn list_one(&mut self, id: u32) -> Result<u64, Pop3Error> {
        let text = self.simple("LIST", &format!("LIST {id}")).await?;
        parse_pair("LIST", &text).map(|(_, size)| size)
    }

    /// UIDL: every message's number and unique id.
    pub async fn uidl(&mut self) -> Result<Vec<UidlEntry>, Pop3Error> {
        self.simple("UIDL", "UIDL").await?;
        let lines = self.lines("UIDL").await?;
        lines.iter().map(|l| parse_pair("UIDL", l).map(|(id, uid)| UidlEntry { id, uid })).collect()
    }

    /// UIDL n: the unique id of one message.
    pub async fn uidl_one(&mut self, id: u32) -> Result<String, Pop3Error> {
        let text = self.simple("UIDL", &format!("UIDL {id}")).await?;
        parse_pair("UIDL", &text).map(|(_, uid)| uid)
    }

    /// RETR n: the raw message, dot-unstuffed, CRLF line ends, without the final ".".
    pub async fn retr(&mut self, id: u32) -> Result<Vec<u8>, Pop3Error> {
        self.retr_inner(id, None).await
    }

    /// Like [`Self::retr`] but refuses messages over `limit` octets: LIST first (nothing
    /// is downloaded when the server says it is too big), and a hard stop while reading in
    /// case the server understated the size (the session is then unusable).
    pub async fn retr_max(&mut self, id: u32, limit: u64) -> Result<Vec<u8>, Pop3Error> {
        let size = self.list_one(id).await?;
        if size > limit {
            return Err(Pop3Error::TooLarge { id, size, limit });
        }
        self.retr_inner(id, Some(limit)).await
    }

    async fn retr_inner(&mut self, id: u32, limit: Option<u64>) -> Result<Vec<u8>, Pop3Error> {
        let text = self.simple("RETR", &format!("RETR {id}")).await?;
        // "+OK 1234 octets" is common but optional: only a hint for the allocation.
        let hint = text.split_whitespace().next().and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
        let hint = hint.min(limit.unwrap_or(MAX_PREALLOC)).min(MAX_PREALLOC);
        let mut out = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
        let r = self.wire.body(&mut out, limit).await;
        match self.note(r)? {
            Ok(()) => Ok(out),
            Err(size) => {
                self.broken = true;
                Err(Pop3Error::TooLarge { id, size, limit: limit.unwrap_or(0) })
            }
        }
    }

    /// DELE n: mark for deletion; it happens at [`Self::quit`].
    pub async fn dele(&mut self, id: u32) -> Result<(), Pop3Error> {
        self.simple("DELE", &format!("DELE {id}")).await.map(drop)
    }

    /// RSET: unmark all deletions of this session.
    pub async fn rset(&mut self) -> Result<(), Pop3Error> {
        self.simple("RSET", "RSET").await.map(drop)
    }

    /// NOOP: keep-alive.
    pub async fn noop(&mut self) -> Result<(), Pop3Error> {
        self.simple("NOOP", "NOOP").await.map(drop)
    }

    /// QUIT: the server commits the deletions and closes. `-ERR` here means some
    /// deletions were not done.
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        let r = self.simple("QUIT", "QUIT").await.map(drop);
        self.wire.shutdown().await;
        r
    }
}
