//! TLS for the HTTPS management listener: the certificate (configured, or self-signed on first
//! start), a resolver that can swap it while running (SIGHUP), and the rustls config.
//!
//! One crypto provider across the whole dependency graph: `ring` (aws-lc-rs needs a C build
//! that is slow here and would be a second implementation). A reload that fails (missing
//! file, corrupt PEM, key not matching) keeps serving the old certificate and says why in
//! the log; in-flight connections always finish on the certificate they started with.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub struct CertSource {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertSource {
    /// The configured pair, or the self-signed one under `data_dir/tls/`, generated if absent.
    pub fn resolve(
        configured: Option<(PathBuf, PathBuf)>,
        data_dir: &Path,
    ) -> anyhow::Result<CertSource> {
        if let Some((cert, key)) = configured {
            return Ok(CertSource { cert, key });
        }
        let dir = data_dir.join("tls");
        let source = CertSource {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        if !source.cert.exists() || !source.key.exists() {
            generate_self_signed(&dir, &source)?;
        }
        Ok(source)
    }

    pub fn load(&self) -> anyhow::Result<Arc<CertifiedKey>> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("reading certificate {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing certificate {}", self.cert.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{} holds no certificate",
            self.cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading private key {}", self.key.display()))?;
        let signing = provider::sign::any_supported_type(&key)
            .with_context(|| format!("unsupported private key in {}", self.key.display()))?;
        let certified = CertifiedKey::new(certs, signing);
        certified.keys_match().with_context(|| {
            format!(
                "{} does not match {}",
                self.key.display(),
                self.cert.display()
            )
        })?;
        Ok(Arc::new(certified))
    }
}

/// Generates a certificate for localhost, 127.0.0.1 and ::1; the key file is 0600.
fn generate_self_signed(dir: &Path, source: &CertSource) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    write_file(
        &source.key,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&source.cert, generated.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %source.cert.display(), "generated a self-signed certificate for the admin listener");
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Serves the current certificate; `reload` swaps it.
#[derive(Debug)]
pub struct ReloadableCert {
    source: CertSource,
    // Std RwLock: read once per handshake to clone an Arc, never held across `.await`.
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn new(source: CertSource) -> anyhow::Result<Arc<ReloadableCert>> {
        let current = RwLock::new(source.load()?);
        Ok(Arc::new(ReloadableCert { source, current }))
    }

    /// Re-reads the files; on any error the old certificate stays and the error is returned.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = self.source.load()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// The rustls server config: TLS 1.2/1.3 with rustls' safe defaults, HTTP/1.1 only.
pub fn server_config(cert: Arc<ReloadableCert>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_once_then_reused_and_a_bad_reload_keeps_the_old() {
        let dir = tempfile::tempdir().expect("dir");
        let source = CertSource::resolve(None, dir.path()).expect("generated");
        let mode = std::fs::metadata(&source.key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is private");
        let first = std::fs::read(&source.cert).expect("cert");
        CertSource::resolve(None, dir.path()).expect("reused");
        assert_eq!(
            std::fs::read(&source.cert).expect("cert"),
            first,
            "not regenerated"
        );

        let cert = ReloadableCert::new(source.clone()).expect("loads");
        let before = Arc::clone(&cert.current.read().expect("lock"));
        std::fs::write(&source.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").expect("corrupt");
        assert!(cert.reload().is_err());
        assert!(
            Arc::ptr_eq(&before, &cert.current.read().expect("lock")),
            "old certificate kept"
        );
    }
}
