//! Gemini's resumable uploads, pointed back at the gateway.
//!
//! The google-genai SDKs upload a file in two steps: a `start` request, whose answer names the
//! URL to send the bytes to (`x-goog-upload-url`, on the provider's host), then the bytes, sent
//! to that URL with the client's own key. Through the gateway the first step works like any
//! request; the URL it answers with does not: the Python SDK would send the bytes straight to
//! Google with a proxy key it does not know, and both SDKs, which keep the URL's path but put
//! their base URL's host in it, would send them to `/upload/…` on the gateway, outside the
//! `/gemini` route. So the URL is rewritten to the same path under the gateway's `/gemini`
//! route on the host the client used; the bytes then come through the gateway, checked and
//! forwarded with the provider's credential like every other request. A URL on another host
//! than the configured base URL is left alone.
//!
//! The Python SDK sends the bytes without its API key: to Google the session URL itself is
//! the credential (its `upload_id` is unguessable). So the gateway remembers which key started
//! each session it pointed back at itself ([`UploadSessions`]), and a request to that session
//! without a key is that key's, checked like any other (a key revoked meanwhile is refused).
//! Sessions live in memory: after a restart an unfinished upload is refused and the SDK's
//! caller starts it again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};

use super::upstream::Upstream;
use gateway_shared::Provider;

/// The answer headers that carry an upload session's URL.
const UPLOAD_URLS: [HeaderName; 2] = [
    HeaderName::from_static("x-goog-upload-url"),
    HeaderName::from_static("x-goog-upload-control-url"),
];

/// Whether a request may start an upload (only those answers are rewritten).
pub fn starts_upload(provider: Provider, upstream_path: &str) -> bool {
    provider == Provider::Gemini && upstream_path.starts_with("/upload/")
}

/// `scheme://host` as the client reached the gateway: its `Host`, or the `X-Forwarded-Host`
/// and `X-Forwarded-Proto` of a trusted proxy in front. `None` without a usable host.
pub fn gateway_origin(headers: &HeaderMap, from_trusted_proxy: bool) -> Option<String> {
    let forwarded = |name: &str| {
        from_trusted_proxy
            .then(|| headers.get(name)?.to_str().ok())
            .flatten()
            .and_then(|value| value.split(',').next())
            .map(str::trim)
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host").or_else(|| headers.get(HOST)?.to_str().ok())?;
    // Only an authority (host and port) goes into the URL the client is handed.
    let authority: http::uri::Authority = host.parse().ok()?;
    (authority.as_str() == host && !host.contains('@')).then(|| format!("{scheme}://{host}"))
}

/// An upload session the gateway pointed at itself: its `upload_id` and the path (below the
/// provider's base URL) the bytes go to.
pub struct Session {
    pub upload_id: String,
    pub path: String,
}

/// Rewrites the answer's upload URLs that point at the configured Gemini base URL to the
/// gateway's `/gemini` route at `origin`; returns the session when it did.
pub fn point_at_gateway(
    headers: &mut HeaderMap,
    origin: &str,
    upstream: &Upstream,
) -> Option<Session> {
    let mut session = None;
    for name in &UPLOAD_URLS {
        let Some(url) = headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Some(rest) = upstream.path_under_base(Provider::Gemini, url) else {
            continue;
        };
        if let Ok(value) = HeaderValue::try_from(format!("{origin}/gemini{rest}")) {
            session = session.or_else(|| {
                let (path, query) = rest.split_once('?')?;
                Some(Session {
                    upload_id: upload_id(query)?.to_owned(),
                    path: path.to_owned(),
                })
            });
            headers.insert(name, value);
        }
    }
    session
}

/// The `upload_id` parameter of a query.
fn upload_id(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("upload_id="))
        .filter(|id| !id.is_empty())
}

/// How many sessions are remembered; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
/// How long a session is remembered (Google keeps one for a week).
const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The upload sessions the gateway started, by `upload_id`, with the key that started them.
#[derive(Default)]
pub struct UploadSessions {
    inner: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    /// By `upload_id`: the key that started it, and the path its bytes go to.
    key_of: HashMap<String, (String, String)>,
    /// (`upload_id`, when it started), oldest first.
    started: VecDeque<(String, Duration)>,
}

impl UploadSessions {
    /// Remembers that `key_id` started session `upload_id` at `now` (monotonic).
    pub fn remember(&self, session: Session, key_id: &str, now: Duration) {
        let Session { upload_id, path } = session;
        let mut sessions = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        sessions.forget_older_than(now);
        while sessions.started.len() >= MAX_SESSIONS {
            if let Some((oldest, _)) = sessions.started.pop_front() {
                sessions.key_of.remove(&oldest);
            }
        }
        if sessions
            .key_of
            .insert(upload_id.clone(), (key_id.to_owned(), path))
            .is_none()
        {
            sessions.started.push_back((upload_id, now));
        }
    }

