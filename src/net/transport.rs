//! Shared client transport pieces: the stream type HTTP is spoken over, and
//! rustls client configurations for the three ways this crate trusts servers.

use std::{path::Path, sync::Arc};

use rustls::pki_types::{pem::PemObject, CertificateDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream HTTP/1.1 can run over: TCP, TLS over TCP, or a Unix socket.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Whom a TLS client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The web PKI roots (webhooks, Consul over https, the agent by default).
    WebPki,
    /// The CA certificates in this PEM file (`LIBPROCESS_SSL_CA_FILE`).
    CaFile(&'a Path),
    /// Nobody: no certificate check (libprocess without
    /// `LIBPROCESS_SSL_VERIFY_CERT`, and HTTPS health checks, like Mesos' `curl -k`).
    Insecure,
}

/// The connector for `trust`, built once per process and shared (building
/// one copies the whole web-PKI root store). Not for [`Trust::CaFile`], whose
/// file is read when asked.
pub fn shared(trust: Trust<'static>) -> Result<tokio_rustls::TlsConnector, String> {
    use std::sync::OnceLock;
    static WEB_PKI: OnceLock<Result<tokio_rustls::TlsConnector, String>> = OnceLock::new();
    static INSECURE: OnceLock<Result<tokio_rustls::TlsConnector, String>> = OnceLock::new();
    match trust {
        Trust::WebPki => WEB_PKI.get_or_init(|| connector(Trust::WebPki)).clone(),
        Trust::Insecure => INSECURE.get_or_init(|| connector(Trust::Insecure)).clone(),
        Trust::CaFile(_) => connector(trust),
    }
}

/// A TLS connector with the given trust.
pub fn connector(trust: Trust<'_>) -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
    let config = match trust {
        Trust::Insecure => builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider))).with_no_client_auth(),
        Trust::WebPki => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("parsing {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("adding CA from {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts any certificate: libprocess does not verify peers unless
/// `LIBPROCESS_SSL_VERIFY_CERT` is set, and HTTPS health checks skip
/// verification as Mesos' `curl -k` does.
#[derive(Debug)]
pub struct NoVerification(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
