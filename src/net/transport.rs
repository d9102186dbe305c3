//! TLS client settings for the three ways this crate trusts servers, and the
//! stream type the agent client speaks HTTP over. One rustls configuration
//! builder serves both the agent client (through tokio-rustls) and the reqwest
//! clients of [`super::http`], so there is one TLS stack with one crypto
//! provider (ring) in the binary.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::pki_types::{pem::PemObject, CertificateDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream HTTP/1.1 can run over: TCP, TLS over TCP, or a Unix socket.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Whom a TLS client trusts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trust<'a> {
    /// The web PKI roots (webhooks, Consul over https, the agent by default).
    WebPki,
    /// The CA certificates in this PEM file (`LIBPROCESS_SSL_CA_FILE`).
    CaFile(&'a Path),
    /// Nobody: no certificate check (libprocess without
    /// `LIBPROCESS_SSL_VERIFY_CERT`, and HTTPS health checks, like Mesos' `curl -k`).
    Insecure,
}

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The crypto provider refused the default protocol versions.
    #[error("TLS protocol versions: {0}")]
    Versions(#[source] rustls::Error),
    /// The CA file could not be read.
    #[error("reading CA certificates from {}: {source}", path.display())]
    CaFile {
        /// `LIBPROCESS_SSL_CA_FILE`.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds a malformed PEM block.
    #[error("parsing CA certificates in {}: {source}", path.display())]
    CaPem {
        /// `LIBPROCESS_SSL_CA_FILE`.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate in the CA file is not a usable trust anchor.
    #[error("adding a CA certificate from {}: {source}", path.display())]
    CaCertificate {
        /// `LIBPROCESS_SSL_CA_FILE`.
        path: PathBuf,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
}

/// A rustls client configuration with the given trust and the ring provider.
pub(crate) fn client_config(trust: Trust<'_>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?;
    let config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        Trust::WebPki => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(path).map_err(|source| TlsError::CaFile {
                path: path.to_owned(),
                source,
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|source| TlsError::CaPem {
                    path: path.to_owned(),
                    source,
                })?;
                roots.add(cert).map_err(|source| TlsError::CaCertificate {
                    path: path.to_owned(),
                    source,
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// A TLS connector with the given trust (the agent client's).
pub(crate) fn connector(trust: Trust<'_>) -> Result<tokio_rustls::TlsConnector, TlsError> {
    client_config(trust).map(|config| tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts any certificate: libprocess does not verify peers unless
/// `LIBPROCESS_SSL_VERIFY_CERT` is set, and HTTPS health checks skip
/// verification as Mesos' `curl -k` does. Signatures are still checked, so
/// the handshake itself stays sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
