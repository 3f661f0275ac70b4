//! The data plane: one request pipeline, read top to bottom (SPEC §3).
//!
//! 1. `route::resolve` — provider, upstream path, where the model is named (404 `unknown_route`).
//! 2. `client_ip::resolve` — TCP peer, or X-Forwarded-For from a trusted proxy.
//! 3. `credential::presented` — the key where the provider's SDK puts it (401 `missing_key`).
//! 4. `authenticate` — checksum before any look-up, then the in-memory table (401 `invalid_key`).
//! 5. `check_lifecycle` — 403 `key_revoked`, 403 `key_expired`.
//! 6. `policy.allows_ip` / `allows_provider` — 403 `ip_not_allowed`, `provider_not_allowed`.
//! 7. body (413) → `model::named` (400) → `model::check` — 403 `model_not_allowed`.
//! 8. `upstream.send` — 502 `upstream_unreachable`, 504 `upstream_timeout`.
//! 9. the response streams back frame by frame; provider errors pass through untouched.
//!
//! Every step reads memory only: no database on the request path. A refused request never
//! reaches the provider, because forwarding is the last step.

mod client_ip;
mod credential;
mod headers;
mod idle_timeout;
mod listing;
mod model;
mod route;
mod upstream;
pub mod usage;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gateway_shared::{ErrorCode, KeyState, ProxyKey};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use ipnet::IpNet;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{GatewayError, Plane};
use crate::http_util::{self, Response};
use crate::keys::{KeyCache, KeyEntry};
use idle_timeout::IdleTimeout;
use route::{ModelSource, ProviderRoute, Route};
pub use upstream::Upstream;

pub struct Proxy {
    keys: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    upstream: Upstream,
    trusted_proxies: Vec<IpNet>,
    max_body_bytes: usize,
    /// Set when shutdown begins: health turns 503 and new requests are refused.
    draining: AtomicBool,
}

