//! Reading the proxy key where each provider's SDK puts it (SPEC §3).

use gateway_shared::Provider;

/// The presented key, or `None` when the request carries none.
pub fn presented<'a>(
    provider: Provider,
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
    let found = match provider {
        Provider::Openai => bearer(),
        Provider::Anthropic => header("x-api-key").or_else(bearer),
        Provider::Gemini => header("x-goog-api-key").or_else(|| query_key(query)),
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
        assert_eq!(
            presented(Provider::Openai, &bearer, None),
            Some("sk-proxy-a")
        );
        assert_eq!(
            presented(Provider::Anthropic, &bearer, None),
            Some("sk-proxy-a")
        );
        assert_eq!(presented(Provider::Gemini, &bearer, None), None);
        let x_api = headers(&[("x-api-key", "sk-proxy-b")]);
        assert_eq!(
            presented(Provider::Anthropic, &x_api, None),
            Some("sk-proxy-b")
        );
        assert_eq!(presented(Provider::Openai, &x_api, None), None);
        let goog = headers(&[("x-goog-api-key", "sk-proxy-c")]);
        assert_eq!(presented(Provider::Gemini, &goog, None), Some("sk-proxy-c"));
        let none = headers(&[]);
        assert_eq!(
            presented(Provider::Gemini, &none, Some("alt=sse&key=sk-proxy-d")),
            Some("sk-proxy-d")
        );
        assert_eq!(
            presented(
                Provider::Openai,
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
                presented(Provider::Openai, &with, None),
                Some("sk-proxy-a"),
                "{value:?}"
            );
            assert_eq!(
                presented(Provider::Anthropic, &with, None),
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
            assert_eq!(presented(Provider::Openai, &with, None), None, "{value:?}");
        }
        // Two credentials in one header: presented whole, so the checksum refuses it.
        let two = headers(&[("authorization", "BEARER sk-proxy-a, Bearer sk-proxy-b")]);
        assert_eq!(
            presented(Provider::Openai, &two, None),
            Some("sk-proxy-a, Bearer sk-proxy-b")
        );
    }

    #[test]
    fn the_provider_s_own_header_wins() {
        let both = headers(&[
            ("authorization", "BEARER sk-proxy-bearer"),
            ("x-api-key", "sk-proxy-x"),
        ]);
        assert_eq!(
            presented(Provider::Anthropic, &both, None),
            Some("sk-proxy-x")
        );
        let goog = headers(&[("x-goog-api-key", "sk-proxy-header")]);
        assert_eq!(
            presented(Provider::Gemini, &goog, Some("key=sk-proxy-query")),
            Some("sk-proxy-header")
        );
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
