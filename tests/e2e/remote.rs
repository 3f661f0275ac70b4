//! gwctl over HTTPS (SPEC §6, §7): an admin token made with gwctl on the socket, then every
//! key verb through `--url --token-file --ca-cert` against the daemon's own self-signed
//! certificate; and what an operator sees when the token, the certificate or the address is
//! wrong.
//!
//! `gateway_tests::gwctl::run` always passes `--socket`, which is exactly what these runs
//! must not do, so [`Remote::gwctl`] builds its own command, with the `GWCTL_*` variables
//! cleared and `GWCTL_CONFIG` pointing into the test's directory so the developer's own
//! profiles can never leak in.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use gateway_tests::{Gateway, GwctlOutput};
use serde_json::Value;

/// How to reach one gateway's HTTPS listener with gwctl.
struct Remote {
    url: String,
    token_file: PathBuf,
    ca_cert: PathBuf,
    /// Holds the token file and the (absent) profile file.
    dir: tempfile::TempDir,
}

impl Remote {
    /// Creates an admin token with gwctl over the socket and stores it in a 0600 file.
    async fn new(gateway: &Gateway, token_name: &str) -> (Remote, String) {
        let created = gateway
            .gwctl(&["-o", "json", "admin-tokens", "create", "--name", token_name])
            .await;
        created.assert_success();
        let json = created.json();
        let secret = json["secret"].as_str().expect("secret").to_owned();
        assert!(secret.starts_with("gwadm-"), "{secret}");
        assert_eq!(json["name"], token_name);
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("admin.token");
        write_private(&token_file, &format!("{secret}\n"));
        let remote = Remote {
            url: gateway.admin_url(),
            token_file,
            ca_cert: gateway.admin_cert(),
            dir,
        };
        (remote, secret)
    }

    /// `gwctl --url … --token-file … --ca-cert … args…`.
    async fn gwctl(&self, args: &[&str]) -> GwctlOutput {
        let token_file = self.token_file.display().to_string();
        let ca_cert = self.ca_cert.display().to_string();
        let mut argv = vec![
            "--url",
            self.url.as_str(),
            "--token-file",
            &token_file,
            "--ca-cert",
            &ca_cert,
        ];
        argv.extend_from_slice(args);
        self.gwctl_raw(&argv).await
    }

    /// gwctl with exactly `args`, no terminal on stdin, a clean environment.
    async fn gwctl_raw(&self, args: &[&str]) -> GwctlOutput {
        let output = tokio::process::Command::new(gateway_tests::binaries::gwctl())
            .args(args)
            .env("GWCTL_CONFIG", self.dir.path().join("no-config.toml"))
            .env_remove("GWCTL_SOCKET")
            .env_remove("GWCTL_URL")
            .env_remove("GWCTL_TOKEN")
            .env_remove("GWCTL_TOKEN_FILE")
            .env_remove("GWCTL_CA_CERT")
            .env_remove("GWCTL_PROFILE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running gwctl");
        GwctlOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[track_caller]
fn assert_exit(out: &GwctlOutput, code: i32, stderr_fragment: &str) {
    assert_eq!(
        out.code, code,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains(stderr_fragment),
        "{stderr_fragment:?} missing from stderr:\n{}",
        out.stderr
    );
}

#[tokio::test]
async fn every_key_verb_works_over_https_with_an_admin_token() {
    let gateway = Gateway::start().await;
    let (remote, token) = Remote::new(&gateway, "ci").await;

    // create, in JSON: the API's KeyCreated.
    let created = remote
        .gwctl(&[
            "-o", "json", "keys", "create", "--name", "remote", "--rpm", "60",
        ])
        .await;
    created.assert_success();
    let created = created.json();
    let key_id = created["id"].as_str().expect("id").to_owned();
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("sk-proxy-"))
    );
    // The change is attributed to the token, not to a Unix user.
    let audit = gateway.admin().get("/v1/audit").await.body;
    let token_id = audit["entries"][0]["actor"]
        .as_str()
        .and_then(|actor| actor.strip_prefix("token:"))
        .expect("a token actor")
        .to_owned();
    assert!(token_id.starts_with("tok_"), "{token_id}");

