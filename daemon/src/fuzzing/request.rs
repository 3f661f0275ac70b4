//! Fuzzing the request side: route resolution, the client's address and credential, and the
//! JSON body skim with the two rewrites made to it (output clamp, OpenAI `include_usage`).
//! Requests come from clients the gateway does not trust: whatever they send must be answered
//! with an error or routed to exactly what was checked.
//!
//! The calls into `model.rs` and `rewrite.rs` are all here, so a change there meets the
//! fuzzing in this one place.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use gateway_shared::{ErrorCode, Provider};

use crate::config::Kind;
use ipnet::IpNet;
use serde_json::{Map, Value};

use super::selector;
use crate::proxy::model::{self, Fields};
use crate::proxy::route::{self, ModelSource, Route};
use crate::proxy::{client_ip, credential, rewrite};

/// Selector: the method (`% 6`: GET, POST, PUT, DELETE, HEAD, PATCH). The rest is the path.
pub fn route(data: &[u8]) {
    let Some((selector, path)) = selector(data) else {
        return;
    };
    let methods = [
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::HEAD,
        http::Method::PATCH,
    ];
    let method = &methods[usize::from(selector % 6)];
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    check_route(method, path);
    // As the pipeline gets it: the path hyper's URI parser leaves.
    if let Ok(parsed) = http::uri::PathAndQuery::try_from(path) {
        check_route(method, parsed.path());
    }
}

/// Selector: the output limit a clamp would set (`% 4`: none, 1, 256, 100,000 tokens) and, by
/// `/ 4 % 4`, the content type (JSON, none, `text/plain`, multipart). The rest is the body,
/// tried on a route of each provider.
pub fn request_body(data: &[u8]) {
    let Some((selector, body)) = selector(data) else {
        return;
    };
    let limit = [None, Some(1), Some(256), Some(100_000)][usize::from(selector % 4)];
    let content_type = [
        Some("application/json"),
        None,
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
    ][usize::from(selector / 4 % 4)];
    let mut headers = http::HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
    }
    let body = Bytes::copy_from_slice(body);
    let gemini = "gemini-2.0-flash";
    for (provider, path, source) in [
        (Kind::Openai, "/v1/chat/completions", ModelSource::Body),
        (Kind::Openai, "/v1/completions", ModelSource::Body),
        (Kind::Openai, "/v1/responses", ModelSource::Body),
        (Kind::Anthropic, "/v1/messages", ModelSource::Body),
        (
            Kind::Gemini,
            "/v1beta/models/gemini-2.0-flash:generateContent",
            ModelSource::Path(gemini.to_owned()),
        ),
    ] {
        let request = BodyRequest {
            provider,
            path,
            source,
            limit,
        };
        request.check(&headers, &body);
    }
}

/// The first line is the TCP peer (an address with a port) and the trusted proxies, separated
/// by spaces; the second, the query string; every further line a header, `name: value`.
pub fn client_headers(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut words = first.split_whitespace();
    let peer: SocketAddr = words
        .next()
        .and_then(|peer| peer.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([10, 0, 0, 1], 40000)));
    let trusted: Vec<IpNet> = words
        .filter_map(gateway_shared::validate::parse_ip_rule)
        .collect();
    let query_line = lines.next().unwrap_or_default();
    let query = std::str::from_utf8(query_line)
        .ok()
        .and_then(|query| http::uri::PathAndQuery::try_from(format!("/x?{query}")).ok());
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    check_client_ip(peer, &headers, &trusted);
    check_credential(&headers, query.as_ref().and_then(|q| q.query()));
}

