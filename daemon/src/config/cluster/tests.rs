//! `[cluster]`'s tests: each refusal names its line and never shows the password.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::config::Config;

/// A password no error or printed config may contain.
const PASSWORD: &str = "Vw9-tr0ub4dor-QZ";

fn postgres_url() -> String {
    format!("postgres://gw:{PASSWORD}@db.internal:5432/gateway?sslmode=verify-full")
}

fn redis_url() -> String {
    format!("rediss://gw:{PASSWORD}@cache.internal:6380/0")
}

/// The config `text` read with `vars` as the whole environment.
fn load(text: &str, vars: &[(&str, &str)]) -> anyhow::Result<Config> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let env = move |name: &str| vars.get(name).cloned().ok_or(VarError::NotPresent);
    Config::from_text_in(text, &env)
}

/// `text` is refused with an error that starts with `line N`, contains `needle` and not
/// the password.
fn check_refused(text: &str, vars: &[(&str, &str)], line: usize, needle: &str) {
    let err = format!("{:#}", load(text, vars).expect_err(text));
    assert!(err.starts_with(&format!("line {line}:")), "{text}\n{err}");
    assert!(err.contains(needle), "{text}\n{err}");
    assert!(!err.contains(PASSWORD), "{text}\n{err}");
    assert!(!err.contains("tr0ub4dor"), "{text}\n{err}");
}

const BOTH_ENV: &str = "[cluster]\npostgres_url_env = \"PG\"\nredis_url_env = \"RD\"\n";

#[test]
fn no_section_is_one_server() {
    assert!(load("", &[]).expect("valid").cluster.is_none());
    let config = load("[proxy]\nlisten = \"127.0.0.1:1\"\n", &[]).expect("valid");
    assert!(config.cluster.is_none());
}

#[test]
fn urls_from_the_environment_are_read_trimmed_and_never_printed() {
    let pg = format!("  {}\n", postgres_url());
    let config = load(BOTH_ENV, &[("PG", &pg), ("RD", &redis_url())]).expect("valid");
    let cluster = config.cluster.as_ref().expect("cluster mode");
    assert_eq!(cluster.postgres_url.expose(), postgres_url());
    assert_eq!(cluster.redis_url.expose(), redis_url());
    assert_eq!(cluster.hold_lease, DEFAULT_HOLD_LEASE);
    assert_eq!(
        cluster.postgres_url.to_string(),
        "postgres://gw:***@db.internal:5432/gateway?sslmode=verify-full"
    );
    let printed = format!("{config:?} {cluster:?}");
    assert!(!printed.contains(PASSWORD), "{printed}");
    assert!(
        printed.contains("rediss://gw:***@cache.internal:6380/0"),
        "{printed}"
    );
}

#[test]
fn hold_lease_is_bounded() {
    let vars = [("PG", "postgres://db/gw"), ("RD", "redis://cache")];
    for (lease, expected) in [
        ("10s", 10),
        ("15m", 900),
        ("24h", 86_400),
        ("1h 30m", 5_400),
    ] {
        let config = load(&format!("{BOTH_ENV}hold_lease = \"{lease}\"\n"), &vars).expect(lease);
        let cluster = config.cluster.expect("cluster mode");
        assert_eq!(cluster.hold_lease, Duration::from_secs(expected), "{lease}");
    }
    for (lease, needle) in [
        ("9s", "is outside 10s to 24h"),
        ("25h", "is outside 10s to 24h"),
        ("0s", "is outside 10s to 24h"),
        ("soon", "is not a duration"),
    ] {
        check_refused(
            &format!("{BOTH_ENV}hold_lease = \"{lease}\"\n"),
            &vars,
            4,
            &format!("cluster.hold_lease: \"{lease}\" {needle}"),
        );
    }
}

#[test]
fn each_setting_error_names_its_line() {
    let pg = postgres_url();
    let rd = redis_url();
    let good = [("PG", pg.as_str()), ("RD", rd.as_str())];
    check_refused(
        "[cluster]\npostgres_url_env = \"PG\"\npostgres_url_file = \"/x\"\nredis_url_env = \"RD\"\n",
        &good,
        2,
        "set one of them, not both",
    );
    check_refused(
        "\n[cluster]\nhold_lease = \"15m\"\n",
        &good,
        2,
        "[cluster] needs postgres_url_env or postgres_url_file",
    );
    check_refused(
        "[cluster]\npostgres_url_env = \"PG\"\n",
        &good,
        1,
        "[cluster] needs redis_url_env or redis_url_file",
    );
    check_refused(
        "[cluster]\nredis_url_env = \"RD\"\n",
        &good,
        1,
        "needs postgres_url_env or postgres_url_file",
    );
    check_refused(
        "[cluster]\npostgres_url_env = \"NOPE\"\nredis_url_env = \"RD\"\n",
        &good,
        2,
        "cluster.postgres_url_env: the environment variable NOPE is not set",
    );
    check_refused(
        "[cluster]\npostgres_url_env = \"PG\"\nredis_url_env = \"EMPTY\"\n",
        &[("PG", &pg), ("EMPTY", " \n")],
        3,
        "cluster.redis_url_env: the environment variable EMPTY is empty",
    );
    check_refused(
        "[cluster]\npostgres_url_env = \"\"\nredis_url_env = \"RD\"\n",
        &good,
        2,
        "must name an environment variable",
    );
    // toml itself names the line of an unknown field.
    let err = format!(
        "{:#}",
        load("[cluster]\npostgres_url = \"postgres://db\"\n", &good).expect_err("unknown")
    );
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("unknown field `postgres_url`"), "{err}");
}

