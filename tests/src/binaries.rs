//! Locating (and if needed building) the `gatewayd` and `gwctl` binaries.
//!
//! `CARGO_BIN_EXE_*` only exists for tests inside the package that owns a binary, and this
//! package owns none; so the harness runs `cargo build` for each binary once per test
//! process (a no-op when `cargo test --workspace` already built it) and finds it next to the
//! test executable's own profile directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn gatewayd() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build("gatewayd", "gatewayd"))
}

pub fn gwctl() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build("gwctl", "gwctl"))
}

fn build(package: &str, binary: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let mut command = Command::new(env!("CARGO"));
    command.args(["build", "--quiet", "-p", package, "--bin", binary]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running cargo build -p {package}: {e}"));
    assert!(status.success(), "cargo build -p {package} failed");
    profile_dir.join(binary)
}

/// `target/<profile>`: the test executable lives in `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("test executable is inside target/<profile>/deps")
}