    // list and show, in tables.
    let listed = remote.gwctl(&["keys", "list"]).await;
    listed.assert_success();
    assert!(
        listed.stdout.lines().any(|l| l.starts_with(&key_id)),
        "{}",
        listed.stdout
    );
    let shown = remote.gwctl(&["keys", "show", "remote"]).await;
    shown.assert_success();
    assert!(shown.stdout.contains("rate limit:"), "{}", shown.stdout);

    // edit by name.
    remote
        .gwctl(&["keys", "edit", "remote", "--rpm", "120"])
        .await
        .assert_success();
    let key = gateway
        .admin()
        .get(&format!("/v1/keys/{key_id}"))
        .await
        .body;
    assert_eq!(key["rate_limit_rpm"], 120);

    // rotate with a grace period: no question, the old key keeps working for an hour.
    let rotated = remote
        .gwctl(&["keys", "rotate", &key_id, "--grace", "1h"])
        .await;
    rotated.assert_success();
    assert!(
        rotated.stdout.contains("old key:") && rotated.stdout.contains("works until"),
        "{}",
        rotated.stdout
    );
    let secret_line = rotated.stdout.lines().last().expect("a last line");
    assert!(
        secret_line.starts_with("secret:") && secret_line.contains("sk-proxy-"),
        "{}",
        rotated.stdout
    );
    assert!(rotated.stderr.contains("only time"), "{}", rotated.stderr);
    let old = gateway
        .admin()
        .get(&format!("/v1/keys/{key_id}"))
        .await
        .body;
    assert_eq!(old["state"], "active", "still inside the grace period");
    assert!(old["revoked_at"].is_string());
    let keys = gateway.admin().get("/v1/keys").await.body;
    let second_id = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["id"].as_str())
        .find(|id| *id != key_id)
        .expect("the new key")
        .to_owned();
    assert_eq!(
        gateway
            .admin()
            .get(&format!("/v1/keys/{second_id}"))
            .await
            .body["rate_limit_rpm"],
        120,
        "same settings"
    );

    // rotate with no grace period: destructive, so it refuses without a terminal…
    let unconfirmed = remote.gwctl(&["keys", "rotate", &second_id]).await;
    assert_exit(&unconfirmed, 2, "--yes");
    assert_eq!(
        gateway
            .admin()
            .get(&format!("/v1/keys/{second_id}"))
            .await
            .body["state"],
        "active"
    );
    // …and with --yes revokes the old key now; JSON is the API's KeyRotated.
    let rotated = remote
        .gwctl(&[
            "-o", "json", "keys", "rotate", &second_id, "--grace", "0", "--yes",
        ])
        .await;
    rotated.assert_success();
    let rotated: Value = rotated.json();
    assert_eq!(rotated["previous"]["id"], second_id.as_str());
    assert_eq!(rotated["previous"]["state"], "revoked");
    assert!(
        rotated["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("sk-proxy-"))
    );
    let third_id = rotated["id"].as_str().expect("id").to_owned();
    // A revoked key cannot be rotated: the daemon's 409 becomes exit 4.
    let again = remote
        .gwctl(&["keys", "rotate", &second_id, "--grace", "1h"])
        .await;
    assert_exit(&again, 4, "key_revoked");
    // A grace period beyond 90 days is refused before any request.
    let too_long = remote
        .gwctl(&["keys", "rotate", &third_id, "--grace", "91d"])
        .await;
    assert_exit(&too_long, 2, "grace_period_seconds");

    // revoke.
    remote
        .gwctl(&["keys", "revoke", &third_id, "--yes"])
        .await
        .assert_success();
    assert_eq!(
        gateway
            .admin()
            .get(&format!("/v1/keys/{third_id}"))
            .await
            .body["state"],
        "revoked"
    );
    // usage and audit read fine over HTTPS too.
    remote
        .gwctl(&["keys", "usage", &third_id])
        .await
        .assert_success();
    let audit = remote.gwctl(&["-o", "json", "audit", "--limit", "3"]).await;
    audit.assert_success();
    assert_eq!(
        audit.json()["entries"][0]["actor"],
        format!("token:{token_id}")
    );

    // Nothing gwctl printed over HTTPS holds the admin token.
    for out in [&listed, &shown, &unconfirmed, &again, &too_long, &audit] {
        assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
    }
}

