//! The HTTPS transport: the `--url` a remote daemon is reached at, the certificates it is
//! trusted with (rustls with `ring` only, handed to reqwest ready-made), and its failures
//! worded for what the operator should check.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::{TransportError, TransportErrorKind};

/// `https://host[:port]`: the address of a management listener, checked once so that every
/// later use (TCP address, TLS server name, `Host` header, messages) agrees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
}

/// The port of an `https://` URL that names none.
const HTTPS_DEFAULT_PORT: u16 = 443;

impl HttpsUrl {
    /// Accepts `https://host`, `https://host:port` and a trailing `/`; refuses other schemes,
    /// user info (a password in a URL ends up in shell history and error messages), paths and
    /// queries, with a reason that fits after "--url ".
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL ({e}); expected https://host:port"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => {
                return Err(format!(
                    "{text:?} is plain HTTP; gatewayd's management listener speaks only HTTPS \
                     (https://host:port)"
                ));
            }
            _ => return Err(format!("{text:?} must start with https://")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!(
                "{text:?} names no host; expected https://host:port"
            ));
        };
        if authority.as_str().contains('@') {
            return Err(
                "must not contain user info (user:password@); pass the admin token \
                        with --token-file"
                    .to_owned(),
            );
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{text:?} has a path or query; expected just https://host:port"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if ServerName::try_from(host.clone()).is_err() {
            return Err(format!(
                "{text:?}: {host:?} is not a valid host name or address"
            ));
        }
        Ok(Self {
            host,
            port: authority.port_u16().unwrap_or(HTTPS_DEFAULT_PORT),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, with brackets around an IPv6 literal: the `Host` header's value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

/// The certificates of a `--ca-cert` PEM file; at least one, or the reason why not.
pub fn load_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::Io(io) => io.to_string(),
            other => format!("not a PEM certificate file ({other})"),
        })?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certs)
}

/// rustls with `ring`, trusting `ca_cert`'s certificates, or else the system's roots (the
/// bundled web PKI roots when the system has none).
pub(super) fn tls_config(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig, TransportError> {
    use hyper_rustls::ConfigBuilderExt;

    let tls_setup = |message: String| TransportError {
        kind: TransportErrorKind::Tls,
        message,
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_setup(format!("setting up TLS: {e}")))?;
    let builder = match ca_cert {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = load_ca_certs(path)
                .map_err(|why| tls_setup(format!("--ca-cert {}: {why}", path.display())))?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    tls_setup(format!(
                        "--ca-cert {}: not a usable certificate ({e})",
                        path.display()
                    ))
                })?;
            }
            builder.with_root_certificates(roots)
        }
        None => match builder.clone().with_native_roots() {
            Ok(builder) => builder,
            Err(_no_system_roots) => builder.with_webpki_roots(),
        },
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// reqwest's connect timeout (TCP and the handshake together) ran out.
pub(super) fn connect_timed_out(url: &HttpsUrl, connect_timeout: Duration) -> TransportError {
    TransportError {
        kind: TransportErrorKind::TimedOut,
        message: format!(
            "cannot reach gatewayd at {url}: no connection within {}s; check the address and \
             that [admin] listen is reachable from here",
            connect_timeout.as_secs()
        ),
    }
}

pub(super) fn tcp_connect_error(url: &HttpsUrl, err: &io::Error) -> TransportError {
    let why = match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        _ => err.to_string(),
    };
    TransportError {
        kind: TransportErrorKind::Unreachable,
        message: format!(
            "cannot reach gatewayd at {url} ({why}): is gatewayd running, and is its [admin] \
             listen this address?"
        ),
    }
}

/// A failed handshake names the URL and says what to do; a certificate problem is by far the
/// likeliest (the daemon's self-signed certificate is in no system store).
pub(super) fn tls_error(url: &HttpsUrl, ca_cert: Option<&Path>, err: &io::Error) -> TransportError {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let message = match rustls_error {
        Some(cert_error @ rustls::Error::InvalidCertificate(_)) => match ca_cert {
            None => format!(
                "gatewayd at {url} presented a certificate gwctl does not trust \
                 ({cert_error}); pass the daemon's certificate with --ca-cert FILE (gatewayd's \
                 self-signed one is <data_dir>/tls/cert.pem on its host)"
            ),
            Some(path) => format!(
                "gatewayd at {url} presented a certificate that --ca-cert {} does not vouch \
                 for ({cert_error}); is it the certificate of this daemon, for this host name?",
                path.display()
            ),
        },
        Some(not_tls @ rustls::Error::InvalidMessage(_)) => format!(
            "{url} did not answer with TLS ({not_tls}): is it gatewayd's HTTPS management \
             listener ([admin] listen), not the proxy port?"
        ),
        Some(other) => match ca_cert {
            None => format!(
                "TLS handshake with gatewayd at {url} failed: {other}; if it uses a \
                 self-signed certificate, pass it with --ca-cert FILE"
            ),
            Some(_) => format!("TLS handshake with gatewayd at {url} failed: {other}"),
        },
        None => format!(
            "TLS handshake with {url} failed ({err}): is this gatewayd's HTTPS management \
             listener?"
        ),
    };
    TransportError {
        kind: TransportErrorKind::Tls,
        message,
    }
}
