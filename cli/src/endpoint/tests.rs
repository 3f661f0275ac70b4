//! Transport selection and precedence, the profile file as the resolver sees it, and token
//! files: every case through one `World` with its own environment, config file and home, so
//! no test reads the real environment or `~/.config`.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use clap::Parser;
use gateway_shared::key::AdminToken;

use super::*;
use crate::Cli;

struct World {
    dir: tempfile::TempDir,
    env: HashMap<&'static str, OsString>,
    /// Every secret this world handed out, so a test can assert none leaks.
    secrets: Vec<String>,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = HashMap::new();
        env.insert("HOME", dir.path().join("home").into_os_string());
        env.insert(
            profiles::CONFIG_ENV,
            dir.path().join("config.toml").into_os_string(),
        );
        Self {
            dir,
            env,
            secrets: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set(&mut self, name: &'static str, value: impl Into<OsString>) -> &mut Self {
        self.env.insert(name, value.into());
        self
    }

    fn token(&mut self) -> String {
        let token = AdminToken::generate().expect("rng").expose().to_owned();
        self.secrets.push(token.clone());
        token
    }

    /// A file holding `text` with `mode`, in the world's directory.
    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn token_file(&mut self, name: &str, mode: u32) -> (PathBuf, String) {
        let token = self.token();
        (self.file(name, &format!("\n  {token}\n"), mode), token)
    }

    fn ca_cert(&self, name: &str) -> PathBuf {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        self.file(name, &generated.cert.pem(), 0o644)
    }

    fn config(&self, text: &str) {
        self.file("config.toml", text, 0o600);
    }

    fn resolve(&self, argv: &[&str]) -> Result<Resolved, Refusal> {
        let argv = std::iter::once("gwctl")
            .chain(argv.iter().copied())
            .chain(["keys", "list"]);
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        let env = |name: &str| self.env.get(name).cloned();
        let resolved = resolve(&cli.global, &env);
        if let Err(refusal) = &resolved {
            self.assert_no_secret(&refusal.message);
        }
        resolved
    }

    #[track_caller]
    fn ok(&self, argv: &[&str]) -> Resolved {
        self.resolve(argv)
            .unwrap_or_else(|e| panic!("{argv:?} refused: {}", e.message))
    }

    #[track_caller]
    fn refused(&self, argv: &[&str], code: ErrorCode, fragments: &[&str]) {
        let Err(refusal) = self.resolve(argv) else {
            panic!("{argv:?} was accepted");
        };
        assert_eq!(refusal.code, code, "{argv:?}: {}", refusal.message);
        for fragment in fragments {
            assert!(
                refusal.message.contains(fragment),
                "{fragment:?} missing from: {}",
                refusal.message
            );
        }
    }

    #[track_caller]
    fn assert_no_secret(&self, text: &str) {
        for secret in &self.secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a token leaked into: {text}"
            );
        }
    }
}

/// `unix /path` or `https://host:port token=<which> ca=<path>`, for comparing outcomes.
fn describe(transport: &Transport, tokens: &[(&str, &str)]) -> String {
    match transport {
        Transport::Unix(path) => format!("unix {}", path.display()),
        Transport::Https {
            url,
            token,
            ca_cert,
        } => {
            let which = tokens
                .iter()
                .find(|(_, t)| *t == token.expose())
                .map_or("?", |(name, _)| name);
            let ca = ca_cert
                .as_ref()
                .map_or_else(|| "system".to_owned(), |p| p.display().to_string());
            format!("{url} token={which} ca={ca}")
        }
    }
}

/// In a systemd unit's environment (`RUNTIME_DIRECTORY`, as for `install.sh --systemd`'s
/// unit) the daemon's socket is found there, with no flag.
#[test]
fn nothing_given_means_the_default_socket() {
    let mut world = World::new();
    let runtime_dir = world.path("run");
    std::fs::create_dir(&runtime_dir).expect("mkdir");
    std::fs::write(runtime_dir.join("admin.sock"), "").expect("socket stand-in");
    world.set("RUNTIME_DIRECTORY", runtime_dir.clone());
    let resolved = world.ok(&[]);
    assert_eq!(
        resolved.transport,
        Transport::Unix(runtime_dir.join("admin.sock"))
    );
    assert!(resolved.warnings.is_empty());
}

