//! Which provider a request is for, what the provider's path is, and where its model is named
//! (SPEC §3's route table).
//!
//! The path is forwarded as sent, so it must mean the same thing to the gateway and to
//! whatever resolves it after us (the provider, an egress proxy, a CDN). [`check_path`]
//! refuses, with 400 `invalid_request`, every path another hop could rewrite into a different
//! one: a `.` or `..` segment, raw or percent-encoded in any case (also before a `;` path
//! parameter, which some servers strip), an encoded slash or backslash (`%2F`, `%5C`), a
//! backslash, an empty segment (`//`), and any of these encoded again (`%252e`, `%%32e`), or
//! hidden behind an encoded `;` (`..%3B`). Otherwise
//! `…/models/gemini-2.0-flash/../gemini-2.5-pro:generateContent` would pass the model check
//! as `gemini-2.0-flash` and be served as `gemini-2.5-pro`. This is part of routing, step 1
//! of the pipeline: a malformed path is refused before the key is looked up, like an unknown
//! route (SPEC §3 orders the key checks; a path no provider could be asked for is not one).
//!
//! Gemini names the model in one path segment, `models/{model}:{method}`; the model must be a
//! plain name (letters, digits, `.`, `-`, `_`), so that the name checked and priced is the
//! name the provider serves.
//!
//! A configured provider (SPEC §10) is routed under its own name, `/NAME/…`, only after the
//! built-in prefixes miss, so it adds nothing to a built-in request; its `kind` decides where
//! its model is named as for the built-in provider of that format. Azure OpenAI names it in
//! the path, `openai/deployments/{deployment}/…` (the deployment, mapped to its model by the
//! pipeline), or in the body on the newer `openai/v1/…` paths.
//!
//! Paths are echoed (in the `unknown_route` message and the debug log) only through
//! [`redacted`], which cuts anything shaped like a secret to its display prefix.

use std::borrow::Cow;

use gateway_shared::key::redact_secrets;

use gateway_shared::{ErrorCode, Provider};

use crate::config::Kind;
use crate::error::GatewayError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Health,
    /// `GET /gateway/v1/key`: a key reads its own state.
    SelfService,
    Provider(ProviderRoute),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRoute {
    pub provider: Provider,
    /// The wire format the provider speaks.
    pub kind: Kind,
    /// The path to append to the provider's base URL, starting with `/`.
    pub upstream_path: String,
    pub model: ModelSource,
}

/// Where the model of a request is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A model listing (`GET /v1/models`): no model check (SPEC §3).
    Listing,
    /// Named in the path (Gemini `models/{model}:…`, `GET /v1/models/{id}`).
    Path(String),
    /// The JSON body's `model` field.
    Body,
    /// The request names no model (files, batches, …).
    None,
}

/// The configured providers' routes: name → kind, a handful at most (searched in order).
#[derive(Clone, Debug, Default)]
pub struct Configured(Vec<(Provider, Kind)>);

impl Configured {
    pub fn new(providers: impl IntoIterator<Item = (Provider, Kind)>) -> Configured {
        Configured(
            providers
                .into_iter()
                .filter(|(provider, _)| !provider.is_builtin())
                .collect(),
        )
    }

    /// Whether `path` is under a configured provider's route.
    pub fn routes(&self, path: &str) -> bool {
        !self.0.is_empty()
            && path
                .get(1..)
                .and_then(|p| p.split_once('/'))
                .is_some_and(|(name, _)| self.find(name).is_some())
    }

    /// The configured provider `/{name}/…` is for.
    fn find(&self, name: &str) -> Option<(Provider, Kind)> {
        self.0.iter().copied().find(|(p, _)| p.as_str() == name)
    }
}

