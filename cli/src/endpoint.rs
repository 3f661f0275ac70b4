//! Which daemon gwctl talks to, and how: flags, environment and the profile file weighed into
//! one [`Transport`], before any command runs.
//!
//! Precedence, per setting: a flag, else its environment variable, else the selected profile,
//! else the local socket. In detail:
//!
//! 1. `--socket` wins outright (clap refuses it together with `--url` or `--profile`).
//! 2. `--url` or `--profile` on the command line means HTTPS.
//! 3. Otherwise `GWCTL_SOCKET` means the socket, and `GWCTL_URL` or `GWCTL_PROFILE` HTTPS;
//!    the socket and a remote daemon both named in the environment is a usage error.
//! 4. Otherwise the profile file's `default_profile`, if there is one, means HTTPS.
//! 5. Otherwise the default socket: the first of `gateway_shared::paths::socket_candidates`
//!    (the list the daemon binds the first of) that is there. So gwctl in a systemd unit's
//!    environment finds `$RUNTIME_DIRECTORY/admin.sock`, and an operator in the `gatewayd`
//!    group, whose own runtime directory has no daemon, finds the system one in
//!    `/run/gatewayd`. A socket file nothing listens on (a killed daemon's) is passed over
//!    for a later one that is there. When none is there, the first, which the "cannot
//!    reach" error names.
//!
//! For HTTPS the URL, the token and the CA certificate each come from the flag (`--url`,
//! `--token`/`--token-file`, `--ca-cert`), else the variable (`GWCTL_URL`,
//! `GWCTL_TOKEN`/`GWCTL_TOKEN_FILE`, `GWCTL_CA_CERT`), else the profile named by `--profile`,
//! else `GWCTL_PROFILE`. `default_profile` applies only when nothing names a daemon (step 4),
//! so `--url https://elsewhere` never sends the default profile's token elsewhere.
//!
//! Mistakes are refused here, before any connection, with the usage exit code: HTTPS without
//! a token, a token flag for the socket, an unreadable `--ca-cert`. A token that is not
//! `gwadm-…` with a valid checksum is refused with the code the daemon would answer,
//! `unauthorized`. No message carries a token: only where it came from.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gateway_shared::ErrorCode;
use gateway_shared::key::{ADMIN_TOKEN_PREFIX, AdminToken};

use crate::Refusal;
use crate::args::GlobalArgs;
use crate::client::{HttpsUrl, Transport, load_ca_certs};
use crate::profiles::{self, LoadedConfig, Profile};

pub const SOCKET_ENV: &str = "GWCTL_SOCKET";
pub const URL_ENV: &str = "GWCTL_URL";
pub const TOKEN_ENV: &str = "GWCTL_TOKEN";
pub const TOKEN_FILE_ENV: &str = "GWCTL_TOKEN_FILE";
pub const CA_CERT_ENV: &str = "GWCTL_CA_CERT";
pub const PROFILE_ENV: &str = "GWCTL_PROFILE";

/// The transport, and warnings to print before using it (a token file others can read).
#[derive(Debug)]
pub struct Resolved {
    pub transport: Transport,
    pub warnings: Vec<String>,
}

/// The process environment as [`resolve`] reads it: an empty variable counts as unset.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}

