//! HTTPS clients for the management listener, trusting exactly the certificates a test says.
//!
//! reqwest is built without a crypto provider (one provider, `ring`, across the workspace);
//! the rustls client config is made here with a root store holding only the given PEMs, so
//! "trusts the generated certificate" means that and nothing else.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A client that trusts only the certificates in `pem`.
pub fn client_trusting(pem: &[u8]) -> reqwest::Client {
    client_trusting_from(pem, None)
}

/// The same, connecting from the local address `local` (say `127.0.0.2`: every 127.0.0.0/8
/// address is this host, so a test can be two clients).
pub fn client_trusting_from(pem: &[u8], local: Option<std::net::IpAddr>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.expect("PEM certificate"))
            .expect("trusted root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .local_address(local)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("HTTPS client")
}

pub fn client_trusting_file(path: &Path) -> reqwest::Client {
    client_trusting(&std::fs::read(path).expect("certificate file"))
}

/// A fresh self-signed certificate and key for localhost and 127.0.0.1, as PEM.
pub fn self_signed() -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}
