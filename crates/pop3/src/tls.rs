//! TLS settings: which roots to trust, and the explicit opt-out of verification.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Pop3Error;

/// Which certificates to trust. The default trusts the Mozilla roots (webpki-roots) and
/// verifies the server's certificate and name.
#[derive(Clone)]
pub struct TlsOptions {
    webpki_roots: bool,
    extra_ca_pem: Vec<Vec<u8>>,
    accept_invalid_certs: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self::webpki()
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("webpki_roots", &self.webpki_roots)
            .field("extra_ca_pems", &self.extra_ca_pem.len())
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .finish()
    }
}

impl TlsOptions {
    /// Trust the Mozilla root store (webpki-roots).
    pub fn webpki() -> Self {
        Self { webpki_roots: true, extra_ca_pem: Vec::new(), accept_invalid_certs: false }
    }

    /// Trust only the CA certificate(s) in `pem` (a private CA), not the public roots.
    pub fn with_ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self { webpki_roots: false, extra_ca_pem: vec![pem.into()], accept_invalid_certs: false }
    }

    /// Also trust the CA certificate(s) in `pem`.
    pub fn add_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_ca_pem.push(pem.into());
        self
    }

    /// Include (or leave out) the Mozilla roots.
    pub fn webpki_roots(mut self, yes: bool) -> Self {
        self.webpki_roots = yes;
        self
    }

    /// DANGER: accept any certificate for any name. Off by default; only for servers
    /// whose operator explicitly asked for it (self-signed certs on a LAN box). The
    /// connection is still encrypted, but an active attacker can read it.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.accept_invalid_certs = yes;
        self
    }

    /// Whether certificate verification is switched off.
    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }

    /// The rustls client config (ring provider, TLS 1.2 and 1.3).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Pop3Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Pop3Error::Tls(io::Error::other(e)))?;
        if self.accept_invalid_certs {
            return Ok(Arc::new(
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                    .with_no_client_auth(),
            ));
        }
        let mut roots = RootCertStore::empty();
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for pem in &self.extra_ca_pem {
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| Pop3Error::InvalidInput(format!("CA PEM cannot be parsed: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Pop3Error::InvalidInput(format!("CA certificate is not usable: {e}")))?;
                found += 1;
            }
            if found == 0 {
                return Err(Pop3Error::InvalidInput("CA PEM holds no CERTIFICATE".into()));
            }
        }
        if roots.is_empty() {
            return Err(Pop3Error::InvalidInput("no trusted roots configured".into()));
        }
        Ok(Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
    }
}

/// The verifier behind an explicit "accept invalid certificates" opt-out, shared with
/// deskmail-mailconn so the opt-out means the same for every protocol.
pub fn accept_invalid_certs_verifier(provider: Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(AcceptAnyCert(provider))
}

/// Skips chain and name checks but still checks the handshake signatures, so the peer
/// must at least hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