/// Decides the transport from the flags, `env` and the profile file (see the module doc).
pub fn resolve(
    args: &GlobalArgs,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Resolved, Refusal> {
    let env = |name: &str| env(name).filter(|value| !value.is_empty());
    let env_text = |name: &str| -> Result<Option<String>, Refusal> {
        env(name)
            .map(|value| {
                value
                    .into_string()
                    .map_err(|_| Refusal::invalid(format!("{name} is not valid UTF-8.")))
            })
            .transpose()
    };
    let env_url = env_text(URL_ENV)?;
    let env_profile = env_text(PROFILE_ENV)?;
    let env_socket = env(SOCKET_ENV).map(PathBuf::from);

    let remote = if let Some(socket) = &args.socket {
        return socket_transport(socket.clone(), args);
    } else if args.url.is_some() || args.profile.is_some() {
        Remote {
            url: args
                .url
                .clone()
                .map(|url| (url, "--url".to_owned()))
                .or_else(|| env_url.map(|url| (url, URL_ENV.to_owned()))),
            profile: args.profile.clone().or(env_profile),
            config: None,
        }
    } else if let Some(socket) = env_socket {
        if env_url.is_some() || env_profile.is_some() {
            let other = if env_url.is_some() {
                URL_ENV
            } else {
                PROFILE_ENV
            };
            return Err(Refusal::invalid(format!(
                "{SOCKET_ENV} and {other} are both set, naming two daemons. Unset one, or choose \
                 with --socket or --url."
            )));
        }
        return socket_transport(socket, args);
    } else if env_url.is_some() || env_profile.is_some() {
        Remote {
            url: env_url.map(|url| (url, URL_ENV.to_owned())),
            profile: env_profile,
            config: None,
        }
    } else {
        let config = load_config(&env)?;
        match config.as_ref().and_then(|c| c.file.default_profile.clone()) {
            Some(name) => Remote {
                url: None,
                profile: Some(name),
                config,
            },
            None => {
                return socket_transport(default_socket(&env), args);
            }
        }
    };
    remote.into_https(args, &env, env_text)
}

/// The default socket for the environment `env` (step 5 of the module doc).
fn default_socket(env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    let is_root = gateway_shared::paths::is_root();
    present_or_first(gateway_shared::paths::socket_candidates(env, is_root))
}

/// The first path that is there, else the first. "There" includes a path this user may not
/// even look at (a 0750 runtime directory of a group they are not in): connecting to it then
/// says to join the socket's group, where skipping it would say "no socket" about another.
/// A socket file nothing listens on (left by a daemon that was killed) is passed over for a
/// later one that is there: an operator's own dead daemon must not hide the system one.
fn present_or_first(candidates: Vec<PathBuf>) -> PathBuf {
    let absent = |path: &Path| {
        matches!(
            std::fs::symlink_metadata(path),
            Err(err) if matches!(err.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory)
        )
    };
    let present: Vec<&PathBuf> = candidates.iter().filter(|path| !absent(path)).collect();
    present
        .iter()
        .find(|path| !stale_socket(path))
        .or(present.first())
        .copied()
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from(gateway_shared::paths::SYSTEM_SOCKET))
}

/// Whether `path` is a socket file nobody listens on: a non-blocking connect is refused.
/// Anything else (listening, a busy daemon's full backlog, no permission, not a socket) is
/// not stale. The probe connection is closed at once; the daemon sees an empty one.
fn stale_socket(path: &Path) -> bool {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket());
    if !is_socket {
        return false;
    }
    let Ok(address) = SocketAddrUnix::new(path) else {
        return false;
    };
    let Ok(probe) = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    ) else {
        return false;
    };
    rustix::net::connect(&probe, &address) == Err(rustix::io::Errno::CONNREFUSED)
}

/// Masks every admin token in `text` (`gwadm-` and what follows): for messages that quote
/// input the operator gave, such as a line of the profile file.
pub fn redact_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ADMIN_TOKEN_PREFIX) {
        let after = at + ADMIN_TOKEN_PREFIX.len();
        out.push_str(&rest[..after]);
        let secret_len = rest[after..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len() - after);
        if secret_len > 0 {
            out.push_str(crate::client::REDACTED);
        }
        rest = &rest[after + secret_len..];
    }
    out.push_str(rest);
    out
}

/// A remote daemon named somewhere; the rest is filled in from flags, variables and profile.
struct Remote {
    /// The URL and where it came from, unless it is to come from the profile.
    url: Option<(String, String)>,
    profile: Option<String>,
    /// The profile file, when it was already read to find `default_profile`.
    config: Option<LoadedConfig>,
}

