//! `SecretUrl`: a backend URL (PostgreSQL, Redis) that may carry a password.
//!
//! The cluster's URLs come from the environment or a file precisely because they hold
//! passwords (SPEC §9), so the type that carries them must not hand the password to a log
//! line, an error or a `{:?}` of the config: `Debug` and `Display` show the URL with the
//! password replaced by `***` (`postgres://gw:***@db:5432/gw`), including a password given as
//! a query parameter (`?password=`), and [`SecretUrl::expose`] is the one way to the text,
//! for the code that connects.
//!
//! The URL is checked when the config is read, so a typo stops start-up with a message
//! naming the setting rather than the first connection failing later. The checks follow the
//! grammar of the clients that will read it: tokio-postgres's URL parser (the user and
//! password end at the *first* `@`, a comma-separated host list, `?name=value` parameters
//! from its list, unknown ones refused) and, for Redis, the `url` crate that redis-rs uses
//! (the user information ends at the *last* `@` before the path). Errors say what is wrong
//! and never quote the URL: any part of it might be the password.

use std::fmt;
use std::ops::Range;

/// A validated backend URL; its password never leaves through `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    url: String,
    /// Byte ranges of `url` that are passwords (the user information's, `password=` values).
    hidden: Vec<Range<usize>>,
}

/// Why a URL was refused. Built from fixed sentences and parameter names only: it never
/// holds any part of the URL that could be the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError(String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

/// The `sslmode` values accepted: libpq's, less `allow` (which tries plain text first and so
/// is never what a cluster's database connection wants). `verify-ca` and `verify-full` are
/// libpq's spelling for a verified TLS connection; the store maps them onto rustls.
pub const SSL_MODES: [&str; 5] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

