//! Reading the proxy key where each provider's SDK puts it (SPEC §3), and refusing one
//! anywhere else the gateway would pass on: a key pasted into the path, a query parameter the
//! gateway does not read (`?api_key=`), a header it does not drop (`api-key`, a cookie) or the
//! model name would otherwise be forwarded to the provider (its logs, its dashboards) and,
//! for a model, stored in the usage table.

use std::borrow::Cow;
use std::sync::LazyLock;

use gateway_shared::ErrorCode;
use gateway_shared::key::{ADMIN_TOKEN_PREFIX, DISPLAY_CHARS, PROXY_KEY_PREFIX};
use memchr::memmem::Finder;

use crate::config::Kind;
use crate::error::GatewayError;

/// The presented key, or `None` when the request carries none. Azure OpenAI's SDK sends it
/// in `api-key` (or as a bearer token when given one).
pub fn presented<'a>(
    kind: Kind,
    headers: &'a http::HeaderMap,
    query: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = || {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::http_util::bearer_token)
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let found = match kind {
        Kind::Openai => bearer(),
        Kind::Anthropic => header("x-api-key").or_else(bearer),
        Kind::Gemini => header("x-goog-api-key").or_else(|| query_key(query)),
        Kind::AzureOpenai => header("api-key").or_else(bearer),
    };
    found.filter(|key| !key.is_empty())
}

fn query_key(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("key="))
}

/// The query string without `key=…`, so the proxy key never reaches the provider.
pub fn strip_key_param(query: Option<&str>) -> Option<String> {
    let query = query?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.starts_with("key=") && *pair != "key")
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// 400 `invalid_request` when the path or the query the gateway would forward (the query
/// after `key=` is stripped) holds something shaped like a proxy key or an admin token, raw or
/// percent-encoded (also twice over). Refused rather than stripped: the gateway cannot know
/// what else the client meant by that part of its URL, and a client that put its key there
/// learns it did, with the key cut to its display prefix.
pub fn refuse_forwarded_secret(path: &str, query: Option<&str>) -> Result<(), GatewayError> {
    for (part, text) in [("path", Some(path)), ("query string", query)] {
        let Some(text) = text else { continue };
        if let Some(shown) = secret_in_url_part(text) {
            return Err(GatewayError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "The request's {part} contains a gateway key ({shown}), which would be \
                     passed on to the provider: send the key only in the header the \
                     provider's SDK uses, and rotate it if it was logged anywhere."
                ),
            ));
        }
    }
    Ok(())
}

/// 400 `invalid_request` when a request header that would be forwarded (any but the
/// credential and hop-by-hop headers, which are dropped) holds something shaped like a proxy
/// key or an admin token: an Azure-style `api-key`, a cookie, a custom header. Headers are
/// passed on as sent, so such a key would reach the provider just as one in the path would.
pub fn refuse_forwarded_header_secret(headers: &http::HeaderMap) -> Result<(), GatewayError> {
    for (name, value) in headers {
        if super::headers::is_dropped(name) {
            continue;
        }
        if let Some(shown) = secret_in(&String::from_utf8_lossy(value.as_bytes())) {
            return Err(GatewayError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "The request's {name} header contains a gateway key ({shown}), which \
                     would be passed on to the provider: send the key only in the header the \
                     provider's SDK uses, and rotate it if it was logged anywhere."
                ),
            ));
        }
    }
    Ok(())
}

/// 400 `invalid_request` when a model name holds a key, a control character or an invisible
/// or text-direction one (a line separator, a bidirectional override): it would be forwarded,
/// echoed in errors and stored in the usage table as sent, and shown to the operator.
pub fn check_model_name(model: &str) -> Result<(), GatewayError> {
    if let Some(shown) = secret_in(model) {
        return Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            format!(
                "The request's model contains a gateway key ({shown}); send the key only in \
                 the header the provider's SDK uses, and rotate it."
            ),
        ));
    }
    if model
        .chars()
        .any(|c| c.is_control() || gateway_shared::validate::is_invisible_format(c))
    {
        return Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            "The request's model must not contain control, invisible or text-direction \
             characters.",
        ));
    }
    Ok(())
}

