//! The official SDKs, Python and Node (openai, anthropic, google-genai), through the real
//! gateway to the mock provider, with only their base URL and API key changed (SPEC §3).
//!
//! Python: `tests/sdk/setup.sh` makes a venv with the versions pinned in
//! `tests/sdk/requirements.txt`; Node: `tests/sdk/node/setup.sh` runs `npm ci` on the versions
//! pinned in `tests/sdk/node/package-lock.json`. Each is done once and cached in the target
//! directory. Then `tests/sdk/check_sdks.py` or `tests/sdk/node/check_sdks.mjs` drives each SDK
//! through plain and streaming calls, a model listing and a revoked key, whose 403
//! `key_revoked` must surface as the SDK's own error type. Afterwards the mock's log shows
//! which paths each SDK used, and that every request carried the provider's credential and
//! never the proxy key. Python 3.9+ with venv and pip, Node.js 20+ with npm (and PyPI and the
//! npm registry on the first run) are requirements of the test suite: without them these tests
//! fail with setup.sh's message; they never skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use gateway_tests::gateway::provider_key;
use gateway_tests::mock::Recorded;
use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use serde_json::json;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// A cold setup downloads and installs the SDKs.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// One SDK's checks; a few seconds when all is well.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// The language an SDK check runs in. Each has its own pinned SDKs, setup script and check
/// script; the checks, and what the provider must see, are the same.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Language {
    Python,
    Node,
}

impl Language {
    fn name(self) -> &'static str {
        match self {
            Language::Python => "Python",
            Language::Node => "Node",
        }
    }

    /// The folder of its `setup.sh` and check script.
    fn dir(self) -> PathBuf {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
        match self {
            Language::Python => sdk,
            Language::Node => sdk.join("node"),
        }
    }

    fn check_script(self) -> &'static str {
        match self {
            Language::Python => "check_sdks.py",
            Language::Node => "check_sdks.mjs",
        }
    }

    /// What its setup needs, for the message when it fails.
    fn needs(self) -> &'static str {
        match self {
            Language::Python => "Python 3.9+ with venv and pip, and PyPI on the first run",
            Language::Node => "Node.js 20+ with npm, and the npm registry on the first run",
        }
    }

    /// What `setup.sh` printed last: the venv's python, or the tree the Node SDKs are installed
    /// in. Set up once per test process; a failure is remembered, so the other SDK tests of
    /// the language fail at once with the same message.
    async fn installed(self) -> PathBuf {
        static PYTHON: OnceCell<Result<PathBuf, String>> = OnceCell::const_new();
        static NODE: OnceCell<Result<PathBuf, String>> = OnceCell::const_new();
        let cell = match self {
            Language::Python => &PYTHON,
            Language::Node => &NODE,
        };
        cell.get_or_init(|| setup(self))
            .await
            .clone()
            .unwrap_or_else(|message| panic!("{message}"))
    }
}

/// `target/`: this test executable is `target/<profile>/deps/e2e-…`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .expect("current test executable")
        .ancestors()
        .nth(3)
        .expect("the test executable is inside target/<profile>/deps")
        .to_path_buf()
}

async fn setup(language: Language) -> Result<PathBuf, String> {
    let script = language.dir().join("setup.sh");
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SETUP_TIMEOUT, output)
        .await
        .map_err(|_| format!("{} took over {SETUP_TIMEOUT:?}", script.display()))?
        .map_err(|e| format!("running bash {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "the {} SDK tests need {}; {} failed ({}):\n{stderr}{stdout}",
            language.name(),
            language.needs(),
            script.display(),
            output.status
        ));
    }
    let installed = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| PathBuf::from(line.trim()))
        .ok_or_else(|| format!("{} printed no path:\n{stderr}", script.display()))?;
    eprintln!(
        "{} SDKs ready in {:.1}s: {}",
        language.name(),
        started.elapsed().as_secs_f64(),
        installed.display()
    );
    Ok(installed)
}

/// A gateway on a fresh mock, with an active and a revoked key.
pub(crate) struct World {
    pub(crate) gateway: Gateway,
    pub(crate) mock: MockProvider,
    pub(crate) key: String,
    pub(crate) revoked: String,
}

async fn world() -> World {
    let mock = MockProvider::start().await;
    let gateway = Gateway::start_with(GatewayOptions {
        mock: Some(mock.clone()),
        ..Default::default()
    })
    .await;
    let admin = gateway.admin();
    let (_, key, _) = admin.create_key(json!({"name": "sdk"})).await;
    let (revoked_id, revoked, _) = admin.create_key(json!({"name": "sdk-revoked"})).await;
    let response = admin.delete(&format!("/v1/keys/{revoked_id}")).await;
    assert!(
        (200..300).contains(&response.status),
        "revoking: {}",
        response.body
    );
    World {
        gateway,
        mock,
        key,
        revoked,
    }
}