/// gwctl takes the first default socket that is there: an operator's own daemon, else the
/// system one; with none there, the first (the one its error names).
#[test]
fn the_default_socket_is_the_first_one_there() {
    let world = World::new();
    let own = world.path("own/admin.sock");
    let system = world.path("system/admin.sock");
    let candidates = || vec![own.clone(), system.clone()];
    assert_eq!(present_or_first(candidates()), own);
    std::fs::create_dir(world.path("system")).expect("mkdir");
    std::fs::write(&system, "").expect("socket stand-in");
    assert_eq!(present_or_first(candidates()), system);
    // Below a file is not there either.
    std::fs::write(world.path("own"), "").expect("file");
    assert_eq!(present_or_first(candidates()), system);
    std::fs::remove_file(world.path("own")).expect("rm");
    std::fs::create_dir(world.path("own")).expect("mkdir");
    std::fs::write(&own, "").expect("socket stand-in");
    assert_eq!(present_or_first(candidates()), own);
}

/// A socket file nothing listens on (a killed daemon's) does not hide a later one; when it
/// is the only one there, it is still the one named (so the error names it).
#[test]
fn a_stale_socket_is_passed_over_for_a_live_one() {
    let world = World::new();
    let own = world.path("own.sock");
    let system = world.path("system.sock");
    drop(std::os::unix::net::UnixListener::bind(&own).expect("bind"));
    assert!(own.exists(), "a socket file left behind");
    let candidates = || vec![own.clone(), system.clone()];
    assert_eq!(present_or_first(candidates()), own, "the only one there");
    let _live = std::os::unix::net::UnixListener::bind(&system).expect("bind");
    assert_eq!(present_or_first(candidates()), system);
    std::fs::remove_file(&own).expect("rm");
    let _own_live = std::os::unix::net::UnixListener::bind(&own).expect("bind");
    assert_eq!(
        present_or_first(candidates()),
        own,
        "a live own daemon wins"
    );
}

#[test]
fn flags_beat_the_environment_and_the_environment_beats_profiles() {
    let mut world = World::new();
    let (prod_file, prod) = world.token_file("prod.token", 0o600);
    let (flag_file, flag) = world.token_file("flag.token", 0o600);
    let env_token = world.token();
    let tokens = [
        ("prod", prod.as_str()),
        ("flag", flag.as_str()),
        ("env", env_token.as_str()),
    ];
    world.config(&format!(
        "default_profile = \"prod\"\n[profiles.prod]\nurl = \"https://prod:8443\"\n\
         token_file = {:?}\n",
        prod_file.display().to_string()
    ));
    let check = |world: &World, argv: &[&str], expected: &str| {
        let resolved = world.ok(argv);
        assert_eq!(describe(&resolved.transport, &tokens), expected, "{argv:?}");
    };
    let flag_file = flag_file.display().to_string();

    // The default profile when nothing names a daemon.
    check(&world, &[], "https://prod:8443 token=prod ca=system");
    // --socket beats the default profile; GWCTL_SOCKET does too.
    check(&world, &["--socket", "/s"], "unix /s");
    world.set(SOCKET_ENV, "/env.sock");
    check(&world, &[], "unix /env.sock");
    // A flag naming a remote daemon beats GWCTL_SOCKET.
    check(
        &world,
        &["--url", "https://flag:1", "--token-file", &flag_file],
        "https://flag:1 token=flag ca=system",
    );
    check(
        &world,
        &["--profile", "prod"],
        "https://prod:8443 token=prod ca=system",
    );
    // --socket beats GWCTL_URL.
    world.env.remove(SOCKET_ENV);
    world
        .set(URL_ENV, "https://env:2")
        .set(TOKEN_ENV, env_token.clone());
    check(&world, &["--socket", "/s"], "unix /s");
    check(&world, &[], "https://env:2 token=env ca=system");
    // Per setting: the flag, then the variable, then the profile.
    check(
        &world,
        &["--token-file", &flag_file],
        "https://env:2 token=flag ca=system",
    );
    check(
        &world,
        &["--profile", "prod"],
        "https://env:2 token=env ca=system",
    );
    check(
        &world,
        &["--url", "https://flag:1"],
        "https://flag:1 token=env ca=system",
    );
}