pub fn resolve(
    method: &http::Method,
    path: &str,
    configured: &Configured,
) -> Result<Route, GatewayError> {
    check_path(path)?;
    if path == "/healthz" || path == "/gateway/v1/key" {
        // The gateway's own read-only routes: a POST or DELETE there must not look like it
        // did something (a client could think it revoked its key).
        if method != http::Method::GET && method != http::Method::HEAD {
            let mut allow = http::HeaderMap::new();
            allow.insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return Err(GatewayError::new(
                ErrorCode::MethodNotAllowed,
                format!("{path} only answers GET."),
            )
            .with_headers(allow));
        }
        return Ok(if path == "/healthz" {
            Route::Health
        } else {
            Route::SelfService
        });
    }
    let (provider, kind, rest) = if let Some(rest) = path.strip_prefix("/openai/") {
        (Provider::Openai, Kind::Openai, rest)
    } else if let Some(rest) = path.strip_prefix("/anthropic/") {
        (Provider::Anthropic, Kind::Anthropic, rest)
    } else if let Some(rest) = path.strip_prefix("/gemini/") {
        (Provider::Gemini, Kind::Gemini, rest)
    } else if path.starts_with("/v1/") {
        (Provider::Openai, Kind::Openai, &path[1..])
    } else if let Some((provider, kind, rest)) = path
        .get(1..)
        .and_then(|p| p.split_once('/'))
        .and_then(|(name, rest)| configured.find(name).map(|(p, k)| (p, k, rest)))
    {
        (provider, kind, rest)
    } else {
        return Err(GatewayError::new(
            ErrorCode::UnknownRoute,
            format!(
                "No route for {}. Use /openai/…, /v1/…, /anthropic/…, /gemini/… or a \
                 configured provider's /NAME/… with the provider's own path after the prefix.",
                redact_secrets(path)
            ),
        ));
    };
    // `rest` follows a '/' in `path`: the upstream path is that slash onwards.
    let upstream_path = path[path.len() - rest.len() - 1..].to_owned();
    let model = match kind {
        Kind::Gemini => gemini_model(method, rest)?,
        Kind::Openai | Kind::Anthropic => openai_style_model(method, rest),
        Kind::AzureOpenai => azure_model(method, rest)?,
    };
    Ok(Route::Provider(ProviderRoute {
        provider,
        kind,
        upstream_path,
        model,
    }))
}

/// OpenAI and Anthropic: `GET v1/models` lists, `GET v1/models/{id}` names a model in the
/// path, a `POST` names it in its JSON body.
fn openai_style_model(method: &http::Method, rest: &str) -> ModelSource {
    let rest = rest.trim_end_matches('/');
    if method == http::Method::GET {
        if rest == "v1/models" {
            return ModelSource::Listing;
        }
        if let Some(id) = rest.strip_prefix("v1/models/").filter(|id| !id.is_empty()) {
            return ModelSource::Path(id.to_owned());
        }
        return ModelSource::None;
    }
    if method == http::Method::POST {
        ModelSource::Body
    } else {
        ModelSource::None
    }
}

/// Azure OpenAI: `openai/deployments/{deployment}/…` names the deployment in the path (one
/// plain segment, mapped to its model by the pipeline); the newer `openai/v1/…` paths are
/// OpenAI's, the deployment in the body's `model`, as on any other `POST` (Azure's preview
/// `openai/responses`). `GET openai/models` and `openai/v1/models` list.
fn azure_model(method: &http::Method, rest: &str) -> Result<ModelSource, GatewayError> {
    let trimmed = rest.trim_end_matches('/');
    if let Some(after) = trimmed.strip_prefix("openai/deployments/") {
        let deployment = after.split('/').next().unwrap_or_default();
        if !is_model_name(deployment) {
            return Err(GatewayError::new(
                ErrorCode::InvalidRequest,
                "An Azure OpenAI deployment path must be openai/deployments/{deployment}/…, the \
                 deployment one segment of letters, digits, '.', '-' and '_'.",
            ));
        }
        return Ok(ModelSource::Path(deployment.to_owned()));
    }
    if method == http::Method::GET && trimmed == "openai/models" {
        return Ok(ModelSource::Listing);
    }
    match trimmed.strip_prefix("openai/") {
        Some(v1) if v1.starts_with("v1/") => Ok(openai_style_model(method, v1)),
        // Azure's other POST paths (`openai/responses?api-version=…`, the preview Responses
        // API) name the deployment in the body as the v1 ones do: read it there, or the
        // request would go unchecked against the globs and be priced as naming no model.
        _ if method == http::Method::POST => Ok(ModelSource::Body),
        _ => Ok(ModelSource::None),
    }
}

