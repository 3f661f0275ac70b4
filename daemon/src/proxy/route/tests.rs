//! Route resolution: the built-in and configured prefixes, the model each route names (path,
//! body, Azure deployment), and the paths refused before any key is looked at.

use super::*;
use http::Method;

/// The built-in routes only.
fn resolve(method: &Method, path: &str) -> Result<Route, GatewayError> {
    super::resolve(method, path, &Configured::default())
}

fn check(method: Method, path: &str, provider: Provider, upstream: &str, model: ModelSource) {
    let kind = Kind::of_builtin(provider).expect("built-in");
    let expected = Route::Provider(ProviderRoute {
        provider,
        kind,
        upstream_path: upstream.into(),
        model,
    });
    assert_eq!(
        resolve(&method, path).expect(path),
        expected,
        "{method} {path}"
    );
}

#[test]
fn configured_providers_route_under_their_name_in_their_kind() {
    let name = |n: &str| n.parse::<Provider>().expect("name");
    let configured = Configured::new([
        (Provider::Openai, Kind::Openai),
        (name("local-llama"), Kind::Openai),
        (name("claude-proxy"), Kind::Anthropic),
        (name("azure"), Kind::AzureOpenai),
    ]);
    let route = |method: Method, path: &str| match super::resolve(&method, path, &configured) {
        Ok(Route::Provider(route)) => (
            route.provider.as_str().to_owned(),
            route.kind,
            route.upstream_path,
            route.model,
        ),
        other => panic!("{path}: {other:?}"),
    };
    assert_eq!(
        route(Method::POST, "/local-llama/v1/chat/completions"),
        (
            "local-llama".into(),
            Kind::Openai,
            "/v1/chat/completions".into(),
            ModelSource::Body
        )
    );
    assert_eq!(
        route(Method::GET, "/local-llama/v1/models"),
        (
            "local-llama".into(),
            Kind::Openai,
            "/v1/models".into(),
            ModelSource::Listing
        )
    );
    assert_eq!(
        route(Method::POST, "/claude-proxy/v1/messages").1,
        Kind::Anthropic
    );
    assert_eq!(
        route(
            Method::POST,
            "/azure/openai/deployments/prod-4o/chat/completions"
        ),
        (
            "azure".into(),
            Kind::AzureOpenai,
            "/openai/deployments/prod-4o/chat/completions".into(),
            ModelSource::Path("prod-4o".into())
        )
    );
    assert_eq!(
        route(Method::POST, "/azure/openai/v1/chat/completions").3,
        ModelSource::Body
    );
    assert_eq!(
        route(Method::GET, "/azure/openai/v1/models").3,
        ModelSource::Listing
    );
    // Azure's pre-v1 Responses API names the deployment in the body, as POSTs do.
    assert_eq!(
        route(Method::POST, "/azure/openai/responses").3,
        ModelSource::Body
    );
    assert_eq!(
        route(Method::GET, "/azure/openai/responses/resp_1").3,
        ModelSource::None
    );
    // The built-in routes are unchanged; an unconfigured name is no route.
    assert_eq!(
        route(Method::POST, "/openai/v1/chat/completions").0,
        "openai"
    );
    for path in [
        "/groq/v1/chat/completions",
        "/local-llam/v1/models",
        "/local-llama",
        "",
    ] {
        let err = super::resolve(&Method::POST, path, &configured).expect_err(path);
        assert_eq!(err.code, ErrorCode::UnknownRoute, "{path}");
    }
    let err = super::resolve(
        &Method::POST,
        "/azure/openai/deployments/a%20b/chat/completions",
        &configured,
    )
    .expect_err("not a plain deployment");
    assert_eq!(err.code, ErrorCode::InvalidRequest);
}

#[test]
fn routes_of_the_spec_table() {
    use ModelSource::*;
    use Provider::*;
    check(
        Method::POST,
        "/openai/v1/chat/completions",
        Openai,
        "/v1/chat/completions",
        Body,
    );
    check(
        Method::POST,
        "/v1/chat/completions",
        Openai,
        "/v1/chat/completions",
        Body,
    );
    check(Method::GET, "/v1/models", Openai, "/v1/models", Listing);
    check(
        Method::GET,
        "/openai/v1/models/gpt-4o",
        Openai,
        "/v1/models/gpt-4o",
        Path("gpt-4o".into()),
    );
    check(Method::GET, "/openai/v1/files", Openai, "/v1/files", None);
    check(
        Method::POST,
        "/anthropic/v1/messages",
        Anthropic,
        "/v1/messages",
        Body,
    );
    check(
        Method::GET,
        "/anthropic/v1/models",
        Anthropic,
        "/v1/models",
        Listing,
    );
    check(
        Method::POST,
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
        Gemini,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        Path("gemini-2.0-flash".into()),
    );
    check(
        Method::POST,
        "/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent",
        Gemini,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
        Path("gemini-2.5-pro".into()),
    );
    check(
        Method::GET,
        "/gemini/v1beta/models",
        Gemini,
        "/v1beta/models",
        Listing,
    );
    check(
        Method::GET,
        "/gemini/v1beta/files",
        Gemini,
        "/v1beta/files",
        None,
    );
}

