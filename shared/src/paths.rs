//! Default locations both programs must agree on without a config file.
//!
//! As root the daemon follows the FHS (`/var/lib/gatewayd`, `/run/gatewayd/admin.sock`). As
//! an ordinary user those are not writable, so it uses the XDG directories instead; gwctl
//! computes the same socket path, so `gatewayd` and `gwctl keys list` work together with no
//! configuration at all.

use std::path::PathBuf;

/// Where the daemon keeps its database and generated TLS material.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/gatewayd");
    }
    if let Some(dir) = env_path("XDG_DATA_HOME") {
        return dir.join("gatewayd");
    }
    match env_path("HOME") {
        Some(home) => home.join(".local/share/gatewayd"),
        None => PathBuf::from("gatewayd-data"),
    }
}

/// The management API's Unix socket.
pub fn default_socket_path() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/gatewayd/admin.sock");
    }
    match env_path("XDG_RUNTIME_DIR") {
        Some(dir) => dir.join("gatewayd/admin.sock"),
        None => default_data_dir().join("admin.sock"),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}
