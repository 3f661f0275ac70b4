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
    if has_nothing_to_check(path) {
        return Ok(());
    }
    check_path_fully(path)
}

/// [`check_path`] without its shortcut.
fn check_path_fully(path: &str) -> Result<(), GatewayError> {
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

/// Whether `path` holds nothing [`check_path`] refuses, by one pass over its bytes: no `%`
/// (so decoding changes nothing and nothing is encoded), no `.` (no dot segment), no
/// backslash and no empty segment. Most paths are so; the full check's searches and its
/// decoding round cost ~2k instructions a request (callgrind).
fn has_nothing_to_check(path: &str) -> bool {
    let mut previous = 0;
    path.bytes().all(|byte| {
        let empty_segment = byte == b'/' && previous == b'/';
        let fine = !(matches!(byte, b'%' | b'.' | b'\\') || empty_segment);
        previous = byte;
        fine
    })
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
mod tests;