#[track_caller]
fn refused(path: &str) -> GatewayError {
    let err = resolve(&Method::POST, path).expect_err(path);
    assert_eq!(
        err.code,
        ErrorCode::InvalidRequest,
        "{path}: {}",
        err.message
    );
    assert!(!err.message.contains(path), "the path is not echoed");
    err
}

#[test]
fn paths_another_hop_could_rewrite_are_refused_on_every_route() {
    for path in [
        // The review's four: a forbidden Gemini model behind an allowed one.
        "/gemini/v1beta/models/gemini-2.0-flash/../gemini-2.5-pro:generateContent",
        "/gemini/v1beta/models/gemini-2.0-flash/%2e%2e/gemini-2.5-pro:generateContent",
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent/../../models/gemini-2.5-pro:streamGenerateContent",
        "/gemini/v1beta/models/gemini-2.0-flash-x%2F..%2Fgemini-2.5-pro:generateContent",
        // Dot segments, raw or encoded in any case, anywhere, on every provider.
        "/gemini/v1beta/models/./gemini-2.5-pro:generateContent",
        "/gemini/v1beta/models/x/%2E%2e/gemini-2.5-pro:generateContent",
        "/gemini/v1beta/models/x/.%2E/gemini-2.5-pro:generateContent",
        "/gemini/v1beta/models/x/%2e/y",
        "/gemini/v1beta/models/x/..",
        "/gemini/v1beta/models/x/../",
        "/gemini/v1beta/models/x/..;a=b/gemini-2.5-pro:generateContent",
        "/openai/v1/../v1/chat/completions",
        "/openai/../admin",
        "/v1/./chat/completions",
        "/anthropic/v1/%2e%2e/v1/messages",
        "/anthropic/./v1/messages",
        "/../openai/v1/chat/completions",
        "/healthz/..",
        // Encoded slashes and backslashes, backslashes, empty segments.
        "/openai/v1/chat%2fcompletions",
        "/anthropic/v1%5Cmessages",
        "/anthropic/v1%5cmessages",
        "/openai/v1\\chat\\completions",
        "/openai//v1/chat/completions",
        "/openai/v1//chat/completions",
        "//v1/chat/completions",
        "/gemini/v1beta/models//gemini-2.5-pro:generateContent",
        // Double encoding, decoded as often as it occurs.
        "/gemini/v1beta/models/x/%252e%252e/gemini-2.5-pro:generateContent",
        "/gemini/v1beta/models/x%25252Fy:generateContent",
    ] {
        refused(path);
    }
}

/// Found by fuzzing (`fuzz/corpus/route/`): a hop that decodes twice turns `%%35C`
/// into `%5C` and then `\\`, and `%%32e` into `.`, with no `%25` in sight; and one that
/// decodes once turns `..%3B` into a dot segment with a path parameter.
#[test]
fn escapes_that_decode_to_escapes_are_judged_decoded() {
    for path in [
        "/openai/v1/chat%%35Ccompletions",
        "/openai/v1/chat%%32Fcompletions",
        "/openai/v1/%%32e%%32e/v1/chat/completions",
        "/anthropic/v1/%2%65%2%65/v1/messages",
        "/openai/v1/..%3B/v1/chat/completions",
        "/openai/v1/%2e%2e%3bx/v1/chat/completions",
    ] {
        refused(path);
    }
    refused("/openai/v1/files/a%2525252525252541");
    check(
        Method::GET,
        "/openai/v1/files/a%252541",
        Provider::Openai,
        "/v1/files/a%252541",
        ModelSource::None,
    );
}

#[test]
fn ordinary_paths_with_dots_and_percents_still_route() {
    use ModelSource::*;
    use Provider::*;
    check(
        Method::POST,
        "/gemini/v1beta/models/gemini-2.0-flash-001:generateContent/",
        Gemini,
        "/v1beta/models/gemini-2.0-flash-001:generateContent/",
        Path("gemini-2.0-flash-001".into()),
    );
    check(
        Method::GET,
        "/openai/v1/models/ft:gpt-4o-mini:org::abc",
        Openai,
        "/v1/models/ft:gpt-4o-mini:org::abc",
        Path("ft:gpt-4o-mini:org::abc".into()),
    );
    check(
        Method::GET,
        "/openai/v1/files/file-abc.../content",
        Openai,
        "/v1/files/file-abc.../content",
        None,
    );
    check(
        Method::GET,
        "/openai/v1/files/a%20b",
        Openai,
        "/v1/files/a%20b",
        None,
    );
    check(
        Method::GET,
        "/gemini/v1beta/models/veo-2.0-generate-001/operations/abc123",
        Gemini,
        "/v1beta/models/veo-2.0-generate-001/operations/abc123",
        Path("veo-2.0-generate-001".into()),
    );
    check(
        Method::GET,
        "/gemini/v1beta/models/gemini-2.5-pro",
        Gemini,
        "/v1beta/models/gemini-2.5-pro",
        Path("gemini-2.5-pro".into()),
    );
    check(
        Method::GET,
        "/gemini/v1beta/models/",
        Gemini,
        "/v1beta/models/",
        Listing,
    );
}

