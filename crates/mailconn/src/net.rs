//! The network steps every protocol shares, each bounded by the endpoint's timeout and
//! classified on its own: resolve (dns_failed), TCP connect (connect_failed), TLS handshake
//! (tls_failed). Every socket gets TCP_NODELAY: mail protocols are request/response, and
//! Nagle's algorithm plus delayed ACKs stall a write-write-read pattern by ~40 ms.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::{ConnError, Protocol};
use crate::settings::ServerEndpoint;
use crate::tls;

/// A connection to a mail server, plain or TLS; one type for every security mode so one
/// IMAP session type (and one SMTP stream type) serves them all.
#[derive(Debug)]
pub enum MailStream {
    /// Clear text (only with [`crate::Security::None`]).
    Plain(TcpStream),
    /// TLS, implicit or after STARTTLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl MailStream {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for MailStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MailStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// lettre takes a boxed stream of this trait for connections we open ourselves.
impl lettre::transport::smtp::client::AsyncTokioStream for MailStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }
}

/// Runs `fut` within `after`, or fails with [`ConnError::Timeout`].
pub(crate) async fn bounded<T>(
    protocol: Protocol,
    during: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::time::timeout(after, fut).await.unwrap_or(Err(ConnError::Timeout { protocol, during, after }))
}

/// Resolves the endpoint's host (an IP literal needs no DNS).
pub(crate) async fn resolve(ep: &ServerEndpoint, protocol: Protocol) -> Result<Vec<SocketAddr>, ConnError> {
    bounded(protocol, "DNS lookup", ep.timeout, async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((ep.host.as_str(), ep.port))
            .await
            .map_err(|source| ConnError::Dns { host: ep.host.clone(), source })?
            .collect();
        if addrs.is_empty() {
            let source = io::Error::new(io::ErrorKind::NotFound, "no address for this name");
            return Err(ConnError::Dns { host: ep.host.clone(), source });
        }
        Ok(addrs)
    })
    .await
}

/// Resolves, then connects to each address in turn (each try bounded by the timeout), and
/// sets TCP_NODELAY.
pub(crate) async fn connect_tcp(ep: &ServerEndpoint, protocol: Protocol) -> Result<TcpStream, ConnError> {
    let addrs = resolve(ep, protocol).await?;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(ep.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                tcp.set_nodelay(true).map_err(|source| ConnError::Connect { addr: ep.addr(), source })?;
                tracing::debug!(%addr, %protocol, "Connected.");
                return Ok(tcp);
            }
            Ok(Err(source)) => last = Some(ConnError::Connect { addr: ep.addr(), source }),
            Err(_) => last = Some(ConnError::Timeout { protocol, during: "connect", after: ep.timeout }),
        }
    }
    Err(last.unwrap_or_else(|| ConnError::Connect {
        addr: ep.addr(),
        source: io::Error::new(io::ErrorKind::NotFound, "no address to connect to"),
    }))
}

/// The TLS handshake over `tcp` with the endpoint's trust. A plain-text server answering
/// the ClientHello with its greeting shows up here as a corrupt TLS message: tls_failed.
pub(crate) async fn tls_handshake(
    tcp: TcpStream,
    ep: &ServerEndpoint,
    protocol: Protocol,
) -> Result<MailStream, ConnError> {
    let config = tls::client_config(&ep.tls, protocol, &ep.host)?;
    let name = tls::server_name(protocol, &ep.host)?;
    bounded(protocol, "TLS handshake", ep.timeout, async {
        let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| ConnError::Tls {
            protocol,
            host: ep.host.clone(),
            detail: format!("handshake: {e}"),
            source: Some(Box::new(e)),
        })?;
        tracing::debug!(host = %ep.host, %protocol, "TLS established.");
        Ok(MailStream::Tls(Box::new(tls)))
    })
    .await
}