#[tokio::test]
async fn admin_tokens_are_managed_on_the_socket_only() {
    let gateway = Gateway::start().await;
    let (remote, token) = Remote::new(&gateway, "ci").await;

    // Over HTTPS, with a valid token, the daemon refuses: exit 5, its message shown.
    for args in [
        &["admin-tokens", "list"][..],
        &["admin-tokens", "create", "--name", "escalate"],
        &["admin-tokens", "revoke", "ci", "--yes"],
    ] {
        let out = remote.gwctl(args).await;
        assert_exit(&out, 5, "only over the Unix socket");
        assert!(!out.stderr.contains(&token), "{}", out.stderr);
    }

    // On the socket: a table, the secret once with its warning, revoke asks unless --yes.
    let created = gateway
        .gwctl(&["admin-tokens", "create", "--name", "laptop"])
        .await;
    created.assert_success();
    let secret_line = created.stdout.lines().last().expect("a last line");
    assert!(
        secret_line.starts_with("secret:") && secret_line.contains("gwadm-"),
        "{}",
        created.stdout
    );
    assert!(created.stderr.contains("only time"), "{}", created.stderr);
    let listed = gateway.gwctl(&["admin-tokens", "list"]).await;
    listed.assert_success();
    assert_eq!(listed.stdout.lines().count(), 3, "{}", listed.stdout);
    assert!(!listed.stdout.contains(&token), "{}", listed.stdout);
    assert_exit(
        &gateway.gwctl(&["admin-tokens", "revoke", "ci"]).await,
        2,
        "--yes",
    );
    assert_exit(
        &gateway
            .gwctl(&["admin-tokens", "revoke", "nobody", "--yes"])
            .await,
        3,
        "nobody",
    );
    remote.gwctl(&["keys", "list"]).await.assert_success();
    let revoked = gateway
        .gwctl(&["-o", "json", "admin-tokens", "revoke", "ci", "--yes"])
        .await;
    revoked.assert_success();
    assert!(revoked.json()["revoked_at"].is_string());

    // A revoked token is locked out at once.
    assert_exit(&remote.gwctl(&["keys", "list"]).await, 5, "unauthorized");

    // The table of the token just revoked says so (gwctl read its clock before asking).
    let revoked = gateway
        .gwctl(&["admin-tokens", "revoke", "laptop", "--yes"])
        .await;
    revoked.assert_success();
    assert!(
        revoked.stdout.contains("state:") && revoked.stdout.contains("revoked"),
        "{}",
        revoked.stdout
    );
    assert!(!revoked.stdout.contains("active"), "{}", revoked.stdout);
}