impl Remote {
    fn into_https(
        self,
        args: &GlobalArgs,
        env: &dyn Fn(&str) -> Option<OsString>,
        env_text: impl Fn(&str) -> Result<Option<String>, Refusal>,
    ) -> Result<Resolved, Refusal> {
        let mut warnings = Vec::new();
        let home = env("HOME").map(PathBuf::from);
        let selected = match &self.profile {
            Some(name) => {
                let config = match self.config {
                    Some(config) => Some(config),
                    None => load_config(env)?,
                };
                Some(select_profile(config, name, env)?)
            }
            None => None,
        };
        let in_profile = |field: &str| match &selected {
            Some(selected) => format!("{field} of {}", selected.label),
            None => field.to_owned(),
        };
        let profile_path = |path: &Path| match &selected {
            Some(selected) => profiles::anchor(&selected.config_path, path, home.as_deref()),
            None => path.to_path_buf(),
        };

        let (url_text, url_source) = match (self.url, &selected) {
            (Some(url), _) => url,
            (None, Some(selected)) => match &selected.profile.url {
                Some(url) => (url.clone(), in_profile("url")),
                None => {
                    return Err(Refusal::invalid(format!(
                        "{} has no url; add url = \"https://HOST:PORT\" to it, or pass --url.",
                        selected.label
                    )));
                }
            },
            (None, None) => {
                return Err(Refusal::invalid(
                    "No daemon URL: pass --url https://HOST:PORT.",
                ));
            }
        };
        let url = HttpsUrl::parse(&url_text)
            .map_err(|why| Refusal::invalid(format!("Invalid {url_source}: {why}.")))?;

        let token = if let Some(token) = &args.token {
            parse_token(token.expose(), "--token")?
        } else if let Some(path) = &args.token_file {
            read_token_file(path, "--token-file", &mut warnings)?
        } else if let Some(token) = env_text(TOKEN_ENV)? {
            if env(TOKEN_FILE_ENV).is_some() {
                return Err(Refusal::invalid(format!(
                    "{TOKEN_ENV} and {TOKEN_FILE_ENV} are both set; unset one."
                )));
            }
            parse_token(&token, TOKEN_ENV)?
        } else if let Some(path) = env(TOKEN_FILE_ENV) {
            read_token_file(Path::new(&path), TOKEN_FILE_ENV, &mut warnings)?
        } else {
            let Some(selected) = &selected else {
                return Err(no_token(&url));
            };
            match (&selected.profile.token, &selected.profile.token_file) {
                (Some(_), Some(_)) => {
                    return Err(Refusal::invalid(format!(
                        "{} has both token and token_file; keep one.",
                        selected.label
                    )));
                }
                (Some(token), None) => {
                    if let Some(warning) = readable_by_others(&selected.config_path, "gwctl config")
                    {
                        warnings.push(warning);
                    }
                    parse_token(token.expose(), &in_profile("token"))?
                }
                (None, Some(path)) => read_token_file(
                    &profile_path(path),
                    &in_profile("token_file"),
                    &mut warnings,
                )?,
                (None, None) => return Err(no_token(&url)),
            }
        };

        let ca_cert = match (&args.ca_cert, env(CA_CERT_ENV)) {
            (Some(path), _) => Some((path.clone(), "--ca-cert".to_owned())),
            (None, Some(path)) => Some((PathBuf::from(path), CA_CERT_ENV.to_owned())),
            (None, None) => selected
                .as_ref()
                .and_then(|selected| selected.profile.ca_cert.as_deref())
                .map(|path| (profile_path(path), in_profile("ca_cert"))),
        };
        if let Some((path, source)) = &ca_cert {
            load_ca_certs(path).map_err(|why| {
                Refusal::invalid(redact_tokens(&format!(
                    "Invalid {source} {}: {why}.",
                    path.display()
                )))
            })?;
        }
        Ok(Resolved {
            transport: Transport::Https {
                url,
                token,
                ca_cert: ca_cert.map(|(path, _)| path),
            },
            warnings,
        })
    }
}