/// Gemini names the model in the path: `v1beta/models/{model}:generateContent`; a bare
/// `GET v1beta/models` lists, `GET v1beta/models/{model}` describes one, and
/// `v1beta/models/{model}/operations/{id}` polls a long-running operation of one. The model
/// is the one segment after `models`, up to its `:method`, and must be a plain name; a
/// `:method` ends the path.
fn gemini_model(method: &http::Method, rest: &str) -> Result<ModelSource, GatewayError> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    let Some(i) = segments.iter().position(|s| *s == "models") else {
        return Ok(ModelSource::None);
    };
    match &segments[i + 1..] {
        [] if method == http::Method::GET => Ok(ModelSource::Listing),
        [] => Ok(ModelSource::None),
        [named] => {
            let (model, call) = match named.split_once(':') {
                Some((model, call)) => (model, Some(call)),
                None => (*named, None),
            };
            if !is_model_name(model) || call.is_some_and(|c| !is_method_name(c)) {
                return Err(malformed_gemini_model());
            }
            Ok(ModelSource::Path(model.to_owned()))
        }
        [model, more @ ..] => {
            // A sub-resource of a model: no method on the model, none further down, and no
            // second model.
            if !is_model_name(model) || more.iter().any(|s| *s == "models" || s.contains(':')) {
                return Err(malformed_gemini_model());
            }
            Ok(ModelSource::Path((*model).to_owned()))
        }
    }
}

/// A model name as the providers spell them: starts with a letter or digit; letters, digits,
/// `.`, `-`, `_`. Nothing a later hop could decode or split (`%`, `/`, `:`).
fn is_model_name(name: &str) -> bool {
    name.as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn is_method_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn malformed_gemini_model() -> GatewayError {
    GatewayError::new(
        ErrorCode::InvalidRequest,
        "A Gemini model path must be models/{model}:{method}, the model one segment of letters, \
         digits, '.', '-' and '_'.",
    )
}

/// 400 `invalid_request` for a path that another hop could resolve to a different one (see
/// the module doc). Never echoes the path. The path is also judged percent-decoded as a
/// lenient server decodes it (an escape that is not one stays as it is), again as often as
/// that changes it: `%252e` and `%%32e` both decode once to `%2e` and twice to `.`, and `..%3B`
/// once to `..;`. A path still changing after [`MAX_DECODINGS`] is refused (none needs that
/// many, and the rounds are bounded).
pub fn check_path(path: &str) -> Result<(), GatewayError> {
    check_decoded_once(path)?;
    let mut decoded = Cow::Borrowed(path);
    for round in 0..=MAX_DECODINGS {
        let next = percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy();
        if next == decoded {
            break;
        }
        if round == MAX_DECODINGS {
            return Err(GatewayError::new(
                ErrorCode::InvalidRequest,
                "The request path is percent-encoded too many times; send the provider's path \
                 in its plain form.",
            ));
        }
        let next = next.into_owned();
        check_decoded_once(&next)?;
        decoded = Cow::Owned(next);
    }
    Ok(())
}

/// How many rounds of percent-decoding [`check_path`] follows.
const MAX_DECODINGS: usize = 4;

fn check_decoded_once(path: &str) -> Result<(), GatewayError> {
    let refuse = |what: &str| {
        Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            format!(
                "The request path contains {what}, which the gateway does not forward; send the \
                 provider's path in its plain form."
            ),
        ))
    };
    if path.contains('\\') {
        return refuse("a backslash");
    }
    if contains_ignore_case(path, "%2f") || contains_ignore_case(path, "%5c") {
        return refuse("an encoded slash or backslash (%2F, %5C)");
    }
    if path.contains("//") {
        return refuse("an empty segment (//)");
    }
    // A `;` starts path parameters, which some servers drop before resolving dot-segments.
    if path
        .split('/')
        .any(|segment| is_dot_segment(segment.split(';').next().unwrap_or_default()))
    {
        return refuse("a '.' or '..' segment (raw or percent-encoded)");
    }
    Ok(())
}

/// `.` or `..`, each dot raw or as `%2e` in any case.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
    }
    (1..=2).contains(&dots)
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
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
}