/// The query parameters tokio-postgres knows, plus `sslrootcert` (libpq's CA file for
/// `verify-ca`/`verify-full`, which the store reads itself). Anything else is refused, as
/// tokio-postgres would refuse it at the first connection.
const POSTGRES_PARAMETERS: [&str; 20] = [
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "sslrootcert",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

impl SecretUrl {
    /// A `postgres://` or `postgresql://` URL as tokio-postgres reads it.
    pub fn postgres(text: &str) -> Result<SecretUrl, UrlError> {
        let Some(rest) = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))
        else {
            return Err(not_scheme(text, "postgres:// or postgresql://"));
        };
        let start = text.len() - rest.len();
        let mut hidden = Vec::new();
        // tokio-postgres: the user and password run to the first `@`, wherever it is.
        let (credentials, after) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if let Some(credentials) = credentials {
            let (user, password) = match credentials.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (credentials, None),
            };
            if user.contains(['/', '?']) {
                return Err(UrlError(
                    "an '@' outside its user:password part must be percent-encoded (%40)".into(),
                ));
            }
            decode_utf8(user).ok_or_else(|| {
                UrlError("its user name is not valid percent-encoded UTF-8".into())
            })?;
            // tokio-postgres would read it, but the store takes the TLS settings out of
            // the query, which starts at the first `?`: one in the password would cut the
            // URL there and fail at connect with a misleading error.
            if password.is_some_and(|password| password.contains('?')) {
                return Err(UrlError(
                    "a '?' in the password must be percent-encoded (%3F)".into(),
                ));
            }
            if password.is_some() {
                let from = start + user.len() + 1;
                hidden.push(from..start + credentials.len());
            }
        }
        let host_end = after.find(['/', '?']).unwrap_or(after.len());
        let hosts = &after[..host_end];
        let mut has_host = false;
        if !hosts.is_empty() {
            for chunk in hosts.split(',') {
                check_host_and_port(chunk, true)?;
            }
            has_host = true;
        }
        let mut tail = &after[host_end..];
        if let Some(path) = tail.strip_prefix('/') {
            let end = path.find('?').unwrap_or(path.len());
            decode_utf8(&path[..end]).ok_or_else(|| {
                UrlError("its database name is not valid percent-encoded UTF-8".into())
            })?;
            tail = &path[end..];
        }
        if let Some(query) = tail.strip_prefix('?') {
            let query_start = text.len() - query.len();
            let mut offset = 0;
            for pair in query.split('&') {
                let pair_start = query_start + offset;
                offset += pair.len() + 1;
                let Some((raw_name, raw_value)) = pair.split_once('=') else {
                    return Err(UrlError(
                        "a query parameter has no value (write name=value)".into(),
                    ));
                };
                let name = decode_utf8(raw_name).ok_or_else(|| {
                    UrlError("a query parameter's name is not valid percent-encoded UTF-8".into())
                })?;
                if name == "password" {
                    let from = pair_start + raw_name.len() + 1;
                    hidden.push(from..from + raw_value.len());
                    continue;
                }
                if !POSTGRES_PARAMETERS.contains(&name.as_str()) {
                    return Err(UrlError(format!(
                        "{} is not a connection parameter tokio-postgres knows (known: {})",
                        shown_name(&name),
                        POSTGRES_PARAMETERS.join(", ")
                    )));
                }
                let value = decode_utf8(raw_value).ok_or_else(|| {
                    UrlError(format!(
                        "the value of {name} is not valid percent-encoded UTF-8"
                    ))
                })?;
                match name.as_str() {
                    "sslmode" if !SSL_MODES.contains(&value.as_str()) => {
                        return Err(UrlError(format!(
                            "sslmode must be one of {}",
                            SSL_MODES.join(", ")
                        )));
                    }
                    "port" => {
                        for port in value.split(',').filter(|p| !p.is_empty()) {
                            parse_port(port)?;
                        }
                    }
                    "host" => has_host |= !value.is_empty(),
                    _ => {}
                }
            }
        }
        if !has_host {
            return Err(UrlError(
                "it names no host (postgres://user:password@host:5432/dbname)".into(),
            ));
        }
        Ok(SecretUrl {
            url: text.to_owned(),
            hidden,
        })
    }

    /// A `redis://` or `rediss://` (TLS) URL as redis-rs reads it.
    pub fn redis(text: &str) -> Result<SecretUrl, UrlError> {
        let Some(rest) = ["redis://", "rediss://"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))
        else {
            return Err(not_scheme(text, "redis:// or rediss://"));
        };
        let start = text.len() - rest.len();
        let mut hidden = Vec::new();
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        // The `url` crate: the user information runs to the last `@` of the authority.
        let host_port = match authority.rfind('@') {
            Some(at) => {
                let credentials = &authority[..at];
                if let Some(colon) = credentials.find(':') {
                    hidden.push(start + colon + 1..start + at);
                }
                &authority[at + 1..]
            }
            None => authority,
        };
        check_host_and_port(host_port, false)?;
        let mut tail = &rest[authority_end..];
        if let Some(path) = tail.strip_prefix('/') {
            let end = path.find(['?', '#']).unwrap_or(path.len());
            let database = path[..end].trim_matches('/');
            if !database.is_empty() && database.parse::<u32>().is_err() {
                return Err(UrlError(
                    "its path must be a database number (redis://host:6379/0)".into(),
                ));
            }
            tail = &path[end..];
        }
        if let Some(query) = tail.strip_prefix('?') {
            let query = query.split('#').next().unwrap_or_default();
            let query_start = text.len() - tail.len() + 1;
            let mut offset = 0;
            for pair in query.split('&') {
                let pair_start = query_start + offset;
                offset += pair.len() + 1;
                if let Some((name, value)) = pair.split_once('=')
                    && decode_utf8(name).is_some_and(|name| name == "password")
                {
                    let from = pair_start + name.len() + 1;
                    hidden.push(from..from + value.len());
                }
            }
        }
        Ok(SecretUrl {
            url: text.to_owned(),
            hidden,
        })
    }

    /// The URL itself, password included: only for the code that connects.
    pub fn expose(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut at = 0;
        for range in &self.hidden {
            f.write_str(&self.url[at..range.start])?;
            f.write_str("***")?;
            at = range.end;
        }
        f.write_str(&self.url[at..])
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl(\"{self}\")")
    }
}