#[tokio::test]
async fn wrong_tokens_certificates_and_addresses_are_clear_failures() {
    let gateway = Gateway::start().await;
    let (remote, token) = Remote::new(&gateway, "ci").await;
    let url = remote.url.clone();
    let ca_cert = remote.ca_cert.display().to_string();

    // A well-formed token the daemon does not know: 401, exit 5.
    let unknown = Remote {
        url: url.clone(),
        token_file: remote.dir.path().join("unknown.token"),
        ca_cert: remote.ca_cert.clone(),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let stranger = gateway_shared::key::AdminToken::generate()
        .expect("rng")
        .expose()
        .to_owned();
    write_private(&unknown.token_file, &stranger);
    let out = unknown.gwctl(&["keys", "list"]).await;
    assert_exit(&out, 5, "unauthorized");
    assert!(!out.stderr.contains(&stranger), "{}", out.stderr);

    // A malformed token: refused by gwctl itself, same exit code, never quoted.
    let typo = gateway_tests::admin::typo(&token);
    write_private(&unknown.token_file, &typo);
    let out = unknown.gwctl(&["keys", "list"]).await;
    assert_exit(&out, 5, "not a valid admin token");
    assert!(!out.stderr.contains(&typo), "{}", out.stderr);

    // No token at all: a usage error that says how to give one.
    let out = remote
        .gwctl_raw(&["--url", &url, "--ca-cert", &ca_cert, "keys", "list"])
        .await;
    assert_exit(&out, 2, "--token-file");
    // --socket and --url together: a usage error.
    let out = remote
        .gwctl_raw(&[
            "--socket",
            &gateway.socket.display().to_string(),
            "--url",
            &url,
            "keys",
            "list",
        ])
        .await;
    assert_exit(&out, 2, "--url");

    // Without --ca-cert the self-signed certificate is not trusted: the message names the URL
    // and the flag.
    let token_file = remote.token_file.display().to_string();
    let out = remote
        .gwctl_raw(&["--url", &url, "--token-file", &token_file, "keys", "list"])
        .await;
    assert_exit(&out, 1, "--ca-cert");
    assert!(out.stderr.contains(&url), "{}", out.stderr);
    assert!(!out.stderr.contains(&token), "{}", out.stderr);

    // Nothing listening: exit 69 naming the URL.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("https://{}", listener.local_addr().expect("addr"))
    };
    let out = remote
        .gwctl_raw(&[
            "--url",
            &closed,
            "--token-file",
            &token_file,
            "--ca-cert",
            &ca_cert,
            "keys",
            "list",
        ])
        .await;
    assert_exit(&out, 69, &closed);

    // The same flags from the environment and from a profile work like the flags.
    let env_run = tokio::process::Command::new(gateway_tests::binaries::gwctl())
        .args(["keys", "create", "--name", "via-env"])
        .env("GWCTL_CONFIG", remote.dir.path().join("no-config.toml"))
        .env_remove("GWCTL_SOCKET")
        .env_remove("GWCTL_TOKEN")
        .env_remove("GWCTL_PROFILE")
        .env("GWCTL_URL", &url)
        .env("GWCTL_TOKEN_FILE", &remote.token_file)
        .env("GWCTL_CA_CERT", &remote.ca_cert)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("gwctl");
    assert!(
        env_run.status.success(),
        "{}",
        String::from_utf8_lossy(&env_run.stderr)
    );
    let config = remote.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_profile = \"e2e\"\n[profiles.e2e]\nurl = {url:?}\ntoken_file = \
             \"admin.token\"\nca_cert = {ca_cert:?}\n"
        ),
    )
    .expect("config");
    let profile_run = tokio::process::Command::new(gateway_tests::binaries::gwctl())
        .args(["keys", "create", "--name", "via-profile"])
        .env("GWCTL_CONFIG", &config)
        .env_remove("GWCTL_SOCKET")
        .env_remove("GWCTL_URL")
        .env_remove("GWCTL_TOKEN")
        .env_remove("GWCTL_TOKEN_FILE")
        .env_remove("GWCTL_CA_CERT")
        .env_remove("GWCTL_PROFILE")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("gwctl");
    assert!(
        profile_run.status.success(),
        "{}",
        String::from_utf8_lossy(&profile_run.stderr)
    );
    // Both went over HTTPS: the audit actor is the token, not a Unix user.
    let audit = gateway.admin().get("/v1/audit").await.body;
    let actors: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "key.create")
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert_eq!(actors.len(), 2, "{audit}");
    assert!(
        actors.iter().all(|a| a.starts_with("token:tok_")),
        "{actors:?}"
    );
}

/// The proxy variables of the environment are not used (exchange.rs: the management API is
/// reached directly): with every one of them naming a listener, gwctl still reaches the
/// daemon over HTTPS and the socket, and the listener never sees a connection (which would
/// carry the address, and through an `http://` proxy's CONNECT-less mode, the token).
#[tokio::test]
async fn proxy_variables_in_the_environment_are_ignored() {
    let gateway = Gateway::start().await;
    let (remote, _token) = Remote::new(&gateway, "proxied").await;
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    proxy.set_nonblocking(true).expect("nonblocking");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
    let token_file = remote.token_file.display().to_string();
    let ca_cert = remote.ca_cert.display().to_string();
    let socket = gateway.socket.display().to_string();
    for args in [
        vec![
            "--url",
            remote.url.as_str(),
            "--token-file",
            &token_file,
            "--ca-cert",
            &ca_cert,
            "keys",
            "list",
        ],
        vec!["--socket", &socket, "keys", "list"],
    ] {
        let mut command = tokio::process::Command::new(gateway_tests::binaries::gwctl());
        command
            .args(&args)
            .env("GWCTL_CONFIG", remote.dir.path().join("no-config.toml"))
            .env_remove("GWCTL_SOCKET")
            .env_remove("GWCTL_URL")
            .env_remove("GWCTL_TOKEN")
            .env_remove("GWCTL_TOKEN_FILE")
            .env_remove("GWCTL_CA_CERT")
            .env_remove("GWCTL_PROFILE")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdin(Stdio::null());
        for variable in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            command.env(variable, &proxy_url);
        }
        let output = command.output().await.expect("gwctl");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    match proxy.accept() {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the proxy was connected to: {other:?}"),
    }
}
