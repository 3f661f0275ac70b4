//! Default locations both programs must agree on without a config file.
//!
//! One ordered list of socket paths, computed here from the environment and the effective
//! user, so that `gatewayd` and `gwctl` cannot drift apart:
//!
//! 1. `$RUNTIME_DIRECTORY/admin.sock`: systemd sets the variable from the unit's
//!    `RuntimeDirectory=` (`/run/gatewayd` in the unit `install.sh --systemd` writes). The
//!    daemon runs there as the unprivileged `gatewayd` user, so without this it fell through
//!    to the per-user default below, inside its 0700 data directory, where no operator could
//!    reach it.
//! 2. As root, the FHS place `/run/gatewayd/admin.sock`. As another user,
//!    `$XDG_RUNTIME_DIR/gatewayd/admin.sock`, else `admin.sock` in the default data directory.
//! 3. Last, for every other user, the system daemon's `/run/gatewayd/admin.sock`: an operator
//!    in the `gatewayd` group runs gwctl with their own `XDG_RUNTIME_DIR`, where no daemon is.
//!
//! The daemon binds the first; gwctl uses the first that is there (see its `endpoint`
//! module), so a user's own daemon wins over the system one. The data directory likewise
//! honours systemd's `$STATE_DIRECTORY`, then the FHS (root) or XDG (others) place.
//!
//! These are pure functions of what they are given (environment lookup, root or not); the
//! `default_*` wrappers read the process's own.

use std::ffi::OsString;
use std::path::PathBuf;

/// The system daemon's socket: `RuntimeDirectory=gatewayd` under systemd, or root's default.
pub const SYSTEM_SOCKET: &str = "/run/gatewayd/admin.sock";
/// The system daemon's data directory.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/gatewayd";
/// The socket's file name inside a runtime directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// Where the daemon keeps its database and generated TLS material, for this process.
pub fn default_data_dir() -> PathBuf {
    data_dir(&process_env, is_root())
}

/// The management API's Unix socket the daemon binds, for this process.
pub fn default_socket_path() -> PathBuf {
    first(socket_candidates(&process_env, is_root()))
}

/// The data directory for the environment `env` (an empty variable counts as unset).
pub fn data_dir(env: &dyn Fn(&str) -> Option<OsString>, is_root: bool) -> PathBuf {
    if let Some(dir) = systemd_directory(env, "STATE_DIRECTORY") {
        return dir;
    }
    if is_root {
        return PathBuf::from(SYSTEM_DATA_DIR);
    }
    if let Some(dir) = env_path(env, "XDG_DATA_HOME") {
        return dir.join("gatewayd");
    }
    match env_path(env, "HOME") {
        Some(home) => home.join(".local/share/gatewayd"),
        None => PathBuf::from("gatewayd-data"),
    }
}

/// The socket paths in the order of the module doc, without repeats; never empty.
pub fn socket_candidates(env: &dyn Fn(&str) -> Option<OsString>, is_root: bool) -> Vec<PathBuf> {
    let mut candidates = Vec::with_capacity(3);
    if let Some(dir) = systemd_directory(env, "RUNTIME_DIRECTORY") {
        candidates.push(dir.join(SOCKET_NAME));
    }
    if !is_root {
        candidates.push(match env_path(env, "XDG_RUNTIME_DIR") {
            Some(dir) => dir.join("gatewayd").join(SOCKET_NAME),
            None => data_dir(env, false).join(SOCKET_NAME),
        });
    }
    let system = PathBuf::from(SYSTEM_SOCKET);
    if !candidates.contains(&system) {
        candidates.push(system);
    }
    candidates
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn first(candidates: Vec<PathBuf>) -> PathBuf {
    candidates
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_SOCKET))
}

fn env_path(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Option<PathBuf> {
    env(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// One of systemd's `*_DIRECTORY` variables: absolute paths separated by `:` when the unit
/// names several directories; the first is the service's own.
fn systemd_directory(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Option<PathBuf> {
    let value = env_path(env, name)?;
    let first = std::env::split_paths(&value).next()?;
    first.is_absolute().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    /// The environment of `install.sh --systemd`'s unit: User=gatewayd (so HOME is its data
    /// directory), RuntimeDirectory= and StateDirectory=, no XDG variables. The socket is the
    /// runtime directory's, where gwctl (as root, or as an operator) looks too.
    #[test]
    fn under_the_systemd_unit_the_socket_is_in_the_runtime_directory() {
        let env = env_of(&[
            ("HOME", "/var/lib/gatewayd"),
            ("RUNTIME_DIRECTORY", "/run/gatewayd"),
            ("STATE_DIRECTORY", "/var/lib/gatewayd"),
        ]);
        assert_eq!(
            socket_candidates(&env, false),
            paths(&["/run/gatewayd/admin.sock", "/var/lib/gatewayd/admin.sock"])
        );
        assert_eq!(data_dir(&env, false), PathBuf::from("/var/lib/gatewayd"));
    }

    #[test]
    fn several_runtime_directories_mean_the_first() {
        let env = env_of(&[("RUNTIME_DIRECTORY", "/run/gw-a:/run/gw-b")]);
        assert_eq!(
            socket_candidates(&env, true),
            paths(&["/run/gw-a/admin.sock", SYSTEM_SOCKET])
        );
        // A relative value is not systemd's: ignored.
        let env = env_of(&[("RUNTIME_DIRECTORY", "run"), ("STATE_DIRECTORY", "")]);
        assert_eq!(socket_candidates(&env, true), paths(&[SYSTEM_SOCKET]));
        assert_eq!(data_dir(&env, true), PathBuf::from(SYSTEM_DATA_DIR));
    }

    #[test]
    fn root_uses_the_fhs_places() {
        let env = env_of(&[("HOME", "/root"), ("XDG_RUNTIME_DIR", "/run/user/0")]);
        assert_eq!(socket_candidates(&env, true), paths(&[SYSTEM_SOCKET]));
        assert_eq!(data_dir(&env, true), PathBuf::from(SYSTEM_DATA_DIR));
    }

    /// An operator's own daemon first, then the system one their group lets them use.
    #[test]
    fn another_user_tries_their_own_daemon_then_the_system_one() {
        let env = env_of(&[("HOME", "/home/ops"), ("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            socket_candidates(&env, false),
            paths(&["/run/user/1000/gatewayd/admin.sock", SYSTEM_SOCKET])
        );
        assert_eq!(
            data_dir(&env, false),
            PathBuf::from("/home/ops/.local/share/gatewayd")
        );
        let env = env_of(&[("HOME", "/home/ops"), ("XDG_DATA_HOME", "/data")]);
        assert_eq!(
            socket_candidates(&env, false),
            paths(&["/data/gatewayd/admin.sock", SYSTEM_SOCKET])
        );
        let nothing = env_of(&[]);
        assert_eq!(
            socket_candidates(&nothing, false),
            paths(&["gatewayd-data/admin.sock", SYSTEM_SOCKET])
        );
    }
}
