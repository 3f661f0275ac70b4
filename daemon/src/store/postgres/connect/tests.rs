//! Parsing URLs and choosing TLS, and each `sslmode` against a TLS server of the test's own.

use super::*;

fn check(url: &str, rest: &str, mode: Option<TlsMode>, root: Option<&str>) {
    let (got_rest, got_mode, got_root) = split_tls_options(url).expect("splits");
    assert_eq!(
        (got_rest.as_str(), got_mode, got_root.as_deref()),
        (rest, mode, root)
    );
}

#[test]
fn tls_options_are_taken_out_of_the_url() {
    check(
        "postgres://u:p@db:5433/gw",
        "postgres://u:p@db:5433/gw",
        None,
        None,
    );
    check(
        "postgres://u@db/gw?sslmode=verify-full&application_name=x",
        "postgres://u@db/gw?application_name=x",
        Some(TlsMode::VerifyFull),
        None,
    );
    check(
        "postgresql://db/gw?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-ca",
        "postgresql://db/gw",
        Some(TlsMode::VerifyCa),
        Some("/etc/ca.pem"),
    );
    check(
        "postgres://db/gw?sslmode=require&sslrootcert=/ca.pem",
        "postgres://db/gw",
        Some(TlsMode::VerifyCa),
        Some("/ca.pem"),
    );
    check(
        "postgres://db/gw?sslmode=disable",
        "postgres://db/gw",
        Some(TlsMode::Disable),
        None,
    );
    // The other parameters pass exactly as written (a re-encoding made `%20` a `+`).
    check(
        "postgres://db/gw?options=-c%20search_path%3Dx&sslmode=require&password=a%20b%2Bc&&x=1+2",
        "postgres://db/gw?options=-c%20search_path%3Dx&password=a%20b%2Bc&x=1+2",
        Some(TlsMode::Require),
        None,
    );
    check(
        "host=db sslmode=require",
        "host=db sslmode=require",
        None,
        None,
    );
}

#[test]
fn a_bad_url_is_refused_without_echoing_the_password() {
    let err = parse("postgres://u:hunter2secret@db/gw?sslmode=sometimes")
        .err()
        .expect("bad sslmode");
    assert!(format!("{err:#}").contains("sslmode"), "{err:#}");
    for url in [
        "postgres://u:hunter2secret@db:notaport/gw",
        "postgres://u:hunter2secret@db/gw?frobnicate=1",
    ] {
        let err = parse(url).err().expect("refused");
        for shown in [format!("{err:#}"), format!("{err:?}")] {
            assert!(!shown.contains("hunter2secret"), "{shown}");
        }
    }
}

#[test]
fn the_target_names_hosts_ports_and_database_only() {
    let target = parse("postgres://gw:hunter2secret@db1:6000,db2/cluster").expect("parse");
    assert_eq!(target.described, "db1:6000,db2:5432/cluster");
    assert!(!format!("{:?}", target.config).contains("hunter2secret"));
    assert_eq!(target.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
}

#[test]
fn every_mode_builds_a_tls_config_and_a_missing_root_file_is_an_error() {
    for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
        parse(&format!("postgres://db/gw?sslmode={mode}")).expect(mode);
    }
    let err = parse("postgres://db/gw?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        .err()
        .expect("missing file");
    assert!(
        format!("{err:#}").contains("/nonexistent/ca.pem"),
        "{err:#}"
    );
}

/// A server that answers PostgreSQL's SSLRequest with "yes" and then completes a TLS
/// handshake with a certificate for `localhost` only, after which it hangs up: enough to
/// tell a handshake the client accepted from one it refused.
struct TlsServer {
    port: u16,
    /// The certificate, which is its own root (PEM).
    root: tempfile::NamedTempFile,
}

impl TlsServer {
    async fn start() -> TlsServer {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
        let mut root = tempfile::NamedTempFile::new().expect("root file");
        std::io::Write::write_all(&mut root, generated.cert.pem().as_bytes()).expect("write");
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut ssl_request = [0u8; 8];
                    socket.read_exact(&mut ssl_request).await?;
                    socket.write_all(b"S").await?;
                    let mut tls = acceptor.accept(socket).await?;
                    let mut startup = [0u8; 4];
                    let _ = tls.read_exact(&mut startup).await;
                    std::io::Result::Ok(())
                });
            }
        });
        TlsServer { port, root }
    }

    /// Whether a client with `options` for `host` completes the handshake.
    async fn handshake(&self, host: &str, options: &str) -> bool {
        let url = format!("postgres://gw@{host}:{}/gw?{options}", self.port);
        let target = parse(&url).expect("parse");
        let err = target
            .config
            .connect(target.tls.clone())
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        !err.contains("TLS handshake")
    }
}

#[tokio::test]
async fn each_sslmode_checks_what_libpq_checks() {
    let server = TlsServer::start().await;
    let root = server.root.path().display().to_string();
    let root_option = format!("sslrootcert={root}");
    // Encryption only: any certificate.
    assert!(server.handshake("127.0.0.1", "sslmode=require").await);
    assert!(server.handshake("127.0.0.1", "sslmode=prefer").await);
    // The chain, not the name.
    let ca = format!("sslmode=verify-ca&{root_option}");
    assert!(server.handshake("127.0.0.1", &ca).await);
    let require_with_root = format!("sslmode=require&{root_option}");
    assert!(server.handshake("127.0.0.1", &require_with_root).await);
    // The chain and the name.
    let full = format!("sslmode=verify-full&{root_option}");
    assert!(server.handshake("localhost", &full).await);
    assert!(
        !server.handshake("127.0.0.1", &full).await,
        "the certificate does not name 127.0.0.1"
    );
    // Without the root file, only the built-in public roots: a private CA is refused.
    assert!(!server.handshake("localhost", "sslmode=verify-full").await);
    assert!(!server.handshake("localhost", "sslmode=verify-ca").await);
    // Another CA's root: refused even by `require` with a root file.
    let other = TlsServer::start().await;
    let other_root = format!(
        "sslmode=require&sslrootcert={}",
        other.root.path().display()
    );
    assert!(!server.handshake("127.0.0.1", &other_root).await);
}