fn socket_transport(socket: PathBuf, args: &GlobalArgs) -> Result<Resolved, Refusal> {
    let https_only = [
        ("--token", args.token.is_some()),
        ("--token-file", args.token_file.is_some()),
        ("--ca-cert", args.ca_cert.is_some()),
    ];
    if let Some((flag, _)) = https_only.iter().find(|(_, given)| *given) {
        return Err(Refusal::invalid(format!(
            "{flag} is for a daemon reached over HTTPS: add --url https://HOST:PORT or \
             --profile NAME. The local socket ({}) needs no token.",
            socket.display()
        )));
    }
    Ok(Resolved {
        transport: Transport::Unix(socket),
        warnings: Vec::new(),
    })
}

fn load_config(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Option<LoadedConfig>, Refusal> {
    match profiles::config_path(env) {
        Some(path) => profiles::load(&path).map_err(|why| Refusal::invalid(format!("{why}."))),
        None => Ok(None),
    }
}

/// The profile chosen by name, with what messages and relative paths need.
struct SelectedProfile {
    profile: Profile,
    config_path: PathBuf,
    /// `profile prod in /home/me/.config/gwctl/config.toml`.
    label: String,
}

fn select_profile(
    config: Option<LoadedConfig>,
    name: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<SelectedProfile, Refusal> {
    let Some(mut loaded) = config else {
        let path = profiles::config_path(env).map_or_else(
            || format!("(neither {} nor HOME is set)", profiles::CONFIG_ENV),
            |p| p.display().to_string(),
        );
        return Err(Refusal::invalid(format!(
            "No profile {name:?}: there is no gwctl config file at {path}."
        )));
    };
    match loaded.file.profiles.remove(name) {
        Some(profile) => Ok(SelectedProfile {
            profile,
            label: format!("profile {name} in {}", loaded.path.display()),
            config_path: loaded.path,
        }),
        None => {
            let known: Vec<&str> = loaded.file.profiles.keys().map(String::as_str).collect();
            Err(Refusal::invalid(format!(
                "No profile {name:?} in {} (it has: {}).",
                loaded.path.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )))
        }
    }
}

fn no_token(url: &HttpsUrl) -> Refusal {
    Refusal::invalid(format!(
        "{url} needs an admin token: pass --token-file FILE (or --token, {TOKEN_ENV}, or \
         token_file in a gwctl profile). Create one on the daemon's host with `gwctl \
         admin-tokens create --name NAME`."
    ))
}

/// Checks the token's shape and checksum locally, so a typo or a proxy key pasted by mistake
/// is refused without a round trip. The message says where the token came from, never what
/// it is.
fn parse_token(text: &str, source: &str) -> Result<AdminToken, Refusal> {
    AdminToken::parse(text.trim()).map_err(|why| Refusal {
        code: ErrorCode::Unauthorized,
        message: format!(
            "The admin token from {source} is not a valid admin token: it {why}. Admin tokens \
             look like {ADMIN_TOKEN_PREFIX}… and are printed by `gwctl admin-tokens create`."
        ),
    })
}

fn read_token_file(
    path: &Path,
    source: &str,
    warnings: &mut Vec<String>,
) -> Result<AdminToken, Refusal> {
    let described = format!("{source} {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| {
        Refusal::invalid(format!(
            "Cannot read the admin token from {described}: {e}."
        ))
    })?;
    if text.trim().is_empty() {
        return Err(Refusal::invalid(format!("{described} is empty.")));
    }
    if let Some(warning) = readable_by_others(path, "token file") {
        warnings.push(warning);
    }
    parse_token(&text, &described)
}

/// `Some(warning)` when group or others may read the file holding a secret.
fn readable_by_others(path: &Path, what: &str) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then(|| {
        format!(
            "warning: {what} {} is readable by other users (mode {mode:03o}); it holds an admin \
             token: chmod 600 {}",
            path.display(),
            path.display()
        )
    })
}

#[cfg(test)]
mod tests;
