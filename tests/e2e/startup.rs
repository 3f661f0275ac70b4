//! Start-up and shutdown of the daemon (SPEC §8): config errors, the socket, signals.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use gateway_tests::gateway::gatewayd_command;
use gateway_tests::{Gateway, GatewayOptions};

async fn start_with_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    let output = gatewayd_command(&path, "info")
        .output()
        .await
        .expect("run gatewayd");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_unknown_config_field_stops_start_up_naming_the_line() {
    let (code, stderr) =
        start_with_config("[proxy]\nlisten = \"127.0.0.1:0\"\ntrusted_proxy = []\n").await;
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("trusted_proxy"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");

    let (code, stderr) = start_with_config("data_dir = \n").await;
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");

    // A value refused after parsing names its line too.
    let (code, stderr) =
        start_with_config("[proxy]\nmax_connections = 10\nlisten = \"everywhere\"\n").await;
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("line 3: proxy.listen"), "{stderr}");
}

/// A log setting that cannot be used is said, not silently replaced by the default.
#[tokio::test]
async fn an_unusable_log_setting_is_said() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gatewayd.toml");
    std::fs::write(&path, "").expect("write");
    let output = gatewayd_command(&path, "[[[bad")
        .env("GATEWAYD_LOG_FORMAT", "xml")
        .arg("--check-config")
        .output()
        .await
        .expect("run gatewayd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("GATEWAYD_LOG=\"[[[bad\" is not a log filter"),
        "{stderr}"
    );
    assert!(stderr.contains("GATEWAYD_LOG_FORMAT=\"xml\""), "{stderr}");
}

#[tokio::test]
async fn the_socket_is_0660_and_removed_on_sigterm() {
    let mut gateway = Gateway::start().await;
    let meta = std::fs::metadata(&gateway.socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let status = gateway.stop().await;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(!gateway.socket.exists(), "socket removed on shutdown");
    assert!(gateway.logs().contains("shutting down"));
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let mut gateway = Gateway::start().await;
    let pid = gateway.pid().expect("pid");
    gateway_tests::gateway::signal(pid, rustix::process::Signal::INT);
    // stop() sends SIGTERM to an exiting process; what matters is the exit status.
    let status = gateway.stop().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_second_daemon_refuses_a_live_socket() {
    let gateway = Gateway::start_with(GatewayOptions {
        log_filter: "info".into(),
        ..Default::default()
    })
    .await;
    let output = gatewayd_command(&gateway.config_path, "info")
        .output()
        .await
        .expect("second gatewayd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("already serving"), "{stderr}");
    // The first daemon is unharmed.
    assert_eq!(gateway.admin().get("/v1/keys").await.status, 200);
}

/// Two daemons on one database would each hold spend limits in their own memory (a key could
/// spend its limit once per daemon): a second one on the same data directory, even with its
/// own socket and ports, refuses to start.
#[tokio::test]
async fn a_second_daemon_refuses_a_data_directory_in_use() {
    let gateway = Gateway::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("second.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nsocket = {:?}\n",
            gateway.data_dir,
            dir.path().join("second.sock")
        ),
    )
    .expect("write config");
    let output = gatewayd_command(&config, "info")
        .output()
        .await
        .expect("second gatewayd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("already using the data directory"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("second.sock").exists(),
        "the failed start removed the socket it had bound"
    );
    assert_eq!(gateway.admin().get("/v1/keys").await.status, 200);
}
