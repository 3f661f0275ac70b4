//! `install.sh`: installs, writes a default config, starts the daemon; running it again keeps
//! the config and data and restarts the daemon (SPEC §8).

use std::path::Path;
use std::process::Stdio;

fn install(root: &Path, data_dir: &str) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh");
    std::process::Command::new("bash")
        .arg(script)
        .arg("--prefix")
        .arg(root.join("prefix"))
        .arg("--config-dir")
        .arg(root.join("etc"))
        .arg("--data-dir")
        .arg(root.join(data_dir))
        .arg("--socket")
        .arg(root.join("admin.sock"))
        .arg("--proxy-listen")
        .arg("127.0.0.1:0")
        .arg("--admin-listen")
        .arg("127.0.0.1:0")
        // The suite's own build: install.sh's `cargo build -p gatewayd -p gwctl` resolves
        // features unlike `cargo test --workspace` and recompiled half the dependencies.
        .arg("--bin-dir")
        .arg(gateway_tests::binaries::built())
        .stdin(Stdio::null())
        .output()
        .expect("running install.sh")
}

/// Stops the daemon install.sh started, even when an assertion fails first.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("data/gatewayd.pid"))
            && let Ok(pid) = pid.trim().parse::<u32>()
        {
            gateway_tests::gateway::signal(pid, rustix::process::Signal::TERM);
        }
    }
}

#[tokio::test]
async fn install_starts_a_working_gateway_and_is_idempotent() {
    let dir = tempfile::Builder::new()
        .prefix("gw-install-")
        .tempdir()
        .expect("dir");
    let root = dir.path();
    let _stop = StopOnDrop(root);
    let first = install(root, "data");
    let log = String::from_utf8_lossy(&first.stdout).into_owned()
        + &String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "install.sh failed:\n{log}");
    for bin in ["gatewayd", "gwctl"] {
        assert!(
            root.join("prefix/bin").join(bin).exists(),
            "{bin} installed"
        );
    }
    let config = root.join("etc/gatewayd.toml");
    assert!(config.exists(), "default config written");

    let gwctl = root.join("prefix/bin/gwctl");
    let socket = root.join("admin.sock");
    let created = gateway_tests::gwctl::run_binary(
        &gwctl,
        &socket,
        &["-o", "json", "keys", "create", "--name", "installed"],
    )
    .await;
    created.assert_success();

    // A second run keeps an edited config and the data, and restarts the daemon.
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("# edited by the operator\n");
    std::fs::write(&config, &text).expect("edit config");
    // Given another data directory, the kept config's still decides where the running
    // daemon's pid file is (it was started on that one, and is restarted, not doubled).
    let second = install(root, "elsewhere");
    let log = String::from_utf8_lossy(&second.stdout).into_owned()
        + &String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "second install.sh failed:\n{log}");
    assert!(log.contains("keeping existing config"), "{log}");
    assert!(log.contains("stopping the running gatewayd"), "{log}");
    // The hint names the socket the kept config serves, not the flag's (none given here).
    assert!(
        log.contains(&format!(
            "next: gwctl --socket {}",
            root.join("admin.sock").display()
        )),
        "{log}"
    );
    assert!(!root.join("elsewhere").exists(), "no stray data directory");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), text);
    let listed =
        gateway_tests::gwctl::run_binary(&gwctl, &socket, &["-o", "json", "keys", "list"]).await;
    listed.assert_success();
    assert_eq!(listed.json()["keys"][0]["name"], "installed");
}

/// A flag without its value is a usage error (exit 2) that says so, not bash's own
/// "unbound variable" (exit 1).
#[test]
fn a_flag_without_its_value_is_a_usage_error() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg("--prefix")
        .stdin(Stdio::null())
        .output()
        .expect("running install.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--prefix needs a value"), "{stderr}");
    // Nor is the next option taken for the value.
    let output = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh"))
        .args(["--prefix", "--no-start"])
        .stdin(Stdio::null())
        .output()
        .expect("running install.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not the option --no-start"), "{stderr}");
}

/// With `--systemd` the written config names the socket in the unit's RuntimeDirectory, where
/// gwctl looks by default: it used to leave `socket` commented out, and the daemon (not root
/// under the unit) bound one inside its 0700 data directory that no operator could reach.
/// `--systemd` needs root; `--no-start` stops before anything outside the temporary directory
/// is touched (no user, no unit).
#[test]
fn install_sh_systemd_writes_the_runtime_directory_socket_into_the_config() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("install --systemd test: skipped, --systemd needs root");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("gw-install-systemd-")
        .tempdir()
        .expect("dir");
    let root = dir.path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg("--systemd")
        .arg("--no-start")
        .arg("--prefix")
        .arg(root.join("prefix"))
        .arg("--config-dir")
        .arg(root.join("etc"))
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--bin-dir")
        .arg(gateway_tests::binaries::built())
        .stdin(Stdio::null())
        .output()
        .expect("running install.sh");
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "install.sh failed:\n{log}");
    let config = std::fs::read_to_string(root.join("etc/gatewayd.toml")).expect("config");
    assert!(
        config.lines().any(|line| line
            .trim_start()
            .starts_with("socket = \"/run/gatewayd/admin.sock\"")),
        "{config}"
    );

    // A socket elsewhere could not even be bound under the unit (ProtectSystem=strict): refused.
    let refused = std::process::Command::new("bash")
        .arg(&script)
        .args(["--systemd", "--no-start", "--socket"])
        .arg(root.join("admin.sock"))
        .stdin(Stdio::null())
        .output()
        .expect("running install.sh");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("RuntimeDirectory, /run/gatewayd/"),
        "{stderr}"
    );
}
