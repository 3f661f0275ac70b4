//! TLS for the HTTPS management listener: the certificate (configured, or self-signed on first
//! start), a resolver that can swap it while running (SIGHUP), and the rustls config.
//!
//! One crypto provider across the whole dependency graph: `ring` (aws-lc-rs needs a C build
//! that is slow here and would be a second implementation). A reload that fails (missing
//! file, corrupt PEM, key not matching) keeps serving the old certificate and says why in
//! the log; in-flight connections always finish on the certificate they started with.
//!
//! The private key must be its owner's alone (checked at start-up and at every reload):
//! whoever reads it can pose as the admin listener and collect the admin tokens clients
//! send. The daemon's own self-signed key is narrowed back to 0600 when found wider (as the
//! database is): nothing else has a reason to read it. A configured key is the operator's
//! file, perhaps shared on purpose with another service through its group; changing its
//! mode behind their back could break that service, so it is refused, saying how to fix it.

use std::io::Read;
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
    /// The daemon's own self-signed pair: a key found readable by others is narrowed, not
    /// refused.
    pub generated: bool,
}

impl CertSource {
    /// The configured pair, or the self-signed one under `data_dir/tls/`, generated if absent.
    pub fn resolve(
        configured: Option<(PathBuf, PathBuf)>,
        data_dir: &Path,
    ) -> anyhow::Result<CertSource> {
        if let Some((cert, key)) = configured {
            return Ok(CertSource {
                cert,
                key,
                generated: false,
            });
        }
        let dir = data_dir.join("tls");
        let source = CertSource {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            generated: true,
        };
        if !source.cert.exists() || !source.key.exists() {
            generate_self_signed(&dir, &source)?;
        }
        Ok(source)
    }

    pub fn load(&self) -> anyhow::Result<Arc<CertifiedKey>> {
        // Opening a FIFO (or a device) waits for a writer: start-up or a reload would hang.
        for (what, path) in [("certificate", &self.cert), ("private key", &self.key)] {
            let metadata = std::fs::metadata(path)
                .with_context(|| format!("reading {what} {}", path.display()))?;
            anyhow::ensure!(
                metadata.is_file(),
                "{what} {} is not a regular file",
                path.display()
            );
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("reading certificate {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing certificate {}", self.cert.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{} holds no certificate",
            self.cert.display()
        );
        let key = PrivateKeyDer::from_pem_slice(&self.read_private_key()?)
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

impl CertSource {
    /// The key file's bytes, unless every user may use it. The daemon's own generated key is
    /// narrowed to its owner; an operator's key that any user can read or write is refused
    /// (it is the operator's file, maybe shared on purpose: its mode is not changed behind
    /// their back). A key its group can read is taken: that is how Debian shares keys with a
    /// service (`0640 root:ssl-cert`), a choice the operator made. The mode is read from the
    /// opened file, so it is the file that is read.
    fn read_private_key(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.key.display();
        let file = std::fs::File::open(&self.key)
            .with_context(|| format!("reading private key {path}"))?;
        let mode = file
            .metadata()
            .with_context(|| format!("reading the mode of {path}"))?
            .permissions()
            .mode()
            & 0o777;
        if !self.generated && mode & 0o007 != 0 {
            let open = if mode & 0o004 != 0 {
                "readable by every user"
            } else {
                "open to every user"
            };
            anyhow::bail!(
                "admin.tls_key {path} is {open} (mode {mode:03o}): whoever can read it can pose \
                 as this admin listener and collect the admin tokens sent to it; make it private \
                 to the user gatewayd runs as (chmod 600 {path}), or to a group of its own \
                 (chmod 640)"
            );
        }
        if self.generated && mode & 0o077 != 0 {
            tracing::warn!(key = %path, mode = format!("{mode:03o}"), "the admin TLS key was open to other users; narrowing it to its owner (0600)");
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("narrowing the mode of {path}"))?;
        }
        // A PEM key is a few kilobytes: a larger file is not one, and is not read whole.
        let mut bytes = Vec::new();
        file.take(KEY_FILE_MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading private key {path}"))?;
        anyhow::ensure!(
            bytes.len() as u64 <= KEY_FILE_MAX_BYTES,
            "private key {path} is larger than {KEY_FILE_MAX_BYTES} bytes: not a PEM key"
        );
        Ok(bytes)
    }
}

const KEY_FILE_MAX_BYTES: u64 = 1 << 20;

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

    /// A FIFO as the key (or certificate) hung start-up and every reload: opening it waits
    /// for a writer. Refused as not a regular file; an oversized key is not read whole.
    #[test]
    fn a_key_or_certificate_that_is_not_a_regular_file_is_refused_without_waiting() {
        let dir = tempfile::tempdir().expect("dir");
        let generated = CertSource::resolve(None, dir.path()).expect("generated");
        let fifo = dir.path().join("fifo.pem");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        for source in [
            CertSource::resolve(
                Some((generated.cert.clone(), fifo.clone())),
                Path::new("/nonexistent"),
            ),
            CertSource::resolve(
                Some((fifo.clone(), generated.key.clone())),
                Path::new("/nonexistent"),
            ),
        ] {
            let err = format!(
                "{:#}",
                source.expect("configured").load().expect_err("refused")
            );
            assert!(err.contains("is not a regular file"), "{err}");
        }
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; 2 << 20]).expect("write");
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let source = CertSource::resolve(Some((generated.cert.clone(), big)), Path::new("/x"))
            .expect("configured");
        let err = format!("{:#}", source.load().expect_err("refused"));
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn a_key_open_to_others_is_refused_if_configured_and_narrowed_if_generated() {
        let dir = tempfile::tempdir().expect("dir");
        let generated = CertSource::resolve(None, dir.path()).expect("generated");
        let chmod = |mode| {
            std::fs::set_permissions(&generated.key, std::fs::Permissions::from_mode(mode))
                .expect("chmod");
        };
        let mode = || {
            std::fs::metadata(&generated.key)
                .expect("key")
                .permissions()
                .mode()
                & 0o777
        };
        let configured = CertSource::resolve(
            Some((generated.cert.clone(), generated.key.clone())),
            Path::new("/nonexistent"),
        )
        .expect("configured");
        for (open, says) in [
            (0o644, "is readable by every user (mode 644)"),
            (0o604, "is readable by every user (mode 604)"),
            (0o602, "is open to every user (mode 602)"),
        ] {
            chmod(open);
            let err = format!("{:#}", configured.load().expect_err("refused"));
            assert!(err.contains(says), "{err}");
            assert!(
                err.contains(&format!("chmod 600 {}", generated.key.display())),
                "{err}"
            );
            assert_eq!(mode(), open, "the operator's file is left alone");

            generated.load().expect("the daemon's own key is narrowed");
            assert_eq!(mode(), 0o600);
        }
        chmod(0o640);
        configured
            .load()
            .expect("a key shared with a group loads (Debian's ssl-cert)");
        assert_eq!(mode(), 0o640);
        chmod(0o600);
        configured.load().expect("a private key loads");
    }
}