#[test]
fn the_default_profile_never_lends_its_token_to_another_url() {
    let mut world = World::new();
    let (prod_file, _prod) = world.token_file("prod.token", 0o600);
    world.config(&format!(
        "default_profile = \"prod\"\n[profiles.prod]\nurl = \"https://prod:8443\"\n\
         token_file = {:?}\n",
        prod_file.display().to_string()
    ));
    world.refused(
        &["--url", "https://elsewhere:8443"],
        ErrorCode::InvalidArgument,
        &[
            "https://elsewhere:8443 needs an admin token",
            "--token-file",
            "admin-tokens create",
        ],
    );
    world.set(URL_ENV, "https://elsewhere:8443");
    world.refused(&[], ErrorCode::InvalidArgument, &["needs an admin token"]);
}

#[test]
fn two_daemons_named_at_the_same_level_are_refused() {
    let mut world = World::new();
    world.set(SOCKET_ENV, "/s").set(URL_ENV, "https://gw:8443");
    world.refused(
        &[],
        ErrorCode::InvalidArgument,
        &["GWCTL_SOCKET", "GWCTL_URL"],
    );
    world.env.remove(URL_ENV);
    world.set(PROFILE_ENV, "prod");
    world.refused(
        &[],
        ErrorCode::InvalidArgument,
        &["GWCTL_SOCKET", "GWCTL_PROFILE"],
    );
}

#[test]
fn https_needs_a_token_and_the_socket_takes_none() {
    let mut world = World::new();
    let (token_file, _) = world.token_file("t", 0o600);
    let token_file = token_file.display().to_string();
    world.refused(
        &["--url", "https://gw:8443"],
        ErrorCode::InvalidArgument,
        &["needs an admin token", "--token-file"],
    );
    for argv in [
        &["--token-file", token_file.as_str()][..],
        &["--socket", "/s", "--token-file", token_file.as_str()][..],
        &["--ca-cert", "/ca.pem"][..],
    ] {
        world.refused(
            argv,
            ErrorCode::InvalidArgument,
            &["is for a daemon reached over HTTPS"],
        );
    }
    // A token in the environment is simply not used for the socket.
    let token = world.token();
    world.set(TOKEN_ENV, token);
    assert!(matches!(world.ok(&[]).transport, Transport::Unix(_)));
}

#[test]
fn urls_must_be_https_host_port() {
    let mut world = World::new();
    let token = world.token();
    world.set(TOKEN_ENV, token);
    for (url, fragment) in [
        ("http://gw:8443", "only HTTPS"),
        ("gw:8443", "https://"),
        ("https://gw:8443/v1", "path"),
        ("https://admin:pw@gw:8443", "user info"),
        ("not a url", "not a URL"),
    ] {
        world.refused(
            &["--url", url],
            ErrorCode::InvalidArgument,
            &["Invalid --url", fragment],
        );
    }
    world.set(URL_ENV, "http://gw");
    world.refused(&[], ErrorCode::InvalidArgument, &["Invalid GWCTL_URL"]);
}

