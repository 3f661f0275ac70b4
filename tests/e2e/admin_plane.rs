//! The management plane under attack (issue #20, points 5, 7 and 8): connection floods on
//! each listener against an open-files limit, settings that open the admin plane to other
//! users, and failed admin logins.
//!
//! The flood tests start the daemon under a small open-files limit (`ulimit -n`) and open
//! more connections than it allows; whatever a flood does to its own listener, the other
//! listeners must keep answering. The waits here bound a hang (a listener that stopped
//! accepting); they measure nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway_shared::key::AdminToken;
use gateway_tests::gateway::{gatewayd_command_limited, signal};
use gateway_tests::https::{client_trusting_file, client_trusting_from, self_signed};
use gateway_tests::{Gateway, GatewayOptions};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixStream};

/// The open-files limit (soft = hard) the flood tests start the daemon under.
const OPEN_FILES: u64 = 1024;
/// Connections a flood opens: more than the daemon may hold.
const FLOOD: usize = 1100;
/// How long a listener may take to answer while another one is flooded. Before the fix a
/// flood held every descriptor for 5 s (proxy refusals), 10 s (TLS handshakes) or 30 s
/// (socket header reads).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// A daemon under [`OPEN_FILES`] with a small proxy cap (so that its budget fits).
async fn start_under_a_small_limit() -> Gateway {
    Gateway::start_with(GatewayOptions {
        proxy_config: "max_connections = 16".into(),
        log_filter: "info".into(),
        open_files_limit: Some((OPEN_FILES, OPEN_FILES)),
        ..Default::default()
    })
    .await
}

/// Opens `n` TCP connections that never send a byte.
async fn tcp_flood(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut flood = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        {
            flood.push(stream);
        }
    }
    flood
}