    /// The key a request without one counts as: the key that started the session the query
    /// names, when the request sends that session its bytes — a POST to the session's own
    /// path with an upload command other than `start` (a new session needs the key itself,
    /// so a session URL never becomes a credential for anything else, nor a renewable one).
    pub fn key_of(
        &self,
        method: &http::Method,
        path: &str,
        headers: &HeaderMap,
        query: Option<&str>,
        now: Duration,
    ) -> Option<String> {
        let command = headers.get("x-goog-upload-command")?.to_str().ok()?;
        if method != http::Method::POST || command.to_ascii_lowercase().contains("start") {
            return None;
        }
        let id = upload_id(query?)?;
        let mut sessions = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        sessions.forget_older_than(now);
        let (key_id, session_path) = sessions.key_of.get(id)?;
        (session_path == path).then(|| key_id.clone())
    }
}

impl Sessions {
    fn forget_older_than(&mut self, now: Duration) {
        while let Some((id, at)) = self.started.front() {
            if now.saturating_sub(*at) < SESSION_TTL {
                break;
            }
            self.key_of.remove(id);
            self.started.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_str(value).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn the_origin_is_the_host_the_client_used_or_what_a_trusted_proxy_says() {
        let direct = headers(&[("host", "gw.example:8080"), ("x-forwarded-proto", "https")]);
        assert_eq!(
            gateway_origin(&direct, false).as_deref(),
            Some("http://gw.example:8080"),
            "forwarded headers count only from a trusted proxy"
        );
        let proxied = headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "ai.example.com"),
        ]);
        assert_eq!(
            gateway_origin(&proxied, true).as_deref(),
            Some("https://ai.example.com")
        );
        for bad in ["", "a b", "user@evil.example", "x/y", "gw?x"] {
            assert_eq!(
                gateway_origin(&headers(&[("host", bad)]), false),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(gateway_origin(&HeaderMap::new(), false), None);
    }

    fn session(id: &str) -> Session {
        Session {
            upload_id: id.into(),
            path: "/upload/v1beta/files".into(),
        }
    }

    #[test]
    fn a_session_is_its_starting_key_for_its_bytes_only_until_it_expires() {
        let sessions = UploadSessions::default();
        let hour = Duration::from_secs(3600);
        sessions.remember(session("abc"), "key_a", hour);
        let upload = headers(&[("x-goog-upload-command", "upload, finalize")]);
        let start = headers(&[("x-goog-upload-command", "start")]);
        let files = "/upload/v1beta/files";
        let key_of = |method: &http::Method, path: &str, headers: &HeaderMap, query: &str, at| {
            sessions.key_of(method, path, headers, Some(query), at)
        };
        let query = "upload_id=abc&upload_protocol=resumable";
        let post = http::Method::POST;
        assert_eq!(
            key_of(&post, files, &upload, query, hour * 2).as_deref(),
            Some("key_a")
        );
        for (method, path, headers) in [
            (&post, files, &start),
            (&post, files, &HeaderMap::new()),
            (&http::Method::DELETE, files, &upload),
            (&post, "/upload/v1beta/files/x", &upload),
            (&post, "/upload/v1beta/models/m:generateContent", &upload),
        ] {
            assert_eq!(
                key_of(method, path, headers, query, hour * 2),
                None,
                "{method} {path}"
            );
        }
        assert_eq!(
            key_of(&post, files, &upload, "upload_id=other", hour * 2),
            None
        );
        assert_eq!(key_of(&post, files, &upload, "upload_id=", hour * 2), None);
        assert_eq!(
            key_of(&post, files, &upload, query, hour + SESSION_TTL),
            None,
            "expired"
        );

        for i in 0..=MAX_SESSIONS {
            sessions.remember(session(&format!("s{i}")), "key_b", hour);
        }
        assert_eq!(
            key_of(&post, files, &upload, "upload_id=s0", hour),
            None,
            "the oldest went"
        );
        let newest = format!("upload_id=s{MAX_SESSIONS}");
        assert_eq!(
            key_of(&post, files, &upload, &newest, hour).as_deref(),
            Some("key_b")
        );
    }

    #[test]
    fn only_gemini_upload_paths_start_uploads() {
        assert!(starts_upload(Provider::Gemini, "/upload/v1beta/files"));
        assert!(!starts_upload(Provider::Gemini, "/v1beta/files"));
        assert!(!starts_upload(Provider::Openai, "/upload/v1beta/files"));
    }
}
