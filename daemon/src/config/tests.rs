//! The config loader's tests: defaults, overrides, refused values naming their line.

use super::*;

fn load_str(text: &str) -> anyhow::Result<Config> {
    Config::from_text(text)
}

#[test]
fn a_refused_value_names_its_line() {
    let cases = [
        ("# c\n[proxy]\nlisten = \"nowhere\"\n", "line 3"),
        ("\n[admin]\nsocket_mode = \"999\"\n", "line 3"),
        ("worker_threads = 5000\n", "line 1"),
        ("[proxy]\n\n\nbody_read_timeout = \"soon\"\n", "line 4"),
        (
            "[providers.openai]\nbase_url = \"ftp://x\"\napi_key_env = \"K\"\n",
            "line 1",
        ),
        (
            "[[prices]]\nmodel = \"a\"\ninput = 1\noutput = 1\nmax_output_tokens = 1\n\
             [[prices]]\nmodel = \"b\"\ninput = 1\noutput = -1\nmax_output_tokens = 1\n",
            "line 7",
        ),
    ];
    for (text, line) in cases {
        let err = format!("{:#}", load_str(text).expect_err(text));
        assert!(err.starts_with(line), "{text:?}: {err}");
    }
}

#[test]
fn runs_on_embedded_defaults() {
    let config = Config::resolve(FileConfig::default()).expect("defaults are valid");
    assert_eq!(config.proxy.listen, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(config.admin.socket_mode, 0o660);
    let openai = config.provider(Provider::Openai).expect("openai");
    assert_eq!(
        openai.credential,
        Some(CredentialSource::Env("OPENAI_API_KEY".into()))
    );
    assert_eq!(openai.base_url.host(), Some("api.openai.com"));
    assert!(
        config.cpu_affinity,
        "event loops are pinned unless turned off"
    );
}

#[test]
fn the_body_read_timeout_has_a_default_and_can_be_set() {
    let defaults = Config::resolve(FileConfig::default()).expect("defaults are valid");
    assert_eq!(defaults.proxy.body_read_timeout, Duration::from_secs(30));
    let config = load_str("[proxy]\nbody_read_timeout = \"2s\"").expect("valid");
    assert_eq!(config.proxy.body_read_timeout, Duration::from_secs(2));
    let err = load_str("[proxy]\nbody_read_timeout = \"0s\"").expect_err("zero");
    assert!(
        format!("{err:#}").contains("proxy.body_read_timeout"),
        "{err:#}"
    );
}

#[test]
fn cpu_affinity_can_be_turned_off() {
    let file = parse_file("cpu_affinity = false").expect("parses");
    assert!(!Config::resolve(file).expect("valid").cpu_affinity);
}

#[test]
fn file_overrides_field_by_field() {
    let config = load_str(
        r#"
        data_dir = "/tmp/gw"
        [proxy]
        trusted_proxies = ["10.0.0.0/8"]
        [providers.openai]
        api_key_file = "/etc/gatewayd/secrets/openai"
        "#,
    )
    .expect("valid");
    assert_eq!(config.data_dir, PathBuf::from("/tmp/gw"));
    assert_eq!(
        config.proxy.listen.port(),
        8080,
        "unset fields keep their default"
    );
    assert_eq!(config.proxy.trusted_proxies.len(), 1);
    let openai = config.provider(Provider::Openai).expect("openai");
    assert_eq!(
        openai.credential,
        Some(CredentialSource::File(
            "/etc/gatewayd/secrets/openai".into()
        ))
    );
    assert_eq!(openai.base_url.host(), Some("api.openai.com"));
}

#[test]
fn unknown_field_names_its_line() {
    let err =
        load_str("[proxy]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n").expect_err("unknown field");
    let message = format!("{err:#}");
    assert!(message.contains("listn"), "{message}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn bad_values_are_named() {
    for (text, needle) in [
        ("[proxy]\nlisten = \"nope\"", "proxy.listen"),
        (
            "[proxy]\ntrusted_proxies = [\"10.0.0.0/99\"]",
            "trusted_proxies",
        ),
        ("[admin]\nsocket_mode = \"999\"", "socket_mode"),
        (
            "[providers.gemini]\nbase_url = \"ftp://x\"",
            "providers.gemini",
        ),
        ("data_dir = 3", "data_dir"),
        ("[proxy]\ndrain_timeout = \"soon\"", "proxy.drain_timeout"),
        ("[proxy]\nmax_connections = 0", "proxy.max_connections"),
        (
            "[[prices]]\nmodel = \"x[\"\ninput = 1\noutput = 1\nmax_output_tokens = 1",
            "x[",
        ),
        (
            "[[prices]]\nmodel = \"x\"\ninput = -1\noutput = 1\nmax_output_tokens = 1",
            "input",
        ),
        ("[spend]\nclamp = true", "clamp"),
        ("worker_threads = 5000", "worker_threads"),
        (
            "[[prices]]\nmodel = \"x\"\ninput = 1\noutput = 1\nmax_output_tokens = 0",
            "max_output_tokens must be at least 1 for a model whose output is priced",
        ),
        (
            "[spend.fallback_price]\ninput = 1\noutput = 1\nmax_output_tokens = 0",
            "max_output_tokens must be at least 1 for a model whose output is priced",
        ),
        ("[admin]\ntls_cert = \"/etc/cert.pem\"", "admin.tls_key"),
        ("[admin]\ntls_key = \"/etc/key.pem\"", "admin.tls_cert"),
        (
            "[admin]\nsocket_mode = \"0666\"",
            "admin.socket_mode: \"0666\" would let every local user",
        ),
        ("[admin]\nsocket_mode = \"0661\"", "every local user"),
        ("[admin]\nmax_connections = 0", "admin.max_connections"),
        (
            "[admin]\nsocket_max_connections = 0",
            "admin.socket_max_connections",
        ),
        ("[admin]\nauth_timeout = \"0s\"", "admin.auth_timeout"),
    ] {
        let err = load_str(text).expect_err(text);
        assert!(format!("{err:#}").contains(needle), "{text}: {err:#}");
    }
}

/// A provider key written in the file under a name it does not have (`api_key`: the file
/// takes only where the key is, `api_key_env` / `api_key_file`) is refused naming the line,
/// never quoting it: the error goes to the terminal and the journal.
#[test]
fn a_refused_line_is_never_quoted() {
    let secret = "sk-live-Qm4xT9vR2pL7nW3k";
    for text in [
        format!("[providers.openai]\napi_key = \"{secret}\"\n"),
        format!("[providers.openai]\napi_key_env = \"OPENAI_API_KEY\" \"{secret}\"\n"),
        format!("[proxy]\nlisten = \"127.0.0.1:8080\"\nsecret = '{secret}'\n"),
        // serde's own messages quote the value refused (`invalid type: string "…"`) and an
        // unknown name (`unknown field `…``): a secret pasted in the wrong place.
        format!("data_dir = \"/var/lib/gw\"\nproxy = \"{secret}\"\n"),
        format!("[spend]\nclamp_output = \"{secret}\"\n"),
        format!("[providers.openai]\n\"{secret}\" = 1\n"),
        format!(
            "[providers.openai]\n{}\" = 1\n",
            "\"sk-live-qm4xt9vr2pl7nw3k\\\"x"
        ),
    ] {
        let err = format!("{:#}", load_str(&text).expect_err(&text));
        assert!(err.contains("line 2") || err.contains("line 3"), "{err}");
        assert!(!err.contains(secret), "{err}");
        assert!(!err.to_lowercase().contains("qm4xt9"), "{err}");
    }
}

/// What serde's messages say besides the value is kept: the setting's name, the type wanted.
#[test]
fn a_refused_value_is_described_not_quoted() {
    let err = format!(
        "{:#}",
        load_str("[spend]\nclamp_output = \"yes\"\n").expect_err("bool")
    );
    assert!(
        err.contains("invalid type: string, expected a boolean"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        load_str("[proxy]\nlisen = \"x\"\n").expect_err("typo")
    );
    assert!(
        err.contains("unknown field `lisen`, expected one of `listen`"),
        "{err}"
    );
}

/// A provider key written where its variable's name belongs is refused at start-up without
/// being echoed: at run time that name went into a warning and into every client's 502.
#[test]
fn a_provider_key_written_as_a_variable_name_is_refused_without_echoing_it() {
    for (provider, secret) in [
        ("openai", "sk-live-Qm4xT9vR2pL7nW3k"),
        ("anthropic", "sk-ant-api03-Qm4xT9vR2pL7nW3k"),
        // Gemini keys can be letters, digits and `_` only: a shell could name that.
        ("gemini", "AIzaSyQm4xT9vR2pL7nW3kZ8yX1wV6uT5sR4q"),
    ] {
        let text = format!("[providers.{provider}]\napi_key_env = \"{secret}\"\n");
        let err = format!("{:#}", load_str(&text).expect_err(&text));
        // The section's line, as for every provider setting.
        assert!(err.starts_with("line 1: [providers."), "{err}");
        assert!(err.contains("api_key_env"), "{err}");
        assert!(!err.contains(secret), "{err}");
        assert!(!err.contains("Qm4xT9"), "{err}");
    }
    let config =
        load_str("[providers.openai]\napi_key_env = \"MY_OPENAI_KEY_2\"\n").expect("a name");
    assert_eq!(
        config
            .provider(Provider::Openai)
            .expect("openai")
            .credential,
        Some(CredentialSource::Env("MY_OPENAI_KEY_2".into()))
    );
}

#[test]
fn configured_providers_are_read_with_their_kind() {
    let config = load_str(
        r#"
[providers.local-llama]
kind = "openai"
base_url = "http://10.0.0.5:8000"

[providers.groq]
kind = "openai"
base_url = "https://api.groq.com/openai"
api_key_env = "GROQ_API_KEY"

[providers.azure]
kind = "azure-openai"
base_url = "https://my-resource.openai.azure.com"
api_key_file = "/etc/gatewayd/secrets/azure"
api_version = "2024-10-21"
deployments = { prod-4o = "gpt-4o", prod-mini = "gpt-4o-mini" }

[[prices]]
model = "llama-*"
provider = "local-llama"
input = 0
output = 0
max_output_tokens = 8192
"#,
    )
    .expect("valid");
    let names: Vec<&str> = config
        .providers
        .iter()
        .map(|p| p.provider.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "openai",
            "anthropic",
            "gemini",
            "azure",
            "groq",
            "local-llama"
        ]
    );
    let local = config
        .provider("local-llama".parse().expect("name"))
        .expect("configured");
    assert_eq!(local.kind, Kind::Openai);
    assert_eq!(local.credential, None, "a local server needs no credential");
    let groq = config
        .provider("groq".parse().expect("name"))
        .expect("groq");
    assert_eq!(
        groq.credential,
        Some(CredentialSource::Env("GROQ_API_KEY".into()))
    );
    let azure = config
        .provider("azure".parse().expect("name"))
        .expect("azure");
    assert_eq!(azure.kind, Kind::AzureOpenai);
    assert_eq!(azure.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(
        azure.deployments.get("prod-4o").map(String::as_str),
        Some("gpt-4o")
    );
    assert_eq!(
        config.prices[0].provider,
        Some("local-llama".parse().expect("name"))
    );
}

#[test]
fn a_refused_provider_section_names_its_line() {
    let cases = [
        // No kind.
        (
            "[proxy]\n\n[providers.local]\nbase_url = \"http://x:1\"\n",
            "line 3",
            "kind is required",
        ),
        // An unknown kind is toml's own error, with its line.
        (
            "[providers.local]\nkind = \"ollama\"\nbase_url = \"http://x:1\"\n",
            "line 2",
            "kind",
        ),
        (
            "[providers.local-llama]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n",
            "line 1",
            "base_url",
        ),
        (
            "[providers.local]\nkind = \"openai\"\n",
            "line 1",
            "base_url is required",
        ),
        (
            "[providers.Local]\nkind = \"openai\"\nbase_url = \"http://x:1\"\n",
            "line 1",
            "a lowercase letter",
        ),
        (
            "[providers.v1]\nkind = \"openai\"\nbase_url = \"http://x:1\"\n",
            "line 1",
            "not v1",
        ),
        (
            "[providers.local]\nkind = \"openai\"\nbase_url = \"http://x:1\"\napi_version = \"1\"\n",
            "line 1",
            "azure-openai",
        ),
        (
            "[providers.az]\nkind = \"azure-openai\"\nbase_url = \"https://x\"\n\
             deployments = { \"a/b\" = \"gpt-4o\" }\n",
            "line 1",
            "deployment name",
        ),
        (
            "[providers.openai]\nkind = \"anthropic\"\n",
            "line 1",
            "built-in provider",
        ),
        (
            "[providers.local]\nkind = \"openai\"\nbase_url = \"http://x:1\"\napi_key_env = \"A\"\n\
             api_key_file = \"/x\"\n",
            "line 1",
            "not both",
        ),
        (
            "\n[[prices]]\nmodel = \"m\"\nprovider = \"nowhere\"\ninput = 1\noutput = 1\n\
             max_output_tokens = 1\n",
            "line 3",
            "names a provider this config does not have",
        ),
    ];
    for (text, line, needle) in cases {
        let err = format!("{:#}", load_str(text).expect_err(text));
        assert!(err.starts_with(line), "{text:?}: {err}");
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

/// `--print-data-dir` (install.sh) needs only `data_dir`: a `[cluster]` whose variables are
/// set in the unit's environment, not the installer's, must not stop it.
#[test]
fn the_data_dir_is_read_without_the_cluster_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gatewayd.toml");
    std::fs::write(
        &file,
        "data_dir = \"/srv/gw-data\"\n[cluster]\npostgres_url_env = \"GW_UNSET_PG_9d2\"\n\
         redis_url_env = \"GW_UNSET_REDIS_9d2\"\n",
    )
    .expect("write");
    assert!(
        Config::load(Some(&file)).is_err(),
        "the daemon itself needs them"
    );
    assert_eq!(
        Config::data_dir_in(Some(&file)).expect("data_dir"),
        std::path::PathBuf::from("/srv/gw-data")
    );
    std::fs::write(&file, "[proxy]\n").expect("write");
    assert_eq!(
        Config::data_dir_in(Some(&file)).expect("default"),
        Config::load(Some(&file)).expect("valid").data_dir
    );
}