#[test]
fn token_files_are_trimmed_checked_and_warned_about() {
    let mut world = World::new();
    let url = ["--url", "https://gw:8443"];
    let run = |world: &World, file: &Path| {
        let mut argv = url.to_vec();
        let file = file.display().to_string();
        argv.extend(["--token-file", &file]);
        world.resolve(&argv)
    };

    let (private, token) = world.token_file("private.token", 0o600);
    let resolved = run(&world, &private).expect("private token file");
    let Transport::Https { token: got, .. } = &resolved.transport else {
        panic!("not https");
    };
    assert_eq!(got.expose(), token, "surrounding whitespace is trimmed");
    assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);

    let (shared, _) = world.token_file("shared.token", 0o644);
    let resolved = run(&world, &shared).expect("readable token file still works");
    assert_eq!(resolved.warnings.len(), 1);
    let warning = &resolved.warnings[0];
    assert!(
        warning.starts_with("warning:")
            && warning.contains("mode 644")
            && warning.contains("chmod 600"),
        "{warning}"
    );
    world.assert_no_secret(warning);
    let (group, _) = world.token_file("group.token", 0o640);
    assert_eq!(run(&world, &group).expect("ok").warnings.len(), 1);

    let check_refused = |world: &World, path: &Path, code: ErrorCode, fragment: &str| {
        let refusal = run(world, path).expect_err("refused");
        assert_eq!(refusal.code, code, "{}", refusal.message);
        assert!(refusal.message.contains(fragment), "{}", refusal.message);
        assert!(
            refusal.message.contains(&path.display().to_string()),
            "{}",
            refusal.message
        );
    };
    check_refused(
        &world,
        &world.path("missing"),
        ErrorCode::InvalidArgument,
        "Cannot read",
    );
    check_refused(
        &world,
        &world.file("empty", " \n", 0o600),
        ErrorCode::InvalidArgument,
        "is empty",
    );
    // A malformed token is refused as the daemon would refuse it, without quoting it.
    let typo = {
        let mut token = world.token();
        token.pop();
        token.push('!');
        token
    };
    world.secrets.push(typo.clone());
    check_refused(
        &world,
        &world.file("typo", &typo, 0o600),
        ErrorCode::Unauthorized,
        "not a valid admin token",
    );
    let proxy_key = "sk-proxy-0123456789ABCDEFGHIJKLMNOPQRSTUVabcdef";
    world.secrets.push(proxy_key.to_owned());
    check_refused(
        &world,
        &world.file("proxy", proxy_key, 0o600),
        ErrorCode::Unauthorized,
        "prefix",
    );
    world.refused(
        &["--url", "https://gw:8443", "--token", proxy_key],
        ErrorCode::Unauthorized,
        &["--token"],
    );
}

#[test]
fn ca_certificates_come_from_flag_variable_or_profile_and_must_parse() {
    let mut world = World::new();
    let token = world.token();
    world.set(TOKEN_ENV, token);
    let flag_ca = world.ca_cert("flag-ca.pem");
    let env_ca = world.ca_cert("env-ca.pem");
    let ca_of = |world: &World, argv: &[&str]| match world.ok(argv).transport {
        Transport::Https { ca_cert, .. } => ca_cert,
        Transport::Unix(_) => panic!("not https"),
    };
    let flag_ca_text = flag_ca.display().to_string();
    assert_eq!(
        ca_of(&world, &["--url", "https://gw", "--ca-cert", &flag_ca_text]),
        Some(flag_ca.clone())
    );
    world.set(CA_CERT_ENV, env_ca.clone());
    assert_eq!(ca_of(&world, &["--url", "https://gw"]), Some(env_ca));
    assert_eq!(
        ca_of(&world, &["--url", "https://gw", "--ca-cert", &flag_ca_text]),
        Some(flag_ca)
    );

    world.env.remove(CA_CERT_ENV);
    let not_pem = world
        .file("not.pem", "hello\n", 0o644)
        .display()
        .to_string();
    world.refused(
        &["--url", "https://gw", "--ca-cert", &not_pem],
        ErrorCode::InvalidArgument,
        &["Invalid --ca-cert", &not_pem, "no PEM certificate"],
    );
    let missing = world.path("missing.pem").display().to_string();
    world.refused(
        &["--url", "https://gw", "--ca-cert", &missing],
        ErrorCode::InvalidArgument,
        &[&missing],
    );
    // Pointing --ca-cert at the token file by mistake does not print the token.
    let (token_file, _) = world.token_file("t", 0o600);
    world.refused(
        &[
            "--url",
            "https://gw",
            "--ca-cert",
            &token_file.display().to_string(),
        ],
        ErrorCode::InvalidArgument,
        &["no PEM certificate"],
    );
}