/// A host (a name, an IPv4 address, or an IPv6 one in brackets) with an optional port.
/// tokio-postgres allows an empty host list (`host=` in the query instead); Redis needs one.
fn check_host_and_port(chunk: &str, postgres: bool) -> Result<(), UrlError> {
    let (host, port) = if let Some(bracketed) = chunk.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(UrlError(
                "an IPv6 host in brackets ([::1]) is not closed".into(),
            ));
        };
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => {
                return Err(UrlError(
                    "an IPv6 host in brackets is followed by something other than :port".into(),
                ));
            }
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(UrlError("a host in brackets is not an IPv6 address".into()));
        }
        (host, port)
    } else {
        match chunk.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (chunk, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError(if postgres {
            "its host list has an empty host".into()
        } else {
            "it names no host (redis://host:6379)".into()
        }));
    }
    if host.contains('@') {
        return Err(UrlError(
            "an '@' in the password must be percent-encoded (%40)".into(),
        ));
    }
    match port {
        Some(port) => parse_port(port).map(|_| ()),
        None => Ok(()),
    }
}

fn parse_port(text: &str) -> Result<u16, UrlError> {
    text.parse::<u16>()
        .ok()
        .filter(|&port| port != 0)
        .ok_or_else(|| UrlError("a port is not a number from 1 to 65535".into()))
}

fn decode_utf8(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// A parameter name as shown in an error: quoted when it looks like a name, withheld when it
/// might be something pasted in the wrong place (a password).
fn shown_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-');
    if plain {
        format!("{name:?}")
    } else {
        "a query parameter".to_owned()
    }
}