#[test]
fn a_url_that_cannot_be_used_is_refused_without_showing_it() {
    let p = PASSWORD;
    let rd = redis_url();
    for (url, needle) in [
        (
            format!("mysql://gw:{p}@db/gw"),
            "the environment variable PG holds no usable PostgreSQL URL: it is a mysql:// URL",
        ),
        (
            format!("postgres://gw:{p}@db/gw?sslmode=verify"),
            "sslmode must be one of disable, prefer, require, verify-ca, verify-full",
        ),
        (format!("postgres://gw:{p}@db:5432x/gw"), "a port is not"),
        (
            format!("postgres://gw:{p}@d@b/gw"),
            "must be percent-encoded",
        ),
        (p.to_owned(), "it is not a URL"),
    ] {
        check_refused(
            "[cluster]\npostgres_url_env = \"PG\"\nredis_url_env = \"RD\"\n",
            &[("PG", &url), ("RD", &rd)],
            2,
            needle,
        );
    }
    let pg = postgres_url();
    for (url, needle) in [
        (
            format!("http://gw:{p}@cache"),
            "holds no usable Redis URL: it is a http:// URL",
        ),
        (format!("redis://gw:{p}@cache:6379/x"), "database number"),
    ] {
        check_refused(
            "[cluster]\npostgres_url_env = \"PG\"\n\nredis_url_env = \"RD\"\n",
            &[("PG", &pg), ("RD", &url)],
            4,
            needle,
        );
    }
}

#[test]
fn url_files_must_be_private_regular_and_not_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    };
    let pg = write("pg", &format!("{}\n", postgres_url()), 0o600);
    let rd = write("rd", &redis_url(), 0o640);
    let text = |pg: &Path| {
        format!(
            "[cluster]\npostgres_url_file = {:?}\nredis_url_file = {:?}\n",
            pg.display().to_string(),
            rd.display().to_string()
        )
    };
    let config = load(&text(&pg), &[]).expect("private files are read");
    let cluster = config.cluster.expect("cluster mode");
    assert_eq!(cluster.postgres_url.expose(), postgres_url(), "trimmed");

    let open = write("open", &postgres_url(), 0o644);
    check_refused(&text(&open), &[], 2, "is open to every user (mode 644)");
    check_refused(&text(&open), &[], 2, "chmod 600");
    let empty = write("empty", "\n\n", 0o600);
    check_refused(&text(&empty), &[], 2, "is empty");
    check_refused(&text(dir.path()), &[], 2, "is not a regular file");
    check_refused(
        &text(&dir.path().join("missing")),
        &[],
        2,
        "cluster.postgres_url_file: reading",
    );
    let mysql = write("mysql", &format!("mysql://gw:{PASSWORD}@db"), 0o600);
    check_refused(
        &text(&mysql),
        &[],
        2,
        "holds no usable PostgreSQL URL: it is a mysql:// URL",
    );
    let big = write("big", &"x".repeat(70_000), 0o600);
    check_refused(&text(&big), &[], 2, "not a URL");
}

/// An operator who writes the URL itself where a setting wants a variable's name or a
/// file's path, or under a name the section does not have, must not see (nor send to the
/// journal) the password in the refusal: the error names the line and the mistake only.
#[test]
fn a_url_written_in_the_wrong_place_is_refused_without_quoting_it() {
    let pg = postgres_url();
    let rd = redis_url();
    let good = [("PG", pg.as_str()), ("RD", rd.as_str())];
    for (text, line, needle) in [
        (
            format!("[cluster]\npostgres_url_env = {pg:?}\nredis_url_env = \"RD\"\n"),
            2,
            "cluster.postgres_url_env must name an environment variable",
        ),
        (
            format!("[cluster]\npostgres_url_env = \"PG\"\nredis_url_env = {rd:?}\n"),
            3,
            "cluster.redis_url_env must name an environment variable",
        ),
        (
            format!("[cluster]\npostgres_url_file = {pg:?}\nredis_url_env = \"RD\"\n"),
            2,
            "cluster.postgres_url_file must be the path of a file",
        ),
        (
            format!("[cluster]\npostgres_url_env = \"PG\"\nredis_url_file = {rd:?}\n"),
            3,
            "cluster.redis_url_file must be the path of a file",
        ),
    ] {
        check_refused(&text, &good, line, needle);
    }
    // A name the section does not have: toml's own error, which quotes the line.
    for (text, line, needle) in [
        (
            format!("[cluster]\npostgres_url = {pg:?}\nredis_url_env = \"RD\"\n"),
            2,
            "unknown field `postgres_url`",
        ),
        (
            format!("[cluster]\npostgres_url_env = \"PG\"\n\nredis_url = {rd:?}\n"),
            4,
            "unknown field `redis_url`",
        ),
        // A syntax error on the line that holds the password.
        (
            format!("[cluster]\npostgres_url_env = {pg:?} x\n"),
            2,
            "line 2",
        ),
    ] {
        let err = format!("{:#}", load(&text, &good).expect_err(&text));
        assert!(err.contains(&format!("line {line}")), "{text}\n{err}");
        assert!(err.contains(needle), "{text}\n{err}");
        assert!(!err.contains(PASSWORD), "{text}\n{err}");
        assert!(!err.contains("tr0ub4dor"), "{text}\n{err}");
    }
}
