//! TLS set-up from a [`TlsPolicy`]: rustls with the ring provider chosen explicitly, TLS
//! 1.2 and 1.3 only, webpki roots plus the policy's extra CA; verification switched off
//! only when the policy says so. The same trust goes to lettre (SMTP STARTTLS) and to
//! deskmail-pop3.

use std::sync::Arc;

use lettre::transport::smtp::client::{Certificate, TlsParameters, TlsVersion};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::error::{ConnError, Protocol};
use crate::settings::TlsPolicy;

fn settings_error(protocol: Protocol, host: &str, detail: String) -> ConnError {
    ConnError::Tls { protocol, host: host.to_string(), detail, source: None }
}

/// The extra CA certificates, parsed; an unparsable or empty PEM is an error, not a
/// silent fall-back to the public roots.
fn extra_cas(
    policy: &TlsPolicy,
    protocol: Protocol,
    host: &str,
) -> Result<Vec<CertificateDer<'static>>, ConnError> {
    let Some(pem) = &policy.extra_ca_pem else { return Ok(Vec::new()) };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| settings_error(protocol, host, format!("extra CA PEM cannot be parsed: {e}")))?;
    if certs.is_empty() {
        return Err(settings_error(protocol, host, "extra CA PEM holds no CERTIFICATE".into()));
    }
    Ok(certs)
}

/// The rustls client config for `policy`.
pub(crate) fn client_config(
    policy: &TlsPolicy,
    protocol: Protocol,
    host: &str,
) -> Result<Arc<ClientConfig>, ConnError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConnError::Tls {
            protocol,
            host: host.to_string(),
            detail: format!("TLS set-up: {e}"),
            source: Some(Box::new(e)),
        })?;
    if policy.accept_invalid_certs {
        return Ok(Arc::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(deskmail_pop3::accept_invalid_certs_verifier(provider))
                .with_no_client_auth(),
        ));
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_cas(policy, protocol, host)? {
        roots.add(cert).map_err(|e| {
            settings_error(protocol, host, format!("extra CA certificate is not usable: {e}"))
        })?;
    }
    Ok(Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
}

/// The name the certificate must match.
pub(crate) fn server_name(protocol: Protocol, host: &str) -> Result<ServerName<'static>, ConnError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| settings_error(protocol, host, format!("{host:?} is not a valid TLS server name: {e}")))
}

/// lettre's TLS parameters with the same trust, for SMTP STARTTLS (lettre performs that
/// upgrade itself). lettre takes its rustls crypto provider from the process default or,
/// with only the `ring` feature enabled as here, ring.
pub(crate) fn lettre_parameters(policy: &TlsPolicy, host: &str) -> Result<TlsParameters, ConnError> {
    let protocol = Protocol::Smtp;
    let mut builder = TlsParameters::builder(host.to_string()).set_min_tls_version(TlsVersion::Tlsv12);
    if policy.accept_invalid_certs {
        builder = builder.dangerous_accept_invalid_certs(true);
    } else if let Some(pem) = &policy.extra_ca_pem {
        extra_cas(policy, protocol, host)?;
        let cert = Certificate::from_pem(pem)
            .map_err(|e| settings_error(protocol, host, format!("extra CA PEM cannot be used: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|e| ConnError::Tls {
        protocol,
        host: host.to_string(),
        detail: format!("TLS set-up: {e}"),
        source: Some(Box::new(e)),
    })
}

/// deskmail-pop3's TLS options with the same trust.
pub(crate) fn pop3_options(policy: &TlsPolicy, host: &str) -> Result<deskmail_pop3::TlsOptions, ConnError> {
    // Same checks as for IMAP, so a bad PEM is a TLS error here too.
    client_config(policy, Protocol::Pop3, host)?;
    let mut options = deskmail_pop3::TlsOptions::webpki();
    if let Some(pem) = &policy.extra_ca_pem {
        options = options.add_ca_pem(pem.clone());
    }
    Ok(options.danger_accept_invalid_certs(policy.accept_invalid_certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_extra_ca_is_a_tls_error() {
        for pem in [
            b"not a pem".to_vec(),
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        ] {
            let policy = TlsPolicy::with_extra_ca(pem);
            let err = client_config(&policy, Protocol::Imap, "h").err().map(|e| e.reason());
            assert_eq!(err, Some(deskmail_core::StatusReason::TlsFailed));
            assert!(lettre_parameters(&policy, "h").is_err());
            assert!(pop3_options(&policy, "h").is_err());
        }
    }

    #[test]
    fn default_policy_builds() {
        assert!(client_config(&TlsPolicy::default(), Protocol::Imap, "h").is_ok());
        assert!(lettre_parameters(&TlsPolicy::default(), "mail.example.com").is_ok());
        assert!(client_config(&TlsPolicy::dangerous_accept_invalid_certs(), Protocol::Imap, "h").is_ok());
    }
}
