//! From an operator's `postgres://…` URL to a pool: TLS per `sslmode`, timeouts, and a name
//! for the server that errors and logs can carry.
//!
//! The URL holds the database password, so nothing here ever prints it: errors and logs name
//! the server by [`Target::described`] (hosts, ports, database), and tokio-postgres' own
//! errors and `Config`'s `Debug` do not include it either (a test checks both).
//!
//! TLS follows libpq's `sslmode`, with rustls and ring only:
//! - `disable`: plain TCP; `prefer` (the default): TLS when the server offers it;
//!   `require`: TLS or nothing. Like libpq, these two encrypt without checking who answers,
//!   unless `sslrootcert` is given, when `require` checks the chain as `verify-ca` does.
//! - `verify-ca`: the certificate chains to a trusted root; `verify-full`: and names the host.
//! - Roots: `sslrootcert=FILE` (PEM), the usual way to trust a private CA (most managed
//!   PostgreSQL services have one); without it, or with `sslrootcert=system`, the Mozilla
//!   roots compiled in (webpki-roots), the same gatewayd trusts for providers: the result
//!   does not depend on the host's certificate store, and no OpenSSL-style probing is done.
//!
//! tokio-postgres does not know `verify-ca`, `verify-full` or `sslrootcert`, so these are
//! taken out of a URL's query before it parses the rest. In the `key=value` form only
//! `disable`, `prefer` and `require` are understood.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Giving up on a server that does not answer: start-up says why instead of hanging, and a
/// management call answers 503 instead of waiting on a dead host.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a statement may run: far above any of ours (milliseconds), low enough that a
/// stuck one (a lock held by a forgotten session) fails instead of blocking a writer forever.
const STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// Connections the pool keeps at most: management calls, the usage writer and heartbeats
/// are a handful at a time.
const POOL_SIZE: usize = 16;

/// A parsed URL: the connection settings, the TLS connector, and the server's name for
/// messages.
#[derive(Clone)]
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// `host:port/database`, never the user's password.
    pub described: String,
}

/// How a URL asked for TLS (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

pub(super) fn parse(url: &str) -> anyhow::Result<Target> {
    let (rest, mode, root_file) = split_tls_options(url)?;
    let mut config: tokio_postgres::Config = rest.parse().context(
        "the PostgreSQL URL is not valid (expected postgres://user:password@host:port/database)",
    )?;
    let mode = match mode {
        Some(mode) => mode,
        None => match config.get_ssl_mode() {
            SslMode::Disable => TlsMode::Disable,
            SslMode::Require => TlsMode::Require,
            _ => TlsMode::Prefer,
        },
    };
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A peer that vanished without a word (host lost, cable cut) is noticed within about a
    // minute instead of the kernel's two hours: the change listener then reconnects.
    config.keepalives_idle(Duration::from_secs(30));
    let options = format!(
        "{} -c statement_timeout={STATEMENT_TIMEOUT_MS}",
        config.get_options().unwrap_or_default()
    );
    config.options(options.trim_start());
    if config.get_application_name().is_none() {
        config.application_name("gatewayd");
    }
    let described = describe(&config);
    let roots = match root_file.as_deref() {
        None | Some("system") => None,
        Some(file) => Some(load_roots(file)?),
    };
    let tls = MakeRustlsConnect::new(client_config(mode, roots)?);
    Ok(Target {
        config,
        tls,
        described,
    })
}

/// The pool over `target`. Nothing is connected yet: the first `get` does.
pub(super) fn pool(target: &Target) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        target.config.clone(),
        target.tls.clone(),
        ManagerConfig {
            // `Fast`: a connection that died is found by its next query, which fails as
            // unavailable (503 / the writer retries); `Verified` would add a round trip to
            // every checkout.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .context("building the PostgreSQL connection pool")
}

/// `host:port[,host:port…]/database`: what an error may say about the server.
fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost".to_owned()
    } else {
        hosts.join(",")
    };
    format!(
        "{hosts}/{}",
        config.get_dbname().unwrap_or("(default database)")
    )
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query (see the module docs); a
/// `key=value` string is returned as it is.
fn split_tls_options(url: &str) -> anyhow::Result<(String, Option<TlsMode>, Option<String>)> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), None, None));
    };
    let mut mode = None;
    let mut root_file = None;
    // The other parameters go on exactly as written: decoding and re-encoding them would turn
    // `%20` into `+`, which tokio-postgres reads as a plus (`options=-c%20…`, passwords).
    let mut kept: Vec<&str> = Vec::new();
    for raw in query.split('&').filter(|raw| !raw.is_empty()) {
        let Some((name, value)) = form_urlencoded::parse(raw.as_bytes()).next() else {
            continue;
        };
        match &*name {
            "sslmode" => {
                mode = Some(match &*value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => anyhow::bail!(
                        "the PostgreSQL URL's sslmode `{other}` is not one of disable, prefer, \
                         require, verify-ca, verify-full"
                    ),
                })
            }
            "sslrootcert" => root_file = Some(value.into_owned()),
            _ => kept.push(raw),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    // `require` with a root file checks the chain, as libpq does.
    let mode = match (mode, &root_file) {
        (Some(TlsMode::Require), Some(file)) if file != "system" => Some(TlsMode::VerifyCa),
        (mode, _) => mode,
    };
    Ok((rest, mode, root_file))
}

fn load_roots(file: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file)
        .with_context(|| format!("reading the PostgreSQL root certificate {file}"))?;
    for cert in certs {
        let cert =
            cert.with_context(|| format!("reading the PostgreSQL root certificate {file}"))?;
        roots
            .add(cert)
            .with_context(|| format!("the PostgreSQL root certificate {file} is not usable"))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "the PostgreSQL root certificate file {file} holds no certificate"
    );
    Ok(roots)
}

fn client_config(mode: TlsMode, roots: Option<RootCertStore>) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS for PostgreSQL")?;
    let roots = Arc::new(roots.unwrap_or_else(|| RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }));
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => Arc::new(EncryptOnly { provider }),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .context("TLS for PostgreSQL: the root certificates")?;
            if mode == TlsMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly { webpki })
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `prefer` / `require`: the handshake's signatures are checked, the certificate is not
/// (libpq's meaning of these modes; see the module docs).
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted root; the name in it is not compared with
/// the host (libpq's meaning).
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
