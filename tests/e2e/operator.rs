//! Operator conveniences (issue #18 point 5): `gatewayd --check-config` (every error with its
//! line, exit 0/1, nothing bound or created, beside a running daemon), gwctl's completions
//! loaded by bash, the manual pages and completions `install.sh` installs (rendered by the
//! real `man`), and an invalid kept config stopping `install.sh` before it changes anything.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gateway_tests::Gateway;
use gateway_tests::binaries;

/// `gatewayd --check-config FILE`, with the providers' keys set (an unset one is a warning).
fn check_config(file: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(binaries::gatewayd())
        .arg("--check-config")
        .arg(file)
        .env_remove("GATEWAYD_CONFIG")
        .env_remove("GATEWAYD_LOG_FORMAT")
        .env("OPENAI_API_KEY", "sk-check-openai")
        .env("ANTHROPIC_API_KEY", "sk-check-anthropic")
        .env("GEMINI_API_KEY", "check-gemini")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running gatewayd --check-config");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A valid file exits 0 without binding its listeners (the test holds both ports, so a bind
/// would fail), without creating its data directory or socket.
#[test]
fn check_config_accepts_a_good_file_and_binds_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").expect("bind");
    let data_dir = dir.path().join("data");
    let socket = dir.path().join("run/admin.sock");
    let file = dir.path().join("gatewayd.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {}\n[proxy]\nlisten = \"{}\"\n[admin]\nsocket = {}\nlisten = \"{}\"\n\
             [providers.openai]\napi_key_env = \"OPENAI_API_KEY\"\n\
             [[prices]]\nmodel = \"house-*\"\ninput = 1\noutput = 2\nmax_output_tokens = 1000\n",
            toml_path(&data_dir),
            proxy.local_addr().expect("addr"),
            toml_path(&socket),
            admin.local_addr().expect("addr"),
        ),
    )
    .expect("write");
    let (code, stderr) = check_config(&file, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("the configuration is valid"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!data_dir.exists(), "data directory created");
    assert!(
        !socket.exists() && !dir.path().join("run").exists(),
        "socket created"
    );
    let entries: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(entries, vec!["gatewayd.toml"], "only the config is there");

    // A provider key that is not set is said, with its line, and is no error: start-up serves
    // the other providers and answers 502 for that one.
    let (code, stderr) = check_config(&file, &[("OPENAI_API_KEY", "")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: line 8: [providers.openai] api_key_env"),
        "{stderr}"
    );
}

/// Beside the running daemon it is about to restart: the check takes no lock, touches no
/// socket, and the daemon keeps serving.
#[tokio::test]
async fn check_config_runs_beside_the_daemon_it_checks() {
    let gateway = Gateway::start().await;
    let before = std::fs::metadata(&gateway.socket).expect("socket").ino();
    let (code, stderr) = check_config(&gateway.config_path, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::metadata(&gateway.socket).expect("socket").ino(),
        before,
        "the live socket was replaced"
    );
    gateway.gwctl(&["keys", "list"]).await.assert_success();
}

/// Each kind of error exits 1 naming its line; a file with several names them all.
#[test]
fn check_config_names_every_error_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let head = format!("data_dir = {}\n", toml_path(&data_dir));
    let missing_cert = toml_path(&dir.path().join("missing-cert.pem"));
    let missing_key = toml_path(&dir.path().join("missing-key.pem"));
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "syntax",
            "[proxy]\nlisten = 127.0.0.1:8080\n".into(),
            "line 3",
            "TOML parse error",
        ),
        (
            "unknown field",
            "[proxy]\ntrusted_proxy = []\n".into(),
            "line 3",
            "unknown field `trusted_proxy`",
        ),
        (
            "bad value",
            "[spend]\nmin_output_tokens = \"many\"\n".into(),
            "line 3",
            "min_output_tokens",
        ),
        (
            "bad provider section",
            "[providers.anthropic]\nbase_url = \"ftp://example.com\"\n".into(),
            "line 2",
            "[providers.anthropic]",
        ),
        (
            "provider key written where its variable's name belongs",
            "[providers.openai]\napi_key_env = \"sk-live-Qm4xT9vR2pL7nW3k\"\n".into(),
            "line 2",
            "api_key_env must name the environment variable",
        ),
        (
            "bad cluster section",
            "[cluster]\npostgres_url_env = \"GW_E2E_CHECK_PG\"\n".into(),
            "line 2",
            "[cluster] needs redis_url_env or redis_url_file",
        ),
        (
            "env secret that holds no usable URL",
            "[cluster]\npostgres_url_env = \"GW_E2E_CHECK_NOT_PG\"\n\
             redis_url_env = \"GW_E2E_CHECK_REDIS\"\n"
                .into(),
            "line 3",
            "GW_E2E_CHECK_NOT_PG holds no usable PostgreSQL URL",
        ),
        (
            "bad price",
            "[[prices]]\nmodel = \"house-*\"\ninput = 1\noutput = \"cheap\"\n\
             max_output_tokens = 10\n"
                .into(),
            // A price entry is named by its model's line.
            "line 3",
            "output: \"cheap\" must be a plain decimal number",
        ),
        (
            "admin certificate that cannot be loaded",
            format!("[admin]\ntls_cert = {missing_cert}\ntls_key = {missing_key}\n"),
            "line 3",
            "missing-cert.pem",
        ),
    ];
    let env = [
        ("GW_E2E_CHECK_PG", "postgres://gw@127.0.0.1:5432/gw_check"),
        ("GW_E2E_CHECK_REDIS", "redis://127.0.0.1:6379/0"),
        ("GW_E2E_CHECK_NOT_PG", "mysql://gw:Qm4xT9pw@127.0.0.1/gw"),
    ];
    for (kind, body, line, needle) in &cases {
        let file = dir.path().join("gatewayd.toml");
        std::fs::write(&file, format!("{head}{body}")).expect("write");
        let (code, stderr) = check_config(&file, &env);
        assert_eq!(code, 1, "{kind}:\n{stderr}");
        assert!(
            stderr.contains(&format!("gatewayd.toml: {line}")),
            "{kind}: {line}\n{stderr}"
        );
        assert!(stderr.contains(needle), "{kind}: {needle}\n{stderr}");
        assert!(stderr.contains("invalid (1 error)"), "{kind}:\n{stderr}");
        assert!(
            !stderr.contains("Qm4xT9"),
            "{kind}: a secret echoed\n{stderr}"
        );
        assert!(!data_dir.exists(), "{kind}: data directory created");
    }

    // All at once (but the syntax error, past which nothing can be read, and a second
    // [cluster] table, which would be one): every one named.
    let file = dir.path().join("gatewayd.toml");
    let mut text = head.clone();
    let mut expected = Vec::new();
    for (kind, body, _, needle) in &cases {
        if *kind != "syntax" && *kind != "bad cluster section" {
            text.push_str(body);
            expected.push((kind, needle));
        }
    }
    std::fs::write(&file, &text).expect("write");
    let (code, stderr) = check_config(&file, &env);
    assert_eq!(code, 1, "{text}\n{stderr}");
    for (kind, needle) in &expected {
        assert!(
            stderr.contains(*needle),
            "{kind}: {needle}\n{text}\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("invalid ({} errors)", expected.len())),
        "{text}\n{stderr}"
    );

    // The check runs where the daemon's environment is not (install.sh's shell, not the
    // unit's Environment=): a [cluster] variable unset here is a warning, the rest checked.
    std::fs::write(
        &file,
        format!(
            "{head}[cluster]\npostgres_url_env = \"GW_E2E_CHECK_UNSET_PG\"\n\
             redis_url_env = \"GW_E2E_CHECK_UNSET_REDIS\"\n"
        ),
    )
    .expect("write");
    let (code, stderr) = check_config(&file, &[]);
    assert_eq!(code, 0, "{stderr}");
    for variable in ["GW_E2E_CHECK_UNSET_PG", "GW_E2E_CHECK_UNSET_REDIS"] {
        assert!(
            stderr.contains(&format!(
                "the environment variable {variable} is not set here"
            )),
            "{variable}\n{stderr}"
        );
    }
    assert!(stderr.contains("the configuration is valid"), "{stderr}");
    let with_lease = format!(
        "{head}[cluster]\npostgres_url_env = \"GW_E2E_CHECK_UNSET_PG\"\n\
         redis_url_env = \"GW_E2E_CHECK_UNSET_REDIS\"\nhold_lease = \"1s\"\n"
    );
    std::fs::write(&file, &with_lease).expect("write");
    let (code, stderr) = check_config(&file, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("gatewayd.toml: line 5"), "{stderr}");
    assert!(stderr.contains("hold_lease"), "{stderr}");
    assert!(!data_dir.exists(), "data directory created");
}

