//! Which provider a request is for, what the provider's path is, and where its model is named
//! (SPEC §3's route table).

use gateway_shared::{ErrorCode, Provider};

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

pub fn resolve(method: &http::Method, path: &str) -> Result<Route, GatewayError> {
    if path == "/healthz" {
        return Ok(Route::Health);
    }
    if path == "/gateway/v1/key" {
        return Ok(Route::SelfService);
    }
    let (provider, rest) = if let Some(rest) = path.strip_prefix("/openai/") {
        (Provider::Openai, rest)
    } else if let Some(rest) = path.strip_prefix("/anthropic/") {
        (Provider::Anthropic, rest)
    } else if let Some(rest) = path.strip_prefix("/gemini/") {
        (Provider::Gemini, rest)
    } else if path.starts_with("/v1/") {
        (Provider::Openai, &path[1..])
    } else {
        return Err(GatewayError::new(
            ErrorCode::UnknownRoute,
            format!(
                "No route for {path}. Use /openai/…, /v1/…, /anthropic/… or /gemini/… with the \
                 provider's own path after the prefix."
            ),
        ));
    };
    // `rest` follows a '/' in `path`: the upstream path is that slash onwards.
    let upstream_path = path[path.len() - rest.len() - 1..].to_owned();
    let model = match provider {
        Provider::Gemini => gemini_model(method, rest),
        Provider::Openai | Provider::Anthropic => openai_style_model(method, rest),
    };
    Ok(Route::Provider(ProviderRoute {
        provider,
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

/// Gemini names the model in the path: `v1beta/models/{model}:generateContent`; a bare
/// `GET v1beta/models` lists.
fn gemini_model(method: &http::Method, rest: &str) -> ModelSource {
    let rest = rest.trim_end_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.iter().position(|s| *s == "models") {
        Some(i) if i + 1 == segments.len() && method == http::Method::GET => ModelSource::Listing,
        Some(i) if i + 1 < segments.len() => {
            let model = segments[i + 1].split(':').next().unwrap_or_default();
            if model.is_empty() {
                ModelSource::None
            } else {
                ModelSource::Path(model.to_owned())
            }
        }
        _ => ModelSource::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn check(method: Method, path: &str, provider: Provider, upstream: &str, model: ModelSource) {
        let expected = Route::Provider(ProviderRoute {
            provider,
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

    #[test]
    fn special_and_unknown_routes() {
        assert_eq!(resolve(&Method::GET, "/healthz").ok(), Some(Route::Health));
        assert_eq!(
            resolve(&Method::GET, "/gateway/v1/key").ok(),
            Some(Route::SelfService)
        );
        for path in ["/", "/openai", "/azure/v1/chat", "/v2/x", "/healthz/x"] {
            let err = resolve(&Method::GET, path).expect_err(path);
            assert_eq!(err.code, ErrorCode::UnknownRoute, "{path}");
        }
    }
}