#[test]
fn profiles_resolve_paths_from_their_file() {
    let mut world = World::new();
    let (_, token) = world.token_file("prod.token", 0o600);
    world.ca_cert("prod-ca.pem");
    world.config(
        "[profiles.prod]\nurl = \"https://gw.example:8443\"\ntoken_file = \"prod.token\"\n\
         ca_cert = \"prod-ca.pem\"\n",
    );
    let resolved = world.ok(&["--profile", "prod"]);
    assert_eq!(
        resolved.transport,
        Transport::Https {
            url: HttpsUrl::parse("https://gw.example:8443").expect("url"),
            token: AdminToken::parse(&token).expect("token"),
            ca_cert: Some(world.path("prod-ca.pem")),
        }
    );
    // GWCTL_PROFILE selects it too; with no default_profile nothing does.
    world.set(PROFILE_ENV, "prod");
    assert!(matches!(world.ok(&[]).transport, Transport::Https { .. }));
    world.env.remove(PROFILE_ENV);
    assert!(matches!(world.ok(&[]).transport, Transport::Unix(_)));
}

#[test]
fn profile_mistakes_name_the_file() {
    let mut world = World::new();
    let config = world.path("config.toml").display().to_string();
    world.refused(
        &["--profile", "prod"],
        ErrorCode::InvalidArgument,
        &["No profile \"prod\"", &config],
    );
    world.config(
        "[profiles.staging]\nurl = \"https://s:1\"\n[profiles.prod]\nurl = \"https://p:1\"\n",
    );
    world.refused(
        &["--profile", "dev"],
        ErrorCode::InvalidArgument,
        &["No profile \"dev\"", &config, "prod, staging"],
    );
    // Unknown fields stop gwctl even when the file is only consulted for default_profile.
    world.config("[profiles.prod]\nurl = \"https://p:1\"\ntoken_flie = \"/t\"\n");
    world.refused(&[], ErrorCode::InvalidArgument, &[&config, "token_flie"]);
    world.refused(
        &["--profile", "prod"],
        ErrorCode::InvalidArgument,
        &["token_flie"],
    );
    // But a flag naming the daemon does not need the file at all.
    assert!(matches!(
        world.ok(&["--socket", "/s"]).transport,
        Transport::Unix(_)
    ));

    world.config("[profiles.prod]\ntoken_file = \"/t\"\n");
    world.refused(
        &["--profile", "prod"],
        ErrorCode::InvalidArgument,
        &["profile prod in", "has no url"],
    );
    let token = world.token();
    world.config(&format!(
        "[profiles.prod]\nurl = \"https://p:1\"\ntoken = \"{token}\"\ntoken_file = \"/t\"\n"
    ));
    world.refused(
        &["--profile", "prod"],
        ErrorCode::InvalidArgument,
        &["both token and token_file"],
    );
    world.config("[profiles.prod]\nurl = \"https://p:1\"\n");
    world.refused(
        &["--profile", "prod"],
        ErrorCode::InvalidArgument,
        &["needs an admin token"],
    );
    // An unquoted token breaks the TOML; the message quotes the line, masked.
    world.config(&format!(
        "[profiles.prod]\nurl = \"https://p:1\"\ntoken = {token}\n"
    ));
    world.refused(
        &["--profile", "prod"],
        ErrorCode::InvalidArgument,
        &["gwadm-***"],
    );
}

#[test]
fn an_inline_token_in_a_readable_config_is_warned_about() {
    let mut world = World::new();
    let token = world.token();
    world.config(&format!(
        "default_profile = \"prod\"\n[profiles.prod]\nurl = \"https://p:1\"\ntoken = \"{token}\"\n"
    ));
    assert!(world.ok(&[]).warnings.is_empty());
    std::fs::set_permissions(
        world.path("config.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let warnings = world.ok(&[]).warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("gwctl config"), "{warnings:?}");
    world.assert_no_secret(&warnings[0]);
}

#[test]
fn tokens_are_masked_in_quoted_text() {
    let check = |text: &str, expected: &str| assert_eq!(redact_tokens(text), expected, "{text}");
    check("token = gwadm-AbC123xyz", "token = gwadm-***");
    check("a gwadm-X1 and gwadm-Y2.", "a gwadm-*** and gwadm-***.");
    check("the gwadm- prefix", "the gwadm- prefix");
    check("nothing here", "nothing here");
}