/// The completion script registers itself in bash and completes verbs and flags.
#[test]
fn completions_load_in_bash() {
    let gwctl = binaries::gwctl();
    let script = format!(
        "source <('{gwctl}' completions bash) && complete -p gwctl \
         && COMP_WORDS=(gwctl ke) COMP_CWORD=1 && _gwctl gwctl ke gwctl && echo \"verbs: ${{COMPREPLY[*]}}\" \
         && COMP_WORDS=(gwctl keys create --spend) COMP_CWORD=3 && _gwctl gwctl --spend create \
         && echo \"flags: ${{COMPREPLY[*]}}\"",
        gwctl = gwctl.display()
    );
    let output = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("-F _gwctl gwctl"), "{stdout}");
    assert!(stdout.contains("verbs: keys"), "{stdout}");
    assert!(stdout.contains("flags: --spend-limit"), "{stdout}");
}

fn install(root: &Path, extra: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install.sh");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .arg("--prefix")
        .arg(root.join("prefix"))
        .arg("--config-dir")
        .arg(root.join("etc"))
        .arg("--data-dir")
        .arg(root.join("data"))
        .args([
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--bin-dir")
        .arg(binaries::built())
        .args(extra)
        .stdin(Stdio::null());
    // Under systemd the socket is the unit's (--socket elsewhere is refused).
    if !extra.contains(&"--systemd") {
        command.arg("--socket").arg(root.join("admin.sock"));
    }
    command.output().expect("running install.sh")
}

fn log_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// `man NAME` with only the prefix's pages on the manual path, as plain text.
fn man(prefix: &Path, name: &str) -> Output {
    Command::new("man")
        .arg(name)
        .env("MANPATH", prefix.join("share/man"))
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .env_remove("MANOPT")
        .stdin(Stdio::null())
        .output()
        .expect("man is installed (scripts/test installs man-db)")
}

#[test]
fn install_sh_installs_the_manual_pages_and_completions() {
    let dir = tempfile::Builder::new()
        .prefix("gw-operator-")
        .tempdir()
        .expect("dir");
    let root = dir.path();
    let output = install(root, &["--no-start"]);
    let log = log_of(&output);
    assert!(output.status.success(), "install.sh failed:\n{log}");
    let prefix = root.join("prefix");
    for page in [
        "gwctl.1",
        "gwctl-keys-create.1",
        "gwctl-completions.1",
        "gatewayd.1",
        "gatewayd-migrate-store.1",
    ] {
        let path = prefix.join("share/man/man1").join(page);
        let mode = std::fs::metadata(&path).expect(page).mode() & 0o777;
        assert_eq!(mode, 0o644, "{page}");
    }
    let gwctl = man(&prefix, "gwctl");
    let text = String::from_utf8_lossy(&gwctl.stdout);
    assert!(
        gwctl.status.success(),
        "{}",
        String::from_utf8_lossy(&gwctl.stderr)
    );
    for needle in [
        "gwctl",
        "EXIT STATUS",
        "daemon_unreachable",
        "--ca-cert",
        "gwctl-keys(1)",
    ] {
        assert!(text.contains(needle), "man gwctl: {needle}\n{text}");
    }
    let gatewayd = man(&prefix, "gatewayd");
    let text = String::from_utf8_lossy(&gatewayd.stdout);
    assert!(
        gatewayd.status.success(),
        "{}",
        String::from_utf8_lossy(&gatewayd.stderr)
    );
    for needle in ["--check-config", "EXIT STATUS", "SIGHUP", "GATEWAYD_CONFIG"] {
        assert!(text.contains(needle), "man gatewayd: {needle}\n{text}");
    }
    let create = man(&prefix, "gwctl-keys-create");
    assert!(
        String::from_utf8_lossy(&create.stdout).contains("--spend-limit"),
        "{create:?}"
    );

    let completions: Vec<PathBuf> = [
        "share/bash-completion/completions/gwctl",
        "share/zsh/site-functions/_gwctl",
        "share/fish/vendor_completions.d/gwctl.fish",
    ]
    .iter()
    .map(|path| prefix.join(path))
    .collect();
    for path in &completions {
        let text = std::fs::read_to_string(path).expect("completion installed");
        assert!(text.contains("spend-limit"), "{}", path.display());
    }
    let output = Command::new("bash")
        .args(["--noprofile", "--norc", "-c"])
        .arg(format!(
            "source '{}' && complete -p gwctl",
            completions[0].display()
        ))
        .output()
        .expect("bash");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("-F _gwctl gwctl"),
        "{output:?}"
    );
}

/// A kept config the new gatewayd refuses stops install.sh before anything is replaced: the
/// running daemon keeps running (same process, still answering) on the installed binary,
/// and with `--systemd` it stops before anything about the unit is looked at.
#[tokio::test]
async fn install_sh_refuses_an_invalid_kept_config_and_changes_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("gw-operator-")
        .tempdir()
        .expect("dir");
    let root = dir.path();
    let first = install(root, &[]);
    let pid_file = root.join("data/gatewayd.pid");
    let _stop = StopOnDrop(pid_file.clone());
    assert!(
        first.status.success(),
        "install.sh failed:\n{}",
        log_of(&first)
    );
    let pid = std::fs::read_to_string(&pid_file).expect("pid file");
    let binary = root.join("prefix/bin/gatewayd");
    let inode = std::fs::metadata(&binary).expect("installed").ino();

    let config = root.join("etc/gatewayd.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("[spend]\nclamp_output = \"sometimes\"\n");
    std::fs::write(&config, &text).expect("edit config");
    let broken_line = text.lines().count();

    for extra in [&[][..], &["--systemd"][..]] {
        if extra.contains(&"--systemd") && !rustix::process::geteuid().is_root() {
            eprintln!("install --systemd: skipped, --systemd needs root");
            continue;
        }
        let output = install(root, extra);
        let log = log_of(&output);
        assert_eq!(output.status.code(), Some(1), "{extra:?}:\n{log}");
        assert!(
            log.contains(&format!("gatewayd.toml: line {broken_line}")),
            "{extra:?}:\n{log}"
        );
        assert!(log.contains("nothing was changed"), "{extra:?}:\n{log}");
        assert!(!log.contains("systemd is not running"), "{extra:?}:\n{log}");
        assert!(
            !log.contains("stopping the running gatewayd"),
            "{extra:?}:\n{log}"
        );
        assert_eq!(
            std::fs::metadata(&binary).expect("installed").ino(),
            inode,
            "{extra:?}: the binary was replaced"
        );
        assert_eq!(std::fs::read_to_string(&pid_file).expect("pid"), pid);
        let listed = gateway_tests::gwctl::run_binary(
            &root.join("prefix/bin/gwctl"),
            &root.join("admin.sock"),
            &["keys", "list"],
        )
        .await;
        listed.assert_success();
    }
}

/// Stops the daemon install.sh started, even when an assertion fails first.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0)
            && let Ok(pid) = pid.trim().parse::<u32>()
        {
            gateway_tests::gateway::signal(pid, rustix::process::Signal::TERM);
        }
    }
}