/// [`secret_in`] of a URL part as every later hop may decode it: raw, then percent-decoded
/// for as long as decoding changes it.
fn secret_in_url_part(text: &str) -> Option<String> {
    let mut current = Cow::Borrowed(text);
    // Each round at least shortens the text, so this ends; a few rounds cover any real case.
    for _ in 0..4 {
        if let Some(found) = secret_in(&current) {
            return Some(found);
        }
        if !current.contains('%') {
            return None;
        }
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == *current {
            return None;
        }
        current = Cow::Owned(decoded);
    }
    None
}

/// The first proxy key or admin token prefix in `text`, shown as a display prefix
/// (`sk-proxy-a1b2…`): never more of it.
fn secret_in(text: &str) -> Option<String> {
    // Searchers built once: `memmem::find` builds one per call, and this runs on every
    // forwarded header and every model name (issue #19).
    static PREFIXES: LazyLock<[(Finder<'static>, &'static str); 2]> = LazyLock::new(|| {
        [PROXY_KEY_PREFIX, ADMIN_TOKEN_PREFIX].map(|prefix| (Finder::new(prefix), prefix))
    });
    PREFIXES
        .iter()
        .filter_map(|(finder, prefix)| finder.find(text.as_bytes()).map(|at| (at, *prefix)))
        .min()
        .map(|(at, prefix)| {
            let shown: String = text[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .take(DISPLAY_CHARS)
                .collect();
            format!("{prefix}{shown}…")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("value"));
        }
        map
    }

    #[test]
    fn each_provider_reads_its_own_places() {
        let bearer = headers(&[("authorization", "Bearer sk-proxy-a")]);
        assert_eq!(presented(Kind::Openai, &bearer, None), Some("sk-proxy-a"));
        assert_eq!(
            presented(Kind::Anthropic, &bearer, None),
            Some("sk-proxy-a")
        );
        assert_eq!(presented(Kind::Gemini, &bearer, None), None);
        let x_api = headers(&[("x-api-key", "sk-proxy-b")]);
        assert_eq!(presented(Kind::Anthropic, &x_api, None), Some("sk-proxy-b"));
        assert_eq!(presented(Kind::Openai, &x_api, None), None);
        let goog = headers(&[("x-goog-api-key", "sk-proxy-c")]);
        assert_eq!(presented(Kind::Gemini, &goog, None), Some("sk-proxy-c"));
        let azure = headers(&[("api-key", "sk-proxy-e")]);
        assert_eq!(
            presented(Kind::AzureOpenai, &azure, None),
            Some("sk-proxy-e")
        );
        assert_eq!(presented(Kind::Openai, &azure, None), None);
        assert_eq!(
            presented(Kind::AzureOpenai, &bearer, None),
            Some("sk-proxy-a")
        );
        let none = headers(&[]);
        assert_eq!(
            presented(Kind::Gemini, &none, Some("alt=sse&key=sk-proxy-d")),
            Some("sk-proxy-d")
        );
        assert_eq!(
            presented(
                Kind::Openai,
                &headers(&[("authorization", "Bearer ")]),
                None
            ),
            None
        );
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for value in [
            "Bearer sk-proxy-a",
            "bearer sk-proxy-a",
            "BEARER sk-proxy-a",
            "bEaReR sk-proxy-a",
            "Bearer    sk-proxy-a  ",
            "Bearer\tsk-proxy-a",
        ] {
            let with = headers(&[("authorization", value)]);
            assert_eq!(
                presented(Kind::Openai, &with, None),
                Some("sk-proxy-a"),
                "{value:?}"
            );
            assert_eq!(
                presented(Kind::Anthropic, &with, None),
                Some("sk-proxy-a"),
                "{value:?}"
            );
        }
        for value in [
            "Basic sk-proxy-a",
            "Bearersk-proxy-a",
            "Bearer",
            "sk-proxy-a",
            "Bearer   ",
        ] {
            let with = headers(&[("authorization", value)]);
            assert_eq!(presented(Kind::Openai, &with, None), None, "{value:?}");
        }
        // Two credentials in one header: presented whole, so the checksum refuses it.
        let two = headers(&[("authorization", "BEARER sk-proxy-a, Bearer sk-proxy-b")]);
        assert_eq!(
            presented(Kind::Openai, &two, None),
            Some("sk-proxy-a, Bearer sk-proxy-b")
        );
    }

    #[test]
    fn the_provider_s_own_header_wins() {
        let both = headers(&[
            ("authorization", "BEARER sk-proxy-bearer"),
            ("x-api-key", "sk-proxy-x"),
        ]);
        assert_eq!(presented(Kind::Anthropic, &both, None), Some("sk-proxy-x"));
        let goog = headers(&[("x-goog-api-key", "sk-proxy-header")]);
        assert_eq!(
            presented(Kind::Gemini, &goog, Some("key=sk-proxy-query")),
            Some("sk-proxy-header")
        );
    }

    #[test]
    fn a_key_in_the_forwarded_path_or_query_is_refused_and_shown_cut() {
        let key = "sk-proxy-AbCd1234567890123456789012345678901234";
        for (path, query) in [
            (format!("/{key}/v1/chat/completions"), None),
            (
                "/v1/chat/completions".to_owned(),
                Some(format!("api_key={key}")),
            ),
            (
                "/v1/x".to_owned(),
                Some(format!("a=1&token=%73k-proxy-{}", &key[9..])),
            ),
            (
                "/v1/x".to_owned(),
                Some(format!("t=%2573k%252Dproxy-{}", &key[9..])),
            ),
            (
                "/v1/x".to_owned(),
                Some("t=gwadm-0123456789abcdef".to_owned()),
            ),
        ] {
            let err = refuse_forwarded_secret(&path, query.as_deref()).expect_err(&path);
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(!err.message.contains(&key[9..20]), "{}", err.message);
            assert!(
                err.message.contains("sk-proxy-AbCd…") || err.message.contains("gwadm-0123…"),
                "{}",
                err.message
            );
        }
        for (path, query) in [
            ("/v1/chat/completions", None),
            (
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                Some("alt=sse"),
            ),
            ("/v1/files/file-abc", Some("limit=10&after=sk-1")),
        ] {
            assert!(refuse_forwarded_secret(path, query).is_ok(), "{path}");
        }
    }

    #[test]
    fn a_key_in_a_forwarded_header_is_refused_and_one_in_a_dropped_header_is_not() {
        let key = "sk-proxy-AbCd1234567890123456789012345678901234";
        for (name, value) in [
            ("api-key", key.to_owned()),
            ("cookie", format!("a=1; t={key}")),
            ("x-forwarded-token", "gwadm-0123456789abcdef".to_owned()),
        ] {
            let err = refuse_forwarded_header_secret(&headers(&[(name, &value)])).expect_err(name);
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(err.message.contains(name), "{}", err.message);
            assert!(!err.message.contains(&key[13..]), "{}", err.message);
            assert!(!err.message.contains("456789abc"), "{}", err.message);
        }
        let dropped = headers(&[
            ("authorization", &format!("Bearer {key}")),
            ("x-api-key", key),
            ("x-goog-api-key", key),
            ("proxy-authorization", key),
            ("content-type", "application/json"),
        ]);
        assert!(refuse_forwarded_header_secret(&dropped).is_ok());
    }

    #[test]
    fn a_model_name_with_a_key_or_a_control_character_is_refused() {
        for model in [
            "sk-proxy-AbCd1234567890123456789012345678901234",
            "gpt-4o sk-proxy-AbCd12",
            "gpt-4o-mini\u{0}",
            "gpt\u{1b}]0;x\u{7}",
            "gpt-4o\u{85}",
            // Shown in the operator's usage table like a control character would be: a line
            // or paragraph separator, a bidirectional override, a zero-width space.
            "gpt-4o\u{2028}gpt-3.5",
            "gpt-4o\u{2029}",
            "gpt-4o\u{202e}inim",
            "gpt\u{200b}-4o",
        ] {
            let err = check_model_name(model).expect_err(model);
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(!err.message.contains("1234567"), "{}", err.message);
        }
        for model in [
            "gpt-4o-mini",
            "claude-sonnet-4-5",
            "models/gemini-2.5-pro",
            "😀",
        ] {
            assert!(check_model_name(model).is_ok(), "{model}");
        }
    }

    #[test]
    fn key_param_is_stripped() {
        assert_eq!(
            strip_key_param(Some("alt=sse&key=sk-proxy-x")),
            Some("alt=sse".into())
        );
        assert_eq!(strip_key_param(Some("key=sk-proxy-x")), None);
        assert_eq!(strip_key_param(Some("a=1&b=2")), Some("a=1&b=2".into()));
        assert_eq!(strip_key_param(Some("monkey=1")), Some("monkey=1".into()));
        assert_eq!(strip_key_param(None), None);
    }
}