/// Runs the language's check script for `sdk` (`openai`, `anthropic`, `gemini`); panics with
/// its output unless it passed.
pub(crate) async fn run_checks(world: &World, language: Language, sdk: &str) {
    let installed = language.installed().await;
    let script = language.dir().join(language.check_script());
    let name = format!("{} {sdk}", language.check_script());
    // Node finds packages from the script's own folder, so a copy runs from a fresh folder in
    // the installed tree (one per run: parallel runs never share it), removed on drop.
    let (mut command, _run_dir) = match language {
        Language::Python => {
            let mut command = Command::new(&installed);
            command
                .arg(&script)
                .env("PYTHONUNBUFFERED", "1")
                .env("PYTHONDONTWRITEBYTECODE", "1");
            (command, None)
        }
        Language::Node => {
            let dir = tempfile::Builder::new()
                .prefix("run-")
                .tempdir_in(&installed)
                .unwrap_or_else(|e| panic!("a run folder in {}: {e}", installed.display()));
            let copy = dir.path().join(language.check_script());
            std::fs::copy(&script, &copy)
                .unwrap_or_else(|e| panic!("copying {}: {e}", script.display()));
            let mut command = Command::new("node");
            command.arg(copy);
            (command, Some(dir))
        }
    };
    command
        .arg(sdk)
        .env("GATEWAY_URL", world.gateway.proxy_url())
        .env("GATEWAY_KEY", &world.key)
        .env("REVOKED_KEY", &world.revoked)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // Nothing from the developer's own environment may steer the SDKs elsewhere.
    for var in [
        "OPENAI_API_KEY",
        "OPENAI_ADMIN_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_CUSTOM_HEADERS",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_VERTEX_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_ENTERPRISE",
        "GOOGLE_GENAI_API_VERSION",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "NODE_OPTIONS",
    ] {
        command.env_remove(var);
    }
    let started = Instant::now();
    let output = tokio::time::timeout(CHECK_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} took over {CHECK_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("running {name} ({}): {e}", installed.display()));
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{name} failed ({}):\n{transcript}\nwhat the mock received:\n{}",
        output.status,
        describe(&world.mock.received())
    );
    eprintln!(
        "{name} passed in {:.1}s:\n{transcript}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        transcript.contains(&format!("all {sdk} SDK checks passed")),
        "{name} exited 0 without its closing line:\n{transcript}"
    );
}

/// One line per request: method, path and query, header names.
fn describe(received: &[Recorded]) -> String {
    received
        .iter()
        .map(|r| {
            let names: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
            format!("  {} {}  [{}]\n", r.method, r.uri, names.join(", "))
        })
        .collect()
}

/// Whether `haystack` holds enough of a proxy key's random part to be a leak.
pub(crate) fn holds_secret(haystack: &[u8], secret: &str) -> bool {
    let random = &secret.as_bytes()["sk-proxy-".len()..];
    haystack.windows(20).any(|w| w == &random[..20])
}

