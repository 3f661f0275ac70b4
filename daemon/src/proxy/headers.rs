//! Which headers cross the proxy, in each direction.
//!
//! Hop-by-hop headers describe one connection and must not be forwarded (RFC 9110 §7.6.1).
//! The client's credentials are dropped so the proxy key never reaches the provider; the
//! provider credential is added by `upstream`. The client's `accept-encoding` is replaced
//! with `identity`, so providers answer in plain text the gateway can meter: a request
//! without the header accepts any coding (RFC 9110 §12.5.3), and a provider or a CDN in
//! front of it may then compress. A body that arrives compressed all the same is passed on
//! untouched and billed its worst case (`meter`).

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1): one match on the name's text, which costs less
/// than comparing it with a list of names.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Client credential headers of every provider.
fn is_credential(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "x-api-key" | "x-goog-api-key"
    )
}

/// What the gateway sets itself (host, length, `accept-encoding: identity`).
fn is_set_by_gateway(name: &HeaderName) -> bool {
    matches!(name.as_str(), "host" | "content-length" | "accept-encoding")
}

/// The client's request headers made into those to send upstream, in place (the request's
/// own map is reused: no second map is built and no header hashed again).
pub fn for_upstream(mut client: HeaderMap) -> HeaderMap {
    if client.contains_key(header::CONNECTION) {
        for name in connection_tokens(&client) {
            client.remove(name);
        }
    }
    remove_where(&mut client, is_dropped);
    client.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    client
}

/// Whether `name` is dropped on the way upstream whatever its value (hop-by-hop, a client
/// credential, or set by the gateway itself): every other request header is forwarded.
pub fn is_dropped(name: &HeaderName) -> bool {
    is_hop_by_hop(name) || is_credential(name) || is_set_by_gateway(name)
}

/// Whether a response body is in a content coding (gzip, br, …): its usage cannot be read.
pub fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|coding| {
            let coding = coding.trim_ascii();
            !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity")
        })
}

/// Removes hop-by-hop headers from a provider's response before it goes to the client.
pub fn strip_response(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        for name in connection_tokens(headers) {
            headers.remove(name);
        }
    }
    remove_where(headers, is_hop_by_hop);
}

/// Removes every header `dropped` picks. The few names present are each looked at once, and
/// only those picked are looked up again (hashed) to remove them: trying to remove every name
/// of the lists above cost ~2k instructions a request (callgrind).
pub fn remove_where(headers: &mut HeaderMap, dropped: fn(&HeaderName) -> bool) {
    while let Some(name) = headers.keys().find(|name| dropped(name)).cloned() {
        headers.remove(&name);
    }
}

/// Marks credential headers sensitive so `http`'s `Debug` prints `Sensitive`, never a key.
/// One pass over the few headers a request has (a hashed look-up of each credential name
/// cost ~600 instructions a request, callgrind).
pub fn mark_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        // `proxy-authorization` is hop-by-hop (dropped on the way up) but a credential all
        // the same: hidden too.
        if is_credential(name) || name == header::PROXY_AUTHORIZATION {
            value.set_sensitive(true);
        }
    }
}

fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header map of `pairs`, in order, repeated names appended.
    fn headers_of(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        headers
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let client = headers_of(&[
            ("authorization", "Bearer sk-proxy-x"),
            ("x-api-key", "sk-proxy-x"),
            ("x-goog-api-key", "sk-proxy-x"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("host", "gateway"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("openai-beta", "assistants=v2"),
        ]);
        let out = for_upstream(client);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept-encoding",
                "anthropic-version",
                "content-type",
                "openai-beta"
            ]
        );
    }

    #[test]
    fn providers_are_asked_for_plain_text() {
        for client in [
            headers_of(&[("accept-encoding", "gzip, br")]),
            headers_of(&[("content-type", "application/json")]),
        ] {
            let out = for_upstream(client);
            let codings: Vec<_> = out.get_all("accept-encoding").iter().collect();
            assert_eq!(codings, ["identity"]);
        }
    }

    #[test]
    fn a_coding_other_than_identity_is_encoded() {
        for (value, encoded) in [
            ("gzip", true),
            ("br", true),
            ("identity, gzip", true),
            ("identity", false),
            ("IDENTITY", false),
            ("", false),
        ] {
            let headers = headers_of(&[("content-encoding", value)]);
            assert_eq!(is_encoded(&headers), encoded, "{value:?}");
        }
        assert!(!is_encoded(&HeaderMap::new()));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_leave_the_response() {
        let mut headers = headers_of(&[
            ("connection", "close, x-conn-private"),
            ("x-conn-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
            ("x-request-id", "r1"),
        ]);
        strip_response(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-request-id"]);

        let mut plain = HeaderMap::new();
        plain.insert("content-type", "text/plain".parse().expect("value"));
        strip_response(&mut plain);
        assert_eq!(plain.len(), 1, "nothing to remove, nothing removed");
        plain.insert("upgrade", "h2c".parse().expect("value"));
        plain.append("upgrade", "websocket".parse().expect("value"));
        strip_response(&mut plain);
        assert_eq!(plain.len(), 1, "every value of a dropped name");
    }

    #[test]
    fn every_hop_by_hop_credential_and_gateway_header_is_dropped() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "authorization",
            "x-api-key",
            "x-goog-api-key",
            "host",
            "content-length",
            "accept-encoding",
        ] {
            assert!(is_dropped(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            "content-type",
            "x-request-id",
            "accept",
            "user-agent",
            "tee",
            "hosts",
        ] {
            assert!(!is_dropped(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn sensitive_values_do_not_print() {
        let mut headers = headers_of(&[
            ("x-api-key", "sk-proxy-secret1"),
            ("authorization", "Bearer sk-proxy-secret2"),
            ("x-goog-api-key", "sk-proxy-secret3"),
            ("authorization", "Bearer sk-proxy-secret4"),
            ("proxy-authorization", "Basic c2VjcmV0NQ== secret5"),
            ("content-type", "application/json"),
        ]);
        mark_sensitive(&mut headers);
        let printed = format!("{headers:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(
            printed.contains("application/json"),
            "only credentials are hidden"
        );
    }
}
