//! Certificate material named by the config: server certificates with their
//! keys for `[[server.tls]]`, and the trust roots and client settings for
//! `https://` upstream servers.
//!
//! Files are read and checked while the config is validated, so a broken
//! file fails `palisade check` and a reload the same way, naming the file,
//! and a reload that fails keeps the certificates already serving.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;

/// The one crypto provider Palisade uses (ring: quick to build, and its
/// P-256, X25519 and AES-GCM are the same assembly as BoringSSL's).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain with its key, ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The DNS names the leaf certificate is for (subject alternative
    /// names, or the common name when it has none), lower case.
    pub names: Vec<String>,
    /// The leaf's notAfter, as seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key
/// (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519) and checks that they
/// belong together and that the certificate has not expired. Messages name
/// the file at fault.
pub fn load_cert_and_key(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, String> {
    let cert_pem = read(cert_path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate {}: bad PEM: {e}", cert_path.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "certificate {}: no PEM certificate in the file",
            cert_path.display()
        ));
    };
    let (names, not_after) =
        leaf_facts(leaf).map_err(|e| format!("certificate {}: {e}", cert_path.display()))?;
    if not_after < now_unix() {
        return Err(format!(
            "certificate {} expired on {}",
            cert_path.display(),
            format_unix(not_after)
        ));
    }

    let key_pem = read(key_path, "private key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "private key {}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key_path.display()
        )
    })?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key {}: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "private key {} does not match the certificate {}",
                key_path.display(),
                cert_path.display()
            ));
        }
        // The key type cannot state its public key: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(format!("certificate {}: {e}", cert_path.display())),
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after,
    })
}

/// The leaf's DNS names and its expiry.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// Trust roots for upstream TLS: the PEM certificates in `ca_file`, or the
/// system's roots when there is none.
pub fn load_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = read(path, "CA file")?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("CA file {}: bad PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "CA file {}: no PEM certificate in the file",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found (install ca-certificates or set tls_ca)"
                        .to_string(),
                );
            }
        }
    }
    Ok(roots)
}

/// The client settings for TLS to backends: TLS 1.2 and 1.3, ALPN
/// http/1.1 (our backend client speaks HTTP/1.1), verification against
/// `roots` unless `skip_verify`.
pub fn client_config(roots: RootCertStore, skip_verify: bool) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `tls_insecure_skip_verify`: any certificate is accepted, but the
/// handshake's signatures are still checked, so the connection is at least
/// bound to the key the backend presented.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An HTTP date for a Unix time, for messages.
pub fn format_unix(secs: i64) -> String {
    let time = match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    };
    httpdate::fmt_http_date(time)
}