/// Opens up to `n` connections to a Unix socket that never send a byte (a full backlog
/// refuses some: they are retried a little, then given up).
async fn unix_flood(path: &Path, n: usize) -> Vec<UnixStream> {
    let mut flood = Vec::with_capacity(n);
    for _ in 0..n {
        for _ in 0..20 {
            if let Ok(stream) = UnixStream::connect(path).await {
                flood.push(stream);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    flood
}

/// Whether the peer closed the connection within `ANSWER_WITHIN` (EOF or a reset).
async fn closed_by_peer(stream: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(ANSWER_WITHIN, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn proxy_health(gateway: &Gateway) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .expect("client");
    client
        .get(format!("{}/healthz", gateway.proxy_url()))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

async fn socket_health(gateway: &Gateway) -> Result<u16, String> {
    tokio::time::timeout(ANSWER_WITHIN, gateway.admin().get("/healthz"))
        .await
        .map(|r| r.status)
        .map_err(|_| "no answer".to_owned())
}

async fn https_health(gateway: &Gateway, token: &str) -> Result<u16, String> {
    https_health_from(gateway, token, [127, 0, 0, 1]).await
}

/// `/healthz` over HTTPS from the loopback address `from` (each 127.0.0.x is another client).
async fn https_health_from(gateway: &Gateway, token: &str, from: [u8; 4]) -> Result<u16, String> {
    let pem = std::fs::read(gateway.admin_cert()).expect("cert");
    let client = client_trusting_from(&pem, Some(from.into()));
    tokio::time::timeout(
        ANSWER_WITHIN,
        client
            .get(format!("{}/healthz", gateway.admin_url()))
            .bearer_auth(token)
            .send(),
    )
    .await
    .map_err(|_| "no answer".to_owned())?
    .map(|r| r.status().as_u16())
    .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_flood_of_the_admin_https_port_leaves_the_proxy_and_the_socket_answering() {
    let gateway = start_under_a_small_limit().await;
    let mut flood = tcp_flood(gateway.admin_addr, FLOOD).await;
    assert_eq!(
        proxy_health(&gateway).await,
        Ok(200),
        "the proxy answers during the flood"
    );
    assert_eq!(
        socket_health(&gateway).await,
        Ok(200),
        "and so does the socket"
    );
    let last = flood.last_mut().expect("connected");
    assert!(
        closed_by_peer(last).await,
        "a connection beyond the admin cap is closed at once"
    );
}

#[tokio::test]
async fn a_flood_of_the_admin_socket_leaves_the_proxy_and_https_answering() {
    let gateway = start_under_a_small_limit().await;
    let (_, token) = gateway.admin().create_admin_token("ops").await;
    let mut flood = unix_flood(&gateway.socket, FLOOD).await;
    assert_eq!(
        proxy_health(&gateway).await,
        Ok(200),
        "the proxy answers during the flood"
    );
    assert_eq!(
        https_health(&gateway, &token).await,
        Ok(200),
        "and so does the HTTPS listener"
    );
    let last = flood.last_mut().expect("connected");
    assert!(
        closed_by_peer(last).await,
        "a connection beyond the socket's cap is closed at once"
    );
}

#[tokio::test]
async fn a_flood_of_the_proxy_port_past_its_cap_leaves_the_admin_plane_answering() {
    let gateway = start_under_a_small_limit().await;
    let (_, token) = gateway.admin().create_admin_token("ops").await;
    let _flood = tcp_flood(gateway.proxy_addr, FLOOD).await;
    assert_eq!(socket_health(&gateway).await, Ok(200), "the socket answers");
    assert_eq!(
        https_health(&gateway, &token).await,
        Ok(200),
        "and so does the HTTPS listener"
    );
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// One address cannot take every HTTPS slot: it holds at most a quarter of them, and an
/// operator elsewhere still gets in. Before, eight silent connections (re-opened as
/// `auth_timeout` closed them; or failed logins waiting out their delay) locked every
/// operator out for as long as one client kept it up.
#[tokio::test]
async fn one_address_cannot_take_every_admin_https_slot() {
    let gateway = Gateway::start_with(GatewayOptions {
        admin_config: "max_connections = 8".into(),
        ..Default::default()
    })
    .await;
    let (_, token) = gateway.admin().create_admin_token("ops").await;
    let mut hog = tcp_flood(gateway.admin_addr, 8).await;
    assert_eq!(
        https_health_from(&gateway, &token, [127, 0, 0, 2]).await,
        Ok(200),
        "an operator at another address gets in"
    );
    let last = hog.last_mut().expect("connected");
    assert!(
        closed_by_peer(last).await,
        "beyond its share an address's connection is closed at once"
    );
}

/// An HTTPS connection must authenticate soon: one that never finishes its handshake, or
/// finishes it and sends no request, gives its slot back after `auth_timeout`; beyond
/// `max_connections` a connection is closed at once. (Three addresses: one may hold only a
/// share of the slots.)
#[tokio::test]
async fn an_admin_connection_must_authenticate_soon_and_the_cap_is_its_own() {
    let gateway = Gateway::start_with(GatewayOptions {
        admin_config: "max_connections = 2\nauth_timeout = \"1s\"".into(),
        ..Default::default()
    })
    .await;
    let (_, token) = gateway.admin().create_admin_token("ops").await;
    // One holder never says a word, the other finishes TLS and sends half a request head.
    let mut silent = TcpStream::connect(gateway.admin_addr)
        .await
        .expect("connect");
    let cert = std::fs::read(gateway.admin_cert()).expect("cert");
    let socket = connect_from([127, 0, 0, 2], gateway.admin_addr)
        .await
        .into_std()
        .expect("std socket");
    socket.set_nonblocking(false).expect("blocking");
    let (handshake_tx, handshake_rx) = tokio::sync::oneshot::channel();
    let half_a_request =
        tokio::task::spawn_blocking(move || tls_then_half_a_request(socket, &cert, handshake_tx));
    tokio::time::timeout(Duration::from_secs(10), handshake_rx)
        .await
        .expect("TLS handshake in time")
        .expect("handshake finished");
    let mut beyond = connect_from([127, 0, 0, 3], gateway.admin_addr).await;
    assert!(closed_by_peer(&mut beyond).await, "beyond the cap: closed");

    assert!(
        closed_by_peer(&mut silent).await,
        "a silent connection is closed after auth_timeout"
    );
    assert!(
        half_a_request.await.expect("joined"),
        "so is one that does not finish its request head in time"
    );
    assert_eq!(https_health(&gateway, &token).await, Ok(200), "slots freed");
}

/// Speaks TLS on `socket` (blocking rustls), says so on `handshake`, sends half a request
/// head and waits for the gateway to close: true when it did within 10 s.
fn tls_then_half_a_request(
    mut socket: std::net::TcpStream,
    cert: &[u8],
    handshake: tokio::sync::oneshot::Sender<()>,
) -> bool {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert) {
        roots.add(cert.expect("PEM")).expect("root");
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let name = "127.0.0.1".try_into().expect("server name");
    let mut connection = rustls::ClientConnection::new(config, name).expect("client");
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).expect("handshake");
    }
    let _ = handshake.send(());
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("half a head");
    let mut buf = [0u8; 64];
    match tls.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The open-files limit is checked against the caps at start-up: a soft limit below what
/// they need is raised toward the hard limit, and a hard limit below it stops start-up with
/// the numbers.
#[tokio::test]
async fn the_open_files_limit_is_raised_to_fit_the_caps_or_start_up_refused() {
    let gateway = Gateway::start_with(GatewayOptions {
        proxy_config: "max_connections = 16".into(),
        log_filter: "info".into(),
        open_files_limit: Some((128, 4096)),
        ..Default::default()
    })
    .await;
    let pid = gateway.pid().expect("pid");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{limits}"));
    assert!(soft > 128 && soft <= 4096, "soft limit now {soft}");
    assert!(
        gateway.logs().contains("raised the open-files limit"),
        "{}",
        gateway.logs()
    );

    // The default proxy cap (4096 connections) cannot fit under a hard limit of 1024.
    let (code, stderr) = refused_start("", "", Some((1024, 1024))).await;
    assert_ne!(code, Some(0), "{stderr}");
    for needle in ["open files", "1024", "proxy.max_connections"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

/// Starts gatewayd on a config of its own (`[admin]` and `[proxy]` lines added) expecting it
/// to refuse: its exit code and stderr. A daemon that starts anyway is killed after 20 s.
async fn refused_start(
    admin_lines: &str,
    proxy_lines: &str,
    open_files_limit: Option<(u64, u64)>,
) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gatewayd.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[admin]\nsocket = {:?}\nlisten = \"127.0.0.1:0\"\n{admin_lines}\n\
             [proxy]\nlisten = \"127.0.0.1:0\"\n{proxy_lines}\n",
            dir.path().join("data"),
            dir.path().join("admin.sock"),
        ),
    )
    .expect("write config");
    let child = gatewayd_command_limited(&path, "info", open_files_limit)
        .spawn()
        .expect("spawn");
    match tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Ok(output) => {
            let output = output.expect("wait");
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
        Err(_) => (Some(0), "gatewayd started and kept running".into()),
    }
}

#[tokio::test]
async fn a_socket_mode_that_lets_every_user_in_is_refused_naming_its_line() {
    for mode in ["0777", "0666", "0662", "0604"] {
        let (code, stderr) = refused_start(&format!("socket_mode = \"{mode}\""), "", None).await;
        assert_eq!(code, Some(78), "{mode}: {stderr}");
        assert!(stderr.contains("line 5: admin.socket_mode"), "{stderr}");
        assert!(stderr.contains("every local user"), "{stderr}");
    }
    // The group is how operators get in: 0660 (the default) and 0600 start.
    let gateway = Gateway::start_with(GatewayOptions {
        admin_config: "socket_mode = \"0600\"".into(),
        ..Default::default()
    })
    .await;
    let mode = std::fs::metadata(&gateway.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_tls_key_others_can_read_is_refused_saying_how_to_fix_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    let admin = format!("tls_cert = {cert_path:?}\ntls_key = {key_path:?}");
    for mode in [0o644, 0o604, 0o664] {
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let (code, stderr) = refused_start(&admin, "", None).await;
        assert_ne!(code, Some(0), "{mode:o}: {stderr}");
        assert!(stderr.contains(&key_path.display().to_string()), "{stderr}");
        assert!(stderr.contains("readable by every user"), "{stderr}");
        assert!(stderr.contains("chmod 600"), "{stderr}");
    }
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let gateway = Gateway::start_with(GatewayOptions {
        admin_config: admin,
        ..Default::default()
    })
    .await;
    let (_, token) = gateway.admin().create_admin_token("ops").await;
    let client = gateway_tests::https::client_trusting_file(&cert_path);
    let status = client
        .get(format!("{}/healthz", gateway.admin_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("HTTPS")
        .status();
    assert_eq!(status, 200, "a private key starts");

    // A reload does not take a key that became readable by others either.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    signal(gateway.pid().expect("pid"), rustix::process::Signal::HUP);
    let mut said = String::new();
    for _ in 0..200 {
        said = gateway.logs();
        if said.contains("certificate reload failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let line = said
        .lines()
        .find(|l| l.contains("certificate reload failed"))
        .unwrap_or_else(|| panic!("no reload failure logged:\n{said}"));
    assert!(line.contains("chmod 600"), "{line}");
}

/// The daemon's own key (self-signed, under the data directory) is narrowed back to 0600,
/// as the database is.
#[tokio::test]
async fn the_generated_tls_key_is_narrowed_back_to_its_owner() {
    let mut gateway = Gateway::start_with(GatewayOptions {
        log_filter: "info".into(),
        ..Default::default()
    })
    .await;
    let key = gateway.data_dir.join("tls/key.pem");
    let mode = |path: &Path| std::fs::metadata(path).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    let status = gateway.stop().await;
    assert!(status.success());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    gateway.start_again().await;
    assert_eq!(mode(&key), 0o600, "narrowed at start-up");
    assert!(
        gateway.logs().contains("narrowing it to its owner"),
        "{}",
        gateway.logs()
    );
}

/// Failed admin logins: a warning names the client address and the reason (never the token),
/// at most one a window per address with a count of the ones held back; repeated failures
/// from one address are answered more and more slowly; a valid token never waits.
#[tokio::test]
async fn failed_admin_logins_are_logged_with_the_address_rate_limited_and_slowed() {
    let gateway = Gateway::start_with(GatewayOptions {
        log_filter: "info".into(),
        ..Default::default()
    })
    .await;
    let (revoked_id, revoked) = gateway.admin().create_admin_token("old").await;
    let (_, token) = gateway.admin().create_admin_token("ops").await;
    assert_eq!(
        gateway
            .admin()
            .delete(&format!("/v1/admin-tokens/{revoked_id}"))
            .await
            .status,
        200
    );
    let unknown = AdminToken::generate().expect("token");
    let unknown = unknown.expose().to_owned();
    let typo = gateway_tests::admin::typo(&token);
    let bad: Vec<Option<String>> = vec![
        None,
        Some("gwadm-not-a-token".into()),
        Some(typo.clone()),
        Some(unknown.clone()),
        Some(revoked.clone()),
    ];
    let client = client_trusting_file(&gateway.admin_cert());
    let url = format!("{}/v1/keys", gateway.admin_url());
    // Twelve failures at once, each on its own connection.
    let mut failures = tokio::task::JoinSet::new();
    for i in 0..12 {
        let request = client.get(&url);
        let request = match &bad[i % bad.len()] {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        failures.spawn(request.send());
    }
    while let Some(response) = failures.join_next().await {
        let response = response.expect("joined").expect("answered");
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
    }

    let text = metrics_text(&gateway).await;
    let metric = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    for reason in ["missing", "malformed", "unknown", "revoked"] {
        assert!(
            metric(&format!(
                "gateway_admin_auth_failures_total{{reason=\"{reason}\"}}"
            )) >= 2,
            "{reason}"
        );
    }
    // The first few failures of an address are answered at once, the rest were slowed.
    let slowed = metric("gateway_admin_auth_slowed_total");
    assert_eq!(slowed, 12 - 3, "{text}");

    // One warning for the address in this window, naming it and the reason, no token.
    let mut logs = String::new();
    for _ in 0..200 {
        logs = gateway.logs();
        if logs.contains("admin authentication failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("admin authentication failed"))
        .collect();
    assert_eq!(lines.len(), 1, "rate-limited to one a window: {lines:#?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("client=127.0.0.1:"), "{}", lines[0]);
    assert!(lines[0].contains("reason="), "{}", lines[0]);
    for secret in [&token, &typo, &unknown, &revoked] {
        assert!(!logs.contains(secret.as_str()), "a token reached the log");
    }

    // A valid token from the slowed address is answered while a failure sent before it is
    // still waiting, and is never counted as slowed.
    let waiting = tokio::spawn(client.get(&url).bearer_auth(&typo).send());
    let answered = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("valid");
    assert_eq!(answered.status(), 200);
    assert!(
        !waiting.is_finished(),
        "the failure sent first is still being slowed"
    );
    let refused = waiting.await.expect("joined").expect("answered");
    assert_eq!(refused.status(), 401);
    let text = metrics_text(&gateway).await;
    assert!(
        text.contains(&format!("gateway_admin_auth_slowed_total {}", slowed + 1)),
        "only the failure was slowed: {text}"
    );
}

async fn metrics_text(gateway: &Gateway) -> String {
    let metrics = gateway.admin().get("/metrics").await;
    assert_eq!(metrics.status, 200);
    metrics.body.as_str().expect("Prometheus text").to_owned()
}