fn check_route(method: &http::Method, path: &str) {
    let provider_route = match route::resolve(method, path, &route::Configured::default()) {
        Err(err) => {
            assert!(
                matches!(
                    err.code,
                    ErrorCode::UnknownRoute
                        | ErrorCode::InvalidRequest
                        | ErrorCode::MethodNotAllowed
                ),
                "{:?}",
                err.code
            );
            return;
        }
        Ok(Route::Health) => return assert_eq!(path, "/healthz"),
        Ok(Route::SelfService) => return assert_eq!(path, "/gateway/v1/key"),
        Ok(Route::Provider(provider_route)) => provider_route,
    };
    let upstream = provider_route.upstream_path.as_str();
    let prefix = match provider_route.provider {
        Provider::Openai if path.starts_with("/v1/") => "",
        Provider::Openai => "/openai",
        Provider::Anthropic => "/anthropic",
        Provider::Gemini => "/gemini",
        Provider::Configured(_) => unreachable!("no provider is configured here"),
    };
    assert_eq!(
        format!("{prefix}{upstream}"),
        path,
        "the upstream path is not the path after its prefix"
    );
    // Decoded as often as a later hop might, the forwarded path still means what was checked.
    let mut decoded = upstream.to_owned();
    loop {
        assert_plain_path(&decoded, path);
        let next = percent_decode_leniently(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    if let ModelSource::Path(model) = &provider_route.model {
        assert!(!model.is_empty(), "an empty model name from {path:?}");
        if provider_route.provider == Provider::Gemini {
            assert!(
                model
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')),
                "the Gemini model {model:?} of {path:?} is not a plain name"
            );
        }
    }
}

/// No backslash, encoded slash or backslash, empty segment, or dot segment (also before a
/// `;` path parameter, which some servers strip before resolving dot segments).
fn assert_plain_path(decoded: &str, path: &str) {
    let lower = decoded.to_ascii_lowercase();
    assert!(
        !decoded.contains('\\') && !lower.contains("%2f") && !lower.contains("%5c"),
        "{path:?} reaches a slash or backslash as {decoded:?}"
    );
    assert!(
        !decoded.contains("//"),
        "{path:?} reaches an empty segment as {decoded:?}"
    );
    for segment in decoded.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        assert!(
            segment != "." && segment != "..",
            "{path:?} reaches a dot segment as {decoded:?}"
        );
    }
}

/// One round of percent-decoding as a lenient server does it: `%XY` with two hex digits is
/// the byte, anything else stays as it is (a bare `%` included). Invalid UTF-8 becomes U+FFFD.
fn percent_decode_leniently(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[at] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(at + 1).and_then(|b| hex(*b)),
                bytes.get(at + 2).and_then(|b| hex(*b)),
            )
        {
            out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client is the peer unless the peer is a trusted proxy; then one of the forwarded hops,
/// every hop to its right a trusted proxy.
fn check_client_ip(peer: SocketAddr, headers: &http::HeaderMap, trusted: &[IpNet]) {
    let Some(client) = client_ip::resolve(peer, headers, trusted) else {
        assert!(
            client_ip::is_trusted(peer.ip().to_canonical(), trusted),
            "an untrusted peer made the client unknown"
        );
        return;
    };
    let peer_ip = peer.ip().to_canonical();
    if !client_ip::is_trusted(peer_ip, trusted) {
        assert_eq!(client, peer_ip, "an untrusted peer chose its address");
        return;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| {
            let hop = hop.trim();
            hop.parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .map(|ip| ip.to_canonical())
        .collect();
    if client == peer_ip && hops.is_empty() {
        return;
    }
    let position = hops
        .iter()
        .rposition(|hop| *hop == client)
        .unwrap_or_else(|| panic!("the client {client} is neither the peer nor a hop"));
    assert!(
        hops[position + 1..]
            .iter()
            .all(|hop| client_ip::is_trusted(*hop, trusted)),
        "the client {client} was taken past an untrusted hop"
    );
}

/// A presented key is a non-empty piece of one header or the query, and the query the
/// provider gets has no `key=` left in it.
fn check_credential(headers: &http::HeaderMap, query: Option<&str>) {
    for provider in Kind::ALL {
        let Some(key) = credential::presented(provider, headers, query) else {
            continue;
        };
        assert!(!key.is_empty());
        let in_headers = headers
            .values()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(key));
        assert!(
            in_headers || query.is_some_and(|q| q.contains(key)),
            "{provider}: the key {key:?} is not what the client sent"
        );
    }
    let stripped = credential::strip_key_param(query);
    if let Some(stripped) = &stripped {
        for pair in stripped.split('&') {
            assert!(
                !pair.starts_with("key=") && pair != "key",
                "the key parameter reaches the provider: {stripped:?}"
            );
        }
    }
}

/// One body on one route, as the pipeline reads and rewrites it.
struct BodyRequest {
    provider: Kind,
    path: &'static str,
    source: ModelSource,
    /// The output limit a clamp would set, when the request asks for more (or names none).
    limit: Option<u64>,
}

/// Top-level fields the rewrites may change; every other one must come through as it was.
const REWRITTEN: &[&str] = &[
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "generationConfig",
    "generation_config",
    "stream_options",
];

impl BodyRequest {
    fn check(&self, headers: &http::HeaderMap, body: &Bytes) {
        let skimmed = model::json_body(&self.source, headers, body);
        // The skim must agree with a full parse: what one accepts, so does the other, and
        // every field the pipeline acts on reads the same.
        let full = serde_json::from_slice::<Value>(model::without_bom(body));
        let fields = match skimmed {
            Err(err) => {
                assert_eq!(err.code, ErrorCode::InvalidRequest);
                // An object may be refused for one reason only: it gives a member the
                // gateway reads twice (the provider might read the other one).
                assert!(
                    !matches!(full, Ok(Value::Object(_))) || err.message.contains("twice"),
                    "the skim refused a JSON object: {}",
                    err.message
                );
                return;
            }
            Ok(None) => return,
            Ok(Some(fields)) => fields,
        };
        let object = match full {
            Ok(Value::Object(object)) => Some(object),
            Ok(other) => panic!("the skim took {other} for an object"),
            // The skim passes over fields it does not read without building them, so what
            // serde_json cannot build is not an error there.
            Err(err) if cannot_build(&err, body) => None,
            Err(err) => panic!("the skim accepted a body that does not parse: {err}"),
        };
        let named = model::named(&self.source, Some(&fields));
        if let Some(object) = &object {
            assert_eq!(
                self.read(&fields),
                self.read(object),
                "the skim reads other fields than a full parse"
            );
            let expected = match &self.source {
                ModelSource::Path(model) => Some(Value::String(model.clone())),
                _ => object.get("model").filter(|m| !m.is_null()).cloned(),
            };
            match (&named, expected) {
                (Ok(named), expected) => {
                    assert_eq!(named.clone().map(Value::String), expected);
                }
                (Err(_), Some(expected)) => assert!(!expected.is_string()),
                (Err(_), None) => panic!("no model named, and an error for it"),
            }
        }
        self.check_rewrite(body, &fields, object.as_ref());
    }

    /// What the pipeline reads of a body: the model, the output limit, the answers, whether
    /// to ask for usage.
    fn read(&self, fields: &impl Fields) -> (Option<Value>, Option<u64>, u64, bool) {
        (
            fields.field("model").cloned(),
            rewrite::requested_output(self.provider, self.path, fields),
            rewrite::answers(self.provider, fields),
            rewrite::wants_include_usage(self.provider, self.path, fields),
        )
    }

    fn check_rewrite(
        &self,
        body: &[u8],
        fields: &model::Skimmed,
        object: Option<&Map<String, Value>>,
    ) {
        let (provider, path) = (self.provider, self.path);
        // The pipeline clamps only a request that asks for more than the limit, or names none.
        let requested = rewrite::requested_output(provider, path, fields);
        let clamp = self
            .limit
            .filter(|limit| requested.is_none_or(|requested| requested > *limit));
        let include_usage = rewrite::wants_include_usage(provider, path, fields);
        if clamp.is_none() && !include_usage {
            return;
        }
        let out = match rewrite::rewrite(provider, path, body, fields, clamp, include_usage) {
            Ok(out) => out,
            Err(err) => {
                // The rewrite copies values as sent (any depth, any number) and decodes only
                // member names: half a surrogate pair in one is its only known failure, a 400
                // settled at zero.
                assert!(
                    has_surrogate_escape(body),
                    "a body the skim accepted could not be rewritten: {err}"
                );
                return;
            }
        };
        let Some(object) = object else {
            return;
        };
        let rewritten: Map<String, Value> =
            serde_json::from_slice(&out).expect("the rewritten body is a JSON object");
        for (name, value) in object {
            if !REWRITTEN.contains(&name.as_str()) {
                assert_eq!(
                    rewritten.get(name),
                    Some(value),
                    "the rewrite changed {name:?}"
                );
            }
        }
        for name in rewritten.keys() {
            assert!(
                object.contains_key(name) || REWRITTEN.contains(&name.as_str()),
                "the rewrite added {name:?}"
            );
        }
        assert_eq!(
            rewrite::answers(provider, &rewritten),
            rewrite::answers(provider, object),
            "the rewrite changed the number of answers"
        );
        for config in ["generationConfig", "generation_config"] {
            let (Some(Value::Object(before)), Some(Value::Object(after))) =
                (object.get(config), rewritten.get(config))
            else {
                continue;
            };
            for (name, value) in before {
                if name != "maxOutputTokens" && name != "max_output_tokens" {
                    assert_eq!(
                        after.get(name),
                        Some(value),
                        "the rewrite changed {config}.{name}"
                    );
                }
            }
        }
        match clamp {
            Some(limit) => {
                let now = rewrite::requested_output(provider, path, &rewritten);
                assert!(
                    now.is_some_and(|now| now <= limit),
                    "clamped to {limit}, the body asks for {now:?}"
                );
            }
            None => assert_eq!(
                rewrite::requested_output(provider, path, &rewritten),
                requested,
                "the output limit changed without a clamp"
            ),
        }
        if include_usage {
            assert!(!rewrite::wants_include_usage(provider, path, &rewritten));
            assert_eq!(
                rewritten
                    .get("stream_options")
                    .and_then(|o| o.get("include_usage")),
                Some(&Value::Bool(true))
            );
        } else {
            assert_eq!(
                rewritten.get("stream_options"),
                object.get("stream_options")
            );
        }
    }
}

/// Valid JSON that serde_json cannot build into a `Value`: nesting past its recursion limit,
/// a number beyond `f64` (`1e400`), or a `\\u` escape of half a surrogate pair (RFC 8259
/// §8.2 allows it; a Rust string cannot hold it). The skim passes over all three.
fn cannot_build(err: &serde_json::Error, body: &[u8]) -> bool {
    let message = err.to_string();
    message.starts_with("recursion limit exceeded")
        || message.starts_with("number out of range")
        || has_surrogate_escape(body)
}

/// Whether `body` has a `\\u` escape of half a surrogate pair (anywhere: checked loosely).
fn has_surrogate_escape(body: &[u8]) -> bool {
    body.windows(4).any(|w| {
        w[..2] == *b"\\u"
            && w[2].eq_ignore_ascii_case(&b'd')
            && matches!(w[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
    })
}