impl Proxy {
    pub fn new(
        config: &Config,
        keys: Arc<KeyCache>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Proxy> {
        Ok(Proxy {
            keys,
            clock,
            upstream: Upstream::new(config)?,
            trusted_proxies: config.proxy.trusted_proxies.clone(),
            max_body_bytes: config.proxy.max_body_bytes,
            draining: AtomicBool::new(false),
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The one exit for gateway errors on the data plane. Logs one line per request at
    /// debug level: method, path (never the query, which may hold a Gemini `key=`), status.
    pub async fn handle(&self, peer: SocketAddr, mut request: http::Request<Incoming>) -> Response {
        headers::mark_sensitive(request.headers_mut());
        let started = std::time::Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = match self.pipeline(peer, request).await {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(code = %err.code, %method, %path, "request refused");
                err.into_response(Plane::Data)
            }
        };
        tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed = ?started.elapsed(), "proxied");
        response
    }

    async fn pipeline(
        &self,
        peer: SocketAddr,
        request: http::Request<Incoming>,
    ) -> Result<Response, GatewayError> {
        let route = route::resolve(request.method(), request.uri().path())?;
        let route = match route {
            Route::Health => return Ok(self.health()),
            Route::SelfService => {
                return Err(GatewayError::new(
                    ErrorCode::UnknownRoute,
                    "Self-service is not available yet.",
                ));
            }
            Route::Provider(route) => route,
        };
        if self.draining.load(Ordering::SeqCst) {
            return Err(GatewayError::new(
                ErrorCode::ShuttingDown,
                "The gateway is shutting down; retry shortly.",
            ));
        }
        let client_ip = client_ip::resolve(peer, request.headers(), &self.trusted_proxies);
        let presented =
            credential::presented(route.provider, request.headers(), request.uri().query())
                .ok_or_else(|| missing_key(&route))?;
        let key = self.authenticate(presented)?;
        tracing::trace!(key_id = %key.id, prefix = %key.prefix, provider = %route.provider, "authenticated");
        check_lifecycle(&key, self.clock.now())?;
        check_ip(&key, client_ip)?;
        if !key.policy.allows_provider(route.provider) {
            return Err(GatewayError::new(
                ErrorCode::ProviderNotAllowed,
                format!("This key may not use {}.", route.provider),
            ));
        }

        let (parts, body) = request.into_parts();
        let body = http_util::read_limited(&parts.headers, body, self.max_body_bytes).await?;
        let model = model::named(&route.model, &parts.headers, &body)?;
        model::check(&route.model, model.as_deref(), &key.policy)?;

        let query = credential::strip_key_param(parts.uri.query());
        let upstream_request = self.upstream.request(
            route.provider,
            parts.method,
            &route.upstream_path,
            query.as_deref(),
            headers::for_upstream(&parts.headers),
            body,
        )?;
        let response = self.upstream.send(route.provider, upstream_request).await?;
        self.respond(&route, &key, response).await
    }

    /// Streams the provider's answer back as it arrives. A listing for a key with a model
    /// restriction is the one response read whole, to filter it.
    async fn respond(
        &self,
        route: &ProviderRoute,
        key: &KeyEntry,
        response: http::Response<Incoming>,
    ) -> Result<Response, GatewayError> {
        let (mut parts, body) = response.into_parts();
        headers::strip_response(&mut parts.headers);
        let body = IdleTimeout::new(body, self.upstream.idle_timeout());
        if route.model == ModelSource::Listing
            && key.policy.restricts_models()
            && parts.status.is_success()
        {
            let bytes = body
                .collect()
                .await
                .map_err(|err| {
                    GatewayError::new(
                        ErrorCode::UpstreamUnreachable,
                        format!("The model listing was cut off: {err}."),
                    )
                })?
                .to_bytes();
            let filtered = listing::filter(route.provider, &bytes, &key.policy);
            parts.headers.remove(http::header::CONTENT_LENGTH);
            return Ok(http::Response::from_parts(parts, http_util::full(filtered)));
        }
        Ok(http::Response::from_parts(parts, body.boxed()))
    }

    /// Checksum first, so garbage never costs a look-up; then the table, by hash.
    fn authenticate(&self, presented: &str) -> Result<Arc<KeyEntry>, GatewayError> {
        let invalid = || {
            GatewayError::new(
                ErrorCode::InvalidKey,
                "The API key is not a valid gateway key.",
            )
        };
        let key = ProxyKey::parse(presented).map_err(|_| invalid())?;
        self.keys.by_hash(&key.hash()).ok_or_else(invalid)
    }

    fn health(&self) -> Response {
        if self.draining.load(Ordering::SeqCst) {
            http_util::json_response(503, r#"{"status":"draining"}"#)
        } else {
            http_util::json_response(200, r#"{"status":"ok"}"#)
        }
    }
}

fn missing_key(route: &ProviderRoute) -> GatewayError {
    let place = match route.provider {
        gateway_shared::Provider::Openai => "an Authorization: Bearer header",
        gateway_shared::Provider::Anthropic => "an x-api-key or Authorization: Bearer header",
        gateway_shared::Provider::Gemini => "an x-goog-api-key header or a key= query parameter",
    };
    GatewayError::new(
        ErrorCode::MissingKey,
        format!("No API key was presented; send a gateway key in {place}."),
    )
}

/// Revoked and expired, in SPEC order. Exhaustion is judged later, at the spend step, so
/// that the cheaper restrictions answer first.
fn check_lifecycle(key: &KeyEntry, now: jiff::Timestamp) -> Result<(), GatewayError> {
    match key.state_at(now) {
        KeyState::Revoked => Err(GatewayError::new(
            ErrorCode::KeyRevoked,
            "This key has been revoked.",
        )),
        KeyState::Expired => Err(GatewayError::new(
            ErrorCode::KeyExpired,
            "This key has expired.",
        )),
        KeyState::Active | KeyState::Exhausted => Ok(()),
    }
}

fn check_ip(key: &KeyEntry, client_ip: Option<IpAddr>) -> Result<(), GatewayError> {
    if key.policy.allows_ip(client_ip) {
        return Ok(());
    }
    let who = client_ip.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
    Err(GatewayError::new(
        ErrorCode::IpNotAllowed,
        format!("This key may not be used from {who}."),
    ))
}