/// What the mock saw: exactly `expected` (method, path without query), each with `provider`'s
/// own credential in its own header, and no trace of either proxy key anywhere.
#[track_caller]
fn assert_provider_saw(world: &World, provider: &str, expected: &[(&str, &str)]) {
    let received = world.mock.received();
    let log = describe(&received);
    eprintln!("{provider} SDK requests as the provider saw them:\n{log}");
    let seen: Vec<(&str, &str)> = received
        .iter()
        .map(|r| {
            let path = r.uri.split_once('?').map_or(r.uri.as_str(), |(p, _)| p);
            (r.method.as_str(), path)
        })
        .collect();
    assert_eq!(seen, expected, "the requests that reached the provider");
    for request in &received {
        let what = format!("{} {}", request.method, request.uri);
        match provider {
            "openai" => assert_eq!(
                request.header("authorization"),
                Some(format!("Bearer {}", provider_key("openai")).as_str()),
                "{what}"
            ),
            "anthropic" => {
                assert_eq!(
                    request.header("x-api-key"),
                    Some(provider_key("anthropic")),
                    "{what}"
                );
                assert!(request.header("authorization").is_none(), "{what}");
            }
            "gemini" => {
                assert_eq!(
                    request.header("x-goog-api-key"),
                    Some(provider_key("gemini")),
                    "{what}"
                );
                assert!(request.header("authorization").is_none(), "{what}");
                let query = request.uri.split_once('?').map_or("", |(_, q)| q);
                assert!(
                    !query.split('&').any(|p| p.starts_with("key=")),
                    "{what}: a key in the query"
                );
            }
            _ => panic!("unknown provider {provider}"),
        }
        for secret in [&world.key, &world.revoked] {
            assert!(
                !holds_secret(request.uri.as_bytes(), secret),
                "{what}: proxy key in the URI"
            );
            assert!(
                !holds_secret(&request.body, secret),
                "{what}: proxy key in the body"
            );
            for (name, value) in &request.headers {
                assert!(
                    !holds_secret(value.as_bytes(), secret),
                    "{what}: proxy key in {name}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_openai_python_sdk_works_unchanged() {
    openai_sdk_works_unchanged(Language::Python).await;
}

#[tokio::test]
async fn the_openai_node_sdk_works_unchanged() {
    openai_sdk_works_unchanged(Language::Node).await;
}

#[tokio::test]
async fn the_anthropic_python_sdk_works_unchanged() {
    anthropic_sdk_works_unchanged(Language::Python).await;
}

#[tokio::test]
async fn the_anthropic_node_sdk_works_unchanged() {
    anthropic_sdk_works_unchanged(Language::Node).await;
}

#[tokio::test]
async fn the_google_genai_python_sdk_works_unchanged() {
    // google-genai for Python calls the `v1` API by default.
    google_genai_sdk_works_unchanged(Language::Python, "v1").await;
}

#[tokio::test]
async fn the_google_genai_node_sdk_works_unchanged() {
    // @google/genai for Node calls `v1beta` by default.
    google_genai_sdk_works_unchanged(Language::Node, "v1beta").await;
}

async fn openai_sdk_works_unchanged(language: Language) {
    let world = world().await;
    run_checks(&world, language, "openai").await;
    let per_route = [
        ("POST", "/openai/v1/chat/completions"),
        ("POST", "/openai/v1/chat/completions"),
        ("POST", "/openai/v1/chat/completions"),
        ("GET", "/openai/v1/models"),
    ];
    // `/openai/v1` and the bare `/v1` route reach the same upstream path; revoked: nothing.
    assert_provider_saw(&world, "openai", &[per_route, per_route].concat());
    // Every stream upstream asked for usage (SPEC §5), also the ones whose client did not: the
    // script saw no usage chunk there, so the gateway's extra chunk never reached the SDK.
    let streams: Vec<_> = world
        .mock
        .received()
        .iter()
        .map(Recorded::json)
        .filter(|body| body["stream"] == true)
        .collect();
    assert_eq!(streams.len(), 4, "two streams per route");
    for body in &streams {
        assert_eq!(
            body["stream_options"]["include_usage"], true,
            "the gateway asks for usage: {body}"
        );
    }
}

async fn anthropic_sdk_works_unchanged(language: Language) {
    let world = world().await;
    run_checks(&world, language, "anthropic").await;
    assert_provider_saw(
        &world,
        "anthropic",
        &[
            ("POST", "/anthropic/v1/messages"),
            ("POST", "/anthropic/v1/messages"),
            ("GET", "/anthropic/v1/models"),
        ],
    );
    for request in world.mock.received() {
        assert!(
            request.header("anthropic-version").is_some(),
            "the SDK's anthropic-version header is forwarded: {}",
            request.uri
        );
    }
}

/// `api_version`: the Gemini API version the SDK calls by default (`v1`, `v1beta`).
async fn google_genai_sdk_works_unchanged(language: Language, api_version: &str) {
    let world = world().await;
    run_checks(&world, language, "gemini").await;
    let model = format!("/gemini/{api_version}/models/gemini-2.0-flash");
    assert_provider_saw(
        &world,
        "gemini",
        &[
            ("POST", &format!("{model}:generateContent")),
            ("POST", &format!("{model}:streamGenerateContent")),
            ("GET", &format!("/gemini/{api_version}/models")),
            // files.upload: `start`, then the bytes, both through the gateway.
            ("POST", &format!("/gemini/upload/{api_version}/files")),
            ("POST", &format!("/gemini/upload/{api_version}/files")),
        ],
    );
    let received = world.mock.received();
    let stream = &received[1];
    assert!(
        stream.uri.ends_with("?alt=sse"),
        "the SDK streams with alt=sse: {}",
        stream.uri
    );
    let bytes = &received[4];
    assert!(
        bytes.uri.contains("upload_id=mock-upload-1"),
        "the bytes went to the upload session: {}",
        bytes.uri
    );
    assert_eq!(
        &bytes.body[..],
        b"twelve bytes",
        "the file's bytes, as sent"
    );
}