/// The error for a URL of another kind. Its scheme is named when it is one (`mysql://`);
/// nothing else of the text is.
fn not_scheme(text: &str, expected: &str) -> UrlError {
    let scheme = text
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .filter(|scheme| {
            !scheme.is_empty()
                && scheme.len() <= 16
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    match scheme {
        Some(scheme) => UrlError(format!(
            "it is a {scheme}:// URL; it must start with {expected}"
        )),
        None if text.contains('=') && !text.contains("://") => UrlError(format!(
            "it is not a URL (a key=value connection string is not accepted here); it \
             must start with {expected}"
        )),
        None => UrlError(format!("it is not a URL; it must start with {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password no error or display may contain.
    const PASSWORD: &str = "Zq7-hunter2-XPW";

    fn check_shown(url: &str, shown: &str) {
        let parsed = if url.starts_with("redis") {
            SecretUrl::redis(url)
        } else {
            SecretUrl::postgres(url)
        }
        .unwrap_or_else(|err| panic!("{url}: {err}"));
        assert_eq!(parsed.to_string(), shown, "{url}");
        assert_eq!(format!("{parsed:?}"), format!("SecretUrl(\"{shown}\")"));
        assert_eq!(parsed.expose(), url);
    }

    fn check_refused(url: &str, needle: &str) {
        let err = if url.starts_with("redis") {
            SecretUrl::redis(url)
        } else {
            SecretUrl::postgres(url)
        }
        .expect_err(url)
        .to_string();
        assert!(err.contains(needle), "{url}: {err}");
        assert!(!err.contains(PASSWORD), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }

    #[test]
    fn the_password_is_hidden_wherever_it_is_given() {
        let p = PASSWORD;
        for (url, shown) in [
            (
                format!("postgres://gw:{p}@db:5432/gw"),
                "postgres://gw:***@db:5432/gw",
            ),
            (
                format!("postgresql://gw:{p}@db/gw?sslmode=verify-full"),
                "postgresql://gw:***@db/gw?sslmode=verify-full",
            ),
            (
                format!("postgres://gw@db/gw?password={p}&sslmode=require"),
                "postgres://gw@db/gw?password=***&sslmode=require",
            ),
            (
                format!("postgres://gw@db/gw?pass%77ord={p}"),
                "postgres://gw@db/gw?pass%77ord=***",
            ),
            // tokio-postgres: the password runs to the first '@', so a '/' or ':' in it is
            // the password's.
            (
                format!("postgres://gw:a/b:{p}@h1:5432,[::1]:5433/gw"),
                "postgres://gw:***@h1:5432,[::1]:5433/gw",
            ),
            (
                format!("postgres://gw:{p}@/gw?host=%2Frun%2Fpostgresql"),
                "postgres://gw:***@/gw?host=%2Frun%2Fpostgresql",
            ),
            ("postgres://gw@db/gw".to_owned(), "postgres://gw@db/gw"),
            (
                format!("redis://:{p}@cache:6379/0"),
                "redis://:***@cache:6379/0",
            ),
            (
                format!("rediss://gw:{p}@cache/2?protocol=resp3#insecure"),
                "rediss://gw:***@cache/2?protocol=resp3#insecure",
            ),
            // The `url` crate: the user information runs to the last '@'.
            (format!("redis://gw:a@{p}@cache"), "redis://gw:***@cache"),
            (
                format!("redis://cache?password={p}"),
                "redis://cache?password=***",
            ),
            (
                "redis://127.0.0.1:6379".to_owned(),
                "redis://127.0.0.1:6379",
            ),
            ("redis://[::1]:6379".to_owned(), "redis://[::1]:6379"),
        ] {
            check_shown(&url, shown);
        }
    }

    #[test]
    fn every_refusal_says_why_without_the_password() {
        let p = PASSWORD;
        for (url, needle) in [
            (format!("mysql://gw:{p}@db/gw"), "is a mysql:// URL"),
            (format!("gw:{p}@db/gw"), "must start with postgres://"),
            (
                format!("host=db user=gw password={p}"),
                "key=value connection string",
            ),
            (
                format!("POSTGRES://gw:{p}@db/gw"),
                "must start with postgres://",
            ),
            (
                format!("postgres://gw:{p}@db/gw?sslmode={p}"),
                "sslmode must be one of disable, prefer, require, verify-ca, verify-full",
            ),
            (
                format!("postgres://gw:{p}@db/gw?sslmode=allow"),
                "sslmode must be one of",
            ),
            (format!("postgres://gw:{p}@db:99999/gw"), "a port"),
            (format!("postgres://gw:{p}@db:/gw"), "a port"),
            (
                format!("postgres://gw:{p}@db/gw?{p}=1"),
                "a query parameter is not",
            ),
            (
                format!("postgres://gw:{p}@db/gw?sslcompression=1"),
                "\"sslcompression\" is not a connection parameter",
            ),
            (format!("postgres://gw:{p}@db/gw?sslmode"), "has no value"),
            (format!("postgres://gw:{p}@/gw"), "names no host"),
            (format!("postgres://gw:{p}@[::1/gw"), "not closed"),
            (format!("postgres://gw:{p}@a,,b/gw"), "empty host"),
            (format!("postgres://gw:{p}@db/%ff"), "database name"),
            (format!("postgres://g%ffw:{p}@db/gw"), "user name"),
            (
                format!("postgres://db/gw?x=1@{p}"),
                "must be percent-encoded",
            ),
            (
                format!("postgres://gw:{p}@d@b/gw"),
                "must be percent-encoded",
            ),
            (
                format!("postgres://gw:{p}?x@db/gw?sslmode=require"),
                "a '?' in the password must be percent-encoded (%3F)",
            ),
            (format!("http://gw:{p}@cache"), "is a http:// URL"),
            (format!("redis://gw:{p}@"), "names no host"),
            (format!("redis://gw:{p}@cache:0"), "a port"),
            (format!("redis://gw:{p}@cache/db{p}"), "database number"),
            (format!("rediss://gw:{p}@[fe80::1"), "not closed"),
            (format!("redis+unix:///tmp/{p}"), "must start with redis://"),
        ] {
            check_refused(&url, needle);
        }
    }

    #[test]
    fn what_tokio_postgres_accepts_is_accepted() {
        for url in [
            "postgres://db",
            "postgresql://gw@db:5432/gw?sslmode=require&application_name=gatewayd",
            "postgres://gw:pw@db1:5432,db2:5433/gw?target_session_attrs=read-write",
            "postgres://%2Frun%2Fpostgresql/gw",
            "postgres:///gw?host=%2Frun%2Fpostgresql&port=5432",
            "postgres://gw@[2001:db8::1]:5432/gw?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem",
            "postgres://gw@db/gw?connect_timeout=5&keepalives=1&port=5432,",
        ] {
            assert!(SecretUrl::postgres(url).is_ok(), "{url}");
        }
    }
}
