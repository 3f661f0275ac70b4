//! Locating (and if needed building) the `gatewayd` and `gwctl` binaries.
//!
//! `CARGO_BIN_EXE_*` only exists for tests inside the package that owns a binary, and this
//! package owns none; so the harness runs `cargo build` once per test process and finds the
//! binaries next to the test executable's own profile directory.
//!
//! The build asks for the workspace's binaries *and tests*: the same packages and targets as
//! `cargo test --workspace` (the README's command), so cargo resolves the same features
//! (dev-dependencies turn on tokio's `test-util`, for one) and the build is a no-op. Building
//! `-p gatewayd` alone resolved them differently and recompiled tokio, hyper and the daemon
//! in every test run, twice.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn gatewayd() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| built().join("gatewayd"))
}

pub fn gwctl() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| built().join("gwctl"))
}

/// The profile directory holding freshly built binaries (built once per process).
pub fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build)
}

fn build() -> PathBuf {
    let profile_dir = profile_dir();
    let mut command = Command::new(env!("CARGO"));
    command.args(["build", "--quiet", "--workspace", "--bins", "--tests"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running cargo build: {e}"));
    assert!(
        status.success(),
        "cargo build --workspace --bins --tests failed"
    );
    profile_dir
}

/// `target/<profile>`: the test executable lives in `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("test executable is inside target/<profile>/deps")
}
