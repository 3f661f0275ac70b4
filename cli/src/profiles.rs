//! The profile file: named remote daemons, so an operator types `--profile prod` (or nothing,
//! with `default_profile`) instead of a URL, a token file and a CA certificate every time.
//!
//! ```toml
//! default_profile = "prod"      # optional
//! [profiles.prod]
//! url = "https://gw.example:8443"
//! token_file = "/home/me/.config/gwctl/prod.token"   # or token = "gwadm-…"
//! ca_cert = "/home/me/.config/gwctl/prod-ca.pem"
//! ```
//!
//! Found at `$GWCTL_CONFIG`, else `$XDG_CONFIG_HOME/gwctl/config.toml`, else
//! `~/.config/gwctl/config.toml`. Like gatewayd's own config, an unknown field is an error
//! naming the file and the field: a misspelt `token_flie` silently ignored would send
//! requests without the token the operator thinks they configured. Relative paths and `~/`
//! in a profile are taken from the file's directory and `$HOME`, so a profile means the
//! same thing whatever directory gwctl runs in.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::args::SecretArg;

/// Overrides where the profile file is looked for.
pub const CONFIG_ENV: &str = "GWCTL_CONFIG";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Used when no flag or variable names a daemon.
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub url: Option<String>,
    /// The token itself; `token_file` is better (the config file is often shared).
    pub token: Option<SecretArg>,
    pub token_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
}

/// A parsed profile file and where it was.
#[derive(Debug)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub file: ConfigFile,
}

/// A profile's path setting as an absolute path: `~/` from `home`, a relative path from the
/// directory of the profile file at `config_path`.
pub fn anchor(config_path: &Path, path: &Path, home: Option<&Path>) -> PathBuf {
    if let (Ok(rest), Some(home)) = (path.strip_prefix("~"), home) {
        return home.join(rest);
    }
    match config_path.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Where the profile file is, given the environment; `None` without any of the variables.
pub fn config_path(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(path) = env(CONFIG_ENV) {
        return Some(PathBuf::from(path));
    }
    if let Some(dir) = env("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("gwctl/config.toml"));
    }
    env("HOME").map(|home| PathBuf::from(home).join(".config/gwctl/config.toml"))
}

/// Reads and parses the file; `Ok(None)` when it does not exist. The error names the file.
pub fn load(path: &Path) -> Result<Option<LoadedConfig>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("reading gwctl config {}: {err}", path.display())),
    };
    let file = parse(&text).map_err(|why| format!("gwctl config {}: {why}", path.display()))?;
    Ok(Some(LoadedConfig {
        path: path.to_path_buf(),
        file,
    }))
}

/// The file's text as a [`ConfigFile`]. toml's message quotes the offending line, which may
/// hold an inline token, so tokens are masked in it.
pub fn parse(text: &str) -> Result<ConfigFile, String> {
    let file: ConfigFile =
        toml::from_str(text).map_err(|e| crate::endpoint::redact_tokens(&e.to_string()))?;
    if let Some(name) = &file.default_profile
        && !file.profiles.contains_key(name)
    {
        return Err(format!(
            "default_profile = {name:?} but there is no [profiles.{name}]"
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_error(text: &str, fragments: &[&str]) {
        let err = parse(text).expect_err(text);
        for fragment in fragments {
            assert!(err.contains(fragment), "{fragment:?} missing from: {err}");
        }
    }

    #[test]
    fn the_documented_file_parses() {
        let file = parse(
            r#"
            default_profile = "prod"
            [profiles.prod]
            url = "https://gw.example:8443"
            token_file = "/home/me/.config/gwctl/prod.token"
            ca_cert = "/home/me/.config/gwctl/prod-ca.pem"
            [profiles.staging]
            url = "https://staging:8443"
            token = "gwadm-inline"
            "#,
        )
        .expect("valid");
        assert_eq!(file.default_profile.as_deref(), Some("prod"));
        let prod = &file.profiles["prod"];
        assert_eq!(prod.url.as_deref(), Some("https://gw.example:8443"));
        assert_eq!(
            prod.token_file.as_deref(),
            Some(Path::new("/home/me/.config/gwctl/prod.token"))
        );
        assert_eq!(
            file.profiles["staging"]
                .token
                .as_ref()
                .map(SecretArg::expose),
            Some("gwadm-inline")
        );
        assert!(!format!("{file:?}").contains("gwadm-inline"));
        assert!(parse("").expect("empty is fine").profiles.is_empty());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        check_error(
            "[profiles.prod]\nurl = \"https://gw\"\ntoken_flie = \"/t\"\n",
            &["token_flie", "line 3"],
        );
        check_error("defualt_profile = \"prod\"\n", &["defualt_profile"]);
        check_error("[profiles.prod]\nurl = 8443\n", &["url"]);
        check_error(
            "default_profile = \"prod\"\n[profiles.staging]\n",
            &["default_profile", "prod"],
        );
    }

    #[test]
    fn a_token_in_a_broken_line_is_masked() {
        let token = gateway_shared::key::AdminToken::generate().expect("rng");
        let text = format!("[profiles.prod]\ntoken = {}\n", token.expose());
        let err = parse(&text).expect_err("unquoted");
        assert!(!err.contains(token.expose()), "{err}");
        assert!(err.contains("gwadm-***"), "{err}");
    }

    #[test]
    fn the_file_is_found_by_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = env(&[
            ("GWCTL_CONFIG", "/etc/g.toml"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(config_path(&all), Some(PathBuf::from("/etc/g.toml")));
        let xdg = env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(
            config_path(&xdg),
            Some(PathBuf::from("/x/gwctl/config.toml"))
        );
        let home = env(&[("HOME", "/h")]);
        assert_eq!(
            config_path(&home),
            Some(PathBuf::from("/h/.config/gwctl/config.toml"))
        );
        assert_eq!(config_path(&env(&[])), None);
    }

    #[test]
    fn profile_paths_are_anchored() {
        let config = Path::new("/home/me/.config/gwctl/config.toml");
        let home = Some(Path::new("/home/me"));
        let check = |path: &str, expected: &str| {
            assert_eq!(
                anchor(config, Path::new(path), home),
                PathBuf::from(expected),
                "{path}"
            );
        };
        check("prod.token", "/home/me/.config/gwctl/prod.token");
        check("~/certs/ca.pem", "/home/me/certs/ca.pem");
        check("/etc/ca.pem", "/etc/ca.pem");
    }
}