#[test]
fn a_gemini_model_is_one_plain_segment() {
    for path in [
        "/gemini/v1beta/models/gemini%2d2.5-pro:generateContent",
        "/gemini/v1beta/models/gemini-2.5-pro%3Ax:generateContent",
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent:x",
        "/gemini/v1beta/models/gemini-2.0-flash:",
        "/gemini/v1beta/models/:generateContent",
        "/gemini/v1beta/models/..:generateContent",
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent/x",
        "/gemini/v1beta/models/gemini-2.0-flash:countTokens/models/gemini-2.5-pro",
        "/gemini/v1beta/models/gemini-2.0-flash/models/gemini-2.5-pro:generateContent",
        "/gemini/v1beta/models/gemini-2.0-flash/x:generateContent",
    ] {
        let err = refused(path);
        assert!(err.message.contains("models/{model}:{method}"), "{path}");
    }
}

#[test]
fn secrets_in_paths_are_cut_to_their_display_prefix() {
    let key = format!("sk-proxy-{}", "A1b2C3d4".repeat(5));
    assert_eq!(
        redact_secrets(&format!("/nothing/{key}")),
        "/nothing/sk-proxy-A1b2…"
    );
    assert_eq!(
        redact_secrets(&format!("/{key}/x/{key}")),
        "/sk-proxy-A1b2…/x/sk-proxy-A1b2…"
    );
    assert_eq!(
        redact_secrets("/x/sk-ant-api03-abcdefgh_ijkl-mnop/y"),
        "/x/sk-ant-api0…/y"
    );
    assert_eq!(redact_secrets("/x/AIzaSyAbcdefghijk"), "/x/AIzaSyAb…");
    assert_eq!(redact_secrets("/x/gwadm-abcdefghijkl"), "/x/gwadm-abcd…");
    assert_eq!(redact_secrets("/x/sk-proj-abcdefgh"), "/x/sk-proj-abcd…");
    assert_eq!(redact_secrets("/x?sk-abcdefgh"), "/x?sk-abcd…");
    // Not secrets: inside a word, or no longer than a display prefix.
    for plain in [
        "/v1/tasks-abcdefgh",
        "/v1/disk-abcdefgh",
        "/v1/sk-abc",
        "/v1/chat/completions",
        "/",
    ] {
        assert_eq!(redact_secrets(plain), plain);
        assert!(matches!(redact_secrets(plain), Cow::Borrowed(_)));
    }

    let err = resolve(&Method::GET, &format!("/nothing/{key}")).expect_err("unknown");
    assert_eq!(err.code, ErrorCode::UnknownRoute);
    assert!(!err.message.contains(&key), "{}", err.message);
    assert!(
        err.message.contains("/nothing/sk-proxy-A1b2…"),
        "{}",
        err.message
    );
}

#[test]
fn special_and_unknown_routes() {
    assert_eq!(resolve(&Method::GET, "/healthz").ok(), Some(Route::Health));
    assert_eq!(
        resolve(&Method::GET, "/gateway/v1/key").ok(),
        Some(Route::SelfService)
    );
    for method in [Method::POST, Method::DELETE, Method::PUT] {
        let err = resolve(&method, "/gateway/v1/key").expect_err("read-only");
        assert_eq!(err.code, ErrorCode::MethodNotAllowed, "{method}");
        assert!(resolve(&method, "/healthz").is_err(), "{method}");
    }
    assert!(resolve(&Method::HEAD, "/healthz").is_ok());
    for path in ["/", "/openai", "/azure/v1/chat", "/v2/x", "/healthz/x"] {
        let err = resolve(&Method::GET, path).expect_err(path);
        assert_eq!(err.code, ErrorCode::UnknownRoute, "{path}");
    }
}

proptest::proptest! {
    /// The shortcut passes only paths the full check passes: over paths made of the bytes
    /// the check looks for and a few others.
    #[test]
    fn a_path_the_shortcut_passes_passes_the_full_check(
        path in "[/.%\\\\;a-fA-F0-9:]{0,24}"
    ) {
        if has_nothing_to_check(&path) {
            proptest::prop_assert!(check_path_fully(&path).is_ok(), "{path:?}");
        }
    }
}

#[test]
fn the_shortcut_passes_plain_paths_and_leaves_the_rest_to_the_full_check() {
    assert!(has_nothing_to_check("/openai/v1/chat/completions"));
    for path in ["/a//b", "/a/./b", "/a/%2e/b", "/a\\b", "/v1/models/gpt-4.1"] {
        assert!(!has_nothing_to_check(path), "{path}");
    }
}
