//! The connection: a plain or TLS stream, bounded line reads, status lines, multi-line
//! responses with dot-unstuffing, and the STLS upgrade.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Pop3Error;

/// Longest status line or list entry accepted (RFC 1939 allows 512 octets).
const MAX_REPLY_LINE: usize = 64 * 1024;

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A status line: `+OK text`, `-ERR text`, or a SASL continuation `+ base64`.
#[derive(Debug)]
pub(crate) enum Status {
    Ok(String),
    Err(String),
    Continue(String),
}

pub(crate) struct Wire {
    io: BufReader<Stream>,
    timeout: Duration,
}

async fn bounded<T>(
    during: &'static str,
    after: Duration,
    fut: impl Future<Output = io::Result<T>>,
) -> Result<T, Pop3Error> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r.map_err(Pop3Error::Io),
        Err(_) => Err(Pop3Error::Timeout { during, after }),
    }
}

pub(crate) async fn tls_handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
) -> Result<Stream, Pop3Error> {
    let connect = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(Pop3Error::Tls(e)),
        Err(_) => Err(Pop3Error::Timeout { during: "TLS handshake", after: timeout }),
    }
}

impl Wire {
    pub(crate) fn new(stream: Stream, timeout: Duration) -> Self {
        Self { io: BufReader::new(stream), timeout }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.io.get_ref(), Stream::Tls(_))
    }

    /// STLS: only once the server's `+OK` is read and nothing else is buffered (bytes
    /// sent before the handshake would otherwise be trusted as if they came over TLS).
    pub(crate) async fn upgrade(
        self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, Pop3Error> {
        if !self.io.buffer().is_empty() {
            return Err(Pop3Error::Protocol {
                command: "STLS",
                reply: "server sent data after +OK, before the TLS handshake".into(),
            });
        }
        let timeout = self.timeout;
        match self.io.into_inner() {
            Stream::Plain(tcp) => Ok(Self::new(tls_handshake(tcp, config, name, timeout).await?, timeout)),
            Stream::Tls(_) => {
                Err(Pop3Error::Protocol { command: "STLS", reply: "connection is already encrypted".into() })
            }
        }
    }

    /// Sends `line` + CRLF. `verb` names it in errors (arguments may be secret).
    pub(crate) async fn send(&mut self, verb: &'static str, line: &str) -> Result<(), Pop3Error> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let stream = self.io.get_mut();
        bounded(verb, self.timeout, async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        })
        .await
    }

    /// Appends one line, terminator included, to `buf`; `Ok(false)` once more than `max`
    /// bytes came without a line end. Each read waits at most the timeout.
    async fn read_line(
        &mut self,
        during: &'static str,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Result<bool, Pop3Error> {
        let start = buf.len();
        loop {
            let (used, done) = {
                let available = bounded(during, self.timeout, self.io.fill_buf()).await?;
                if available.is_empty() {
                    return Err(Pop3Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("server closed the connection during {during}"),
                    )));
                }
                match available.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        buf.extend_from_slice(&available[..=i]);
                        (i + 1, true)
                    }
                    None => {
                        buf.extend_from_slice(available);
                        (available.len(), false)
                    }
                }
            };
            Pin::new(&mut self.io).consume(used);
            if done {
                return Ok(true);
            }
            if buf.len() - start > max {
                return Ok(false);
            }
        }
    }

    /// A reply line (status or list entry) of at most [`MAX_REPLY_LINE`] bytes.
    async fn reply_line(&mut self, verb: &'static str, buf: &mut Vec<u8>) -> Result<(), Pop3Error> {
        if self.read_line(verb, buf, MAX_REPLY_LINE).await? {
            Ok(())
        } else {
            Err(Pop3Error::Protocol {
                command: verb,
                reply: format!("reply line longer than {MAX_REPLY_LINE} bytes"),
            })
        }
    }

    /// Reads a status line.
    pub(crate) async fn status(&mut self, verb: &'static str) -> Result<Status, Pop3Error> {
        let mut buf = Vec::new();
        self.reply_line(verb, &mut buf).await?;
        let line = String::from_utf8_lossy(trim_eol(&buf)).into_owned();
        if let Some(rest) = line.strip_prefix("+OK") {
            Ok(Status::Ok(rest.trim_start().to_string()))
        } else if let Some(rest) = line.strip_prefix("-ERR") {
            Ok(Status::Err(rest.trim_start().to_string()))
        } else if let Some(rest) = line.strip_prefix('+') {
            Ok(Status::Continue(rest.trim().to_string()))
        } else {
            Err(Pop3Error::Protocol { command: verb, reply: line })
        }
    }

    /// Reads the lines of a multi-line response up to the lone ".", dot-unstuffed.
    pub(crate) async fn lines(&mut self, verb: &'static str) -> Result<Vec<String>, Pop3Error> {
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            self.reply_line(verb, &mut buf).await?;
            let line = trim_eol(&buf);
            if line == b"." {
                return Ok(lines);
            }
            let line = line.strip_prefix(b".").unwrap_or(line);
            lines.push(String::from_utf8_lossy(line).into_owned());
        }
    }

    /// Reads a message body up to the lone "." into `out`: dot-unstuffed, every line
    /// ended by CRLF. Linear in the message size. Stops with `Err(read_so_far)` once `out`
    /// would exceed `limit` (the rest is left unread: the session is then unusable).
    pub(crate) async fn body(
        &mut self,
        out: &mut Vec<u8>,
        limit: Option<u64>,
    ) -> Result<Result<(), u64>, Pop3Error> {
        let mut buf = Vec::new();
        let cap = |len: usize| limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX).saturating_sub(len));
        loop {
            buf.clear();
            let max = cap(out.len()).unwrap_or(usize::MAX).saturating_add(3);
            if !self.read_line("RETR", &mut buf, max).await? {
                return Ok(Err((out.len() + buf.len()) as u64));
            }
            let line = trim_eol(&buf);
            if line == b"." {
                return Ok(Ok(()));
            }
            let line = line.strip_prefix(b".").unwrap_or(line);
            if let Some(room) = cap(out.len())
                && line.len() + 2 > room
            {
                return Ok(Err((out.len() + line.len() + 2) as u64));
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        let stream = self.io.get_mut();
        let _ = tokio::time::timeout(self.timeout, stream.shutdown()).await;
    }
}

/// Strips a trailing CRLF or LF.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
