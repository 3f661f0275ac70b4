//! The data plane: one request pipeline, read top to bottom (SPEC §3–§5).
//!
//! 1. `route::resolve` — provider, upstream path, where the model is named (404 `unknown_route`);
//!    a path another hop could resolve differently (dot-segments, encoded slashes, `//`) is
//!    400 `invalid_request` here, before any key check: it is not a route (see `route`).
//! 2. `client_ip::resolve` — TCP peer, or X-Forwarded-For from a trusted proxy.
//! 3. `credential::presented` — the key where the provider's SDK puts it (401 `missing_key`).
//! 4. `authenticate` — checksum before any look-up, then the in-memory table (401 `invalid_key`).
//! 5. `check_lifecycle` — 403 `key_revoked`, 403 `key_expired`.
//! 6. `check_ip`, provider — 403 `ip_not_allowed`, `provider_not_allowed`; a key in the path,
//!    query or a header that would be forwarded — 400 `invalid_request` (`credential`).
//! 7. body (413; 408 `request_timeout` when it stalls) → `model::json_body` (400) → a model
//!    holding a key or a control character (400) → `model::check` — 403 `model_not_allowed`.
//! 8. `limits.admit` — steps 8 and 9 in one call to the key's limits engine (`crate::limits`:
//!    memory on one server, shared in a cluster). First the exact rolling window: 429
//!    `rate_limit_exceeded` with `Retry-After`. In a cluster without its shared engine, a key
//!    with limits is 503 `limits_unavailable` here.
//! 9. in the same call, `pricing::spend_ask` — price (403 `model_not_priced`), then the
//!    reservation: fits, clamped, or 402 `spend_limit_exceeded`.
//! 10. `rewrite` — clamped output limit; OpenAI streams asked for usage. From the admission
//!     on, the `Meter` owns the reservation: any failure before step 11 settles it at zero.
//! 11. `upstream.send` — 502 `upstream_unreachable`, 504 `upstream_timeout`. Once the request
//!     is handed to a connection the provider may bill it: from then on an ending without a
//!     response (timeout, lost connection, client gone) is billed the input estimate.
//! 12. `respond` — the body streams back frame by frame through the meter, which settles the
//!     reservation however the response ends; provider errors pass through untouched. A
//!     Gemini upload session's URL is pointed back at the gateway (`upload_url`).
//!
//! Every step reads memory only: no database on the request path (usage goes to the writer's
//! channel). A refused request never reaches the provider: forwarding is step 11. A client
//! that disconnects drops the pipeline mid-way; settlement still happens, in the `Drop` of the
//! `Meter`, `MeteredBody` and `Reservation` guards.
//!
//! The request body is read with `proxy.body_read_timeout` as the longest *gap* between its
//! pieces (and before the first), not as a deadline for the whole body: the attack is a body
//! that stops arriving (a `Content-Length: 100` with one byte sent holds a connection slot
//! forever otherwise), while a slow but steady upload of a large allowed body (32 MiB of
//! images over a slow uplink) must still get through, and a total deadline short enough to
//! matter would cut it. A stalled body is answered 408 `request_timeout` and the connection
//! closed (what is left of the body is never read). The same reasoning as the provider side's
//! `idle_timeout`.
//!
//! A configured provider (SPEC §10) runs the same steps: `route` finds it by its name after
//! the built-in prefixes miss, its `kind` says where the key and model are and how usage
//! is reported, and an Azure one's deployment is mapped to its model (`azure`) before the
//! model check, so globs and prices see the model.
//!
//! Paths are logged (debug) and echoed (`unknown_route`) only through `route::redacted`,
//! which cuts anything shaped like a proxy key, admin token or provider key to its display
//! prefix: a client that pastes its key into the path does not put it in the log.

mod access;
mod azure;
pub(crate) mod client_ip;
pub(crate) mod credential;
mod headers;
mod idle_timeout;
mod listing;
mod members;
mod meter;
pub(crate) mod model;
mod pricing;
pub(crate) mod rewrite;
pub(crate) mod route;
mod self_service;
mod upload_url;
pub(crate) mod upstream;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use compact_str::CompactString;
use gateway_shared::ErrorCode;
use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use ipnet::IpNet;

use crate::clock::Clock;
use crate::config::{Config, Kind, SpendConfig};
use crate::error::{GatewayError, Plane};
use crate::health::Health;
use crate::http_util::{self, Response};
use crate::keys::{KeyCache, KeyEntry};
use crate::limits::{self, Admitted, Denied, Limits};
use crate::metrics::Metrics;
use crate::spend::price::{PriceTable, Tokens};
use crate::store::writer::UsageWriter;
use access::{check_access, missing_key};
use idle_timeout::IdleTimeout;
use meter::{Meter, MeteredBody, Outcome};
use route::{ModelSource, ProviderRoute, Route};
pub use upstream::{PooledBody, Upstream};
use usage::{Format, Observed, UsageObserver};

pub struct Proxy {
    keys: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    upstream: Upstream,
    prices: PriceTable,
    spend: SpendConfig,
    /// Steps 8–9: the keys' rate windows and spend reservations (memory, or the cluster's).
    limits: Limits,
    /// The backends `/healthz` reports.
    health: Arc<Health>,
    usage: UsageWriter,
    metrics: Arc<Metrics>,
    trusted_proxies: Vec<IpNet>,
    max_body_bytes: usize,
    /// Longest gap while reading a request body (408 `request_timeout`).
    body_read_timeout: Duration,
    /// Longest a refused request's unread body is read and dropped before closing: never
    /// longer than the header-read timeout, for which a connection may already be held.
    linger_total: Duration,
    /// Set when shutdown begins: health turns 503 and new requests are refused.
    draining: AtomicBool,
    /// Gemini upload sessions started through the gateway (`upload_url`).
    upload_sessions: upload_url::UploadSessions,
    /// The configured providers' routes (SPEC §10), searched after the built-in ones.
    configured: route::Configured,
    azure: azure::AzureProviders,
}

impl Proxy {
    pub fn new(
        config: &Config,
        keys: Arc<KeyCache>,
        clock: Arc<dyn Clock>,
        usage: UsageWriter,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        limits: Limits,
    ) -> anyhow::Result<Proxy> {
        health.set_limits(limits.status());
        Ok(Proxy {
            keys,
            limits,
            health,
            clock,
            upstream: Upstream::new(config)?,
            prices: PriceTable::new(&config.prices, config.spend.fallback_price.as_ref())?,
            spend: config.spend.clone(),
            usage,
            metrics,
            trusted_proxies: config.proxy.trusted_proxies.clone(),
            max_body_bytes: config.proxy.max_body_bytes,
            body_read_timeout: config.proxy.body_read_timeout,
            linger_total: http_util::LINGER_TOTAL.min(config.proxy.header_read_timeout),
            draining: AtomicBool::new(false),
            upload_sessions: upload_url::UploadSessions::default(),
            configured: route::Configured::new(
                config.providers.iter().map(|p| (p.provider, p.kind)),
            ),
            azure: azure::AzureProviders::new(config),
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The one exit for gateway errors on the data plane. Logs one line per request at
    /// debug level: method, path (never the query, which may hold a Gemini `key=`; secrets a
    /// client put in the path cut to their prefix by `route::redacted`), status.
    pub async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        mut request: http::Request<Incoming>,
    ) -> Response {
        headers::mark_sensitive(request.headers_mut());
        let started = Instant::now();
        let provider = provider_label(request.uri().path(), &self.configured);
        // Only copied when debug logging is on: this runs for every request.
        let described = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            let path = gateway_shared::key::redact_secrets(request.uri().path()).into_owned();
            (request.method().clone(), path)
        });
        let in_flight = InFlight::new(&self.metrics);
        // Not spawned into a task of its own: if the client goes away, hyper drops this
        // future, and the `Meter` and `MeteredBody` guards settle the request in their `Drop`
        // (a spawn per request cost a cross-task wake-up each, measured in the benchmark).
        let code;
        // The body stays here until the pipeline reads it, so that a refusal before that can
        // deal with what is left of it (below).
        let (parts, body) = request.into_parts();
        let has_body = !hyper::body::Body::is_end_stream(&body);
        let mut unread = Some(body);
        let request = http::Request::from_parts(parts, ());
        let waits_for_continue = has_body && request.headers().contains_key(http::header::EXPECT);
        let response = match self.pipeline(peer, request, &mut unread, started).await {
            Ok(response) => {
                code = match response.status().as_u16() {
                    200..=399 => "ok",
                    400..=499 => "provider_4xx",
                    _ => "provider_5xx",
                };
                response
            }
            Err(err) => {
                if let Some((method, path)) = &described {
                    tracing::debug!(code = %err.code, %method, %path, "request refused");
                }
                code = err.code.as_str();
                self.metrics.auth_failure(err.code);
                let lingers = !matches!(
                    err.code,
                    ErrorCode::BodyTooLarge | ErrorCode::RequestTimeout
                );
                let mut response = err.into_response(Plane::Data);
                // A refusal before the body was read leaves it on the connection: hyper
                // cannot reuse the connection and closes it after the answer, which a client
                // learns only when its next request fails. `Connection: close` says so first;
                // and the rest of the body is read and dropped so that a client still
                // sending gets the answer rather than a reset (`discard_unread`). Not for a
                // body too large or stalled, nor one the client holds back until told to
                // continue (it was never sent).
                if let Some(body) = unread.take().filter(|_| has_body) {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    if lingers && !waits_for_continue {
                        tokio::spawn(http_util::discard_unread(
                            body,
                            self.max_body_bytes,
                            self.linger_total,
                        ));
                    }
                }
                response
            }
        };
        drop(in_flight);
        self.metrics.count_request(provider, code);
        self.metrics
            .requests_for(provider)
            .duration
            .observe(started.elapsed().as_secs_f64());
        if let Some((method, path)) = &described {
            tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed = ?started.elapsed(), "proxied");
        }
        response
    }

    async fn pipeline(
        &self,
        peer: SocketAddr,
        request: http::Request<()>,
        unread: &mut Option<Incoming>,
        started: Instant,
    ) -> Result<Response, GatewayError> {
        let resolved = route::resolve(request.method(), request.uri().path(), &self.configured)
            .map_err(|err| self.revoked_first(&request, err))?;
        let route = match resolved {
            Route::Health => return Ok(self.health()),
            Route::SelfService => return self.self_service(peer, &request).await,
            Route::Provider(route) => route,
        };
        if self.draining.load(Ordering::SeqCst) {
            return Err(GatewayError::new(
                ErrorCode::ShuttingDown,
                "The gateway is shutting down; retry shortly.",
            ));
        }
        let client_ip = client_ip::resolve(peer, request.headers(), &self.trusted_proxies);
        let presented = credential::presented(route.kind, request.headers(), request.uri().query());
        let keyless = presented.is_none();
        let key = match presented {
            Some(presented) => self.authenticate_anywhere(presented).await?,
            // The bytes of a Gemini upload the gateway started come without a key
            // (`upload_url`): the session's own key, for those bytes only.
            None => upload_url::starts_upload(route.provider, &route.upstream_path)
                .then(|| {
                    self.upload_sessions.key_of(
                        request.method(),
                        &route.upstream_path,
                        request.headers(),
                        request.uri().query(),
                        self.clock.monotonic(),
                    )
                })
                .flatten()
                .and_then(|id| self.keys.get(&id))
                .ok_or_else(|| missing_key(&route))?,
        };
        tracing::trace!(key_id = %key.id, prefix = %key.prefix, provider = %route.provider, "authenticated");
        let now = self.clock.now();
        check_access(&key, now, client_ip, &route)?;

        let (mut parts, ()) = request.into_parts();
        // What is forwarded must not carry a key (the query without Gemini's `key=`, which
        // is where that key belongs and is stripped): refused before anything is recorded.
        let mut query = credential::strip_key_param(parts.uri.query());
        if route.kind == Kind::AzureOpenai {
            // Where Azure's SDK sends the key: read above, never forwarded.
            parts.headers.remove(AZURE_KEY);
            query = self
                .azure
                .with_api_version(route.provider, &route.upstream_path, query);
        }
        credential::refuse_forwarded_secret(&route.upstream_path, query.as_deref())?;
        credential::refuse_forwarded_header_secret(&parts.headers)?;
        let upload_origin = upload_url::starts_upload(route.provider, &route.upstream_path)
            .then(|| {
                let trusted =
                    client_ip::is_trusted(peer.ip().to_canonical(), &self.trusted_proxies);
                upload_url::gateway_origin(&parts.headers, trusted)
            })
            .flatten();
        let Some(body) = unread.as_mut() else {
            return Err(GatewayError::internal(anyhow::anyhow!(
                "the request body was already taken"
            )));
        };
        let body = http_util::read_limited(
            &parts.headers,
            body,
            self.max_body_bytes,
            self.body_read_timeout,
        )
        .await?;
        *unread = None;
        let json = model::json_body(&route.model, &parts.headers, &body)?;
        let mut model = model::named(&route.model, json.as_ref())?;
        if route.kind == Kind::AzureOpenai {
            model = model.map(|deployment| self.azure.model_of(route.provider, deployment));
        }
        if let Some(model) = &model {
            credential::check_model_name(model)?;
        }
        model::check(&route.model, model.as_deref(), &key.policy)?;

        let mut key = key;
        let mut reloads = 0;
        let Admitted {
            rate,
            price,
            reservation,
            record_id,
        } = loop {
            let admitted = self
                .limits
                .admit(
                    &key,
                    now,
                    (route.provider, model.as_deref().unwrap_or_default()),
                    || {
                        pricing::spend_ask(
                            &self.prices,
                            &self.spend,
                            &route,
                            &key,
                            model.as_deref(),
                            json.as_ref(),
                            body.len(),
                        )
                    },
                )
                .await;
            match admitted {
                Ok(admitted) => break admitted,
                Err(Denied::Refused(err)) => return Err(err),
                // Another replica changed the key (cluster): its checks again, on the key as
                // it is now, before admitting under its new settings.
                Err(Denied::Reloaded(fresh)) if reloads < MAX_RELOADS => {
                    reloads += 1;
                    key = fresh;
                    check_access(&key, now, client_ip, &route)?;
                    model::check(&route.model, model.as_deref(), &key.policy)?;
                }
                Err(Denied::Reloaded(_)) => return Err(limits::unavailable()),
            }
        };
        let clamped = reservation.clamped_output();
        // From here the meter owns the reservation: every way out before the request reaches
        // a provider settles it at zero (`Outcome::NotSent`), with its usage record.
        let mut meter = Meter {
            id: record_id,
            key_id: key.id.clone(),
            provider: route.provider,
            model: model.as_deref().map(CompactString::new).unwrap_or_default(),
            price,
            input_tokens_bound: body.len() as u64,
            reservation: Some(reservation),
            status: 0,
            sent: false,
            unreadable: false,
            started,
            writer: self.usage.clone(),
            metrics: Arc::clone(&self.metrics),
            clock: Arc::clone(&self.clock),
        };

        let (strip_usage_chunk, body) = match json.as_ref() {
            Some(fields) => {
                let include_usage =
                    rewrite::wants_include_usage(route.kind, &route.upstream_path, fields);
                let body = if clamped.is_some() || include_usage {
                    let changed = rewrite::rewrite(
                        route.kind,
                        &route.upstream_path,
                        &body,
                        fields,
                        clamped,
                        include_usage,
                    );
                    match changed {
                        Ok(changed) => Bytes::from(changed),
                        Err(err) => {
                            let err = unrewritable(&err);
                            meter.status = err.code.status();
                            self.limits
                                .revert(&key, rate.as_ref(), meter.reservation.as_ref())
                                .await;
                            return Err(err);
                        }
                    }
                } else {
                    body
                };
                (include_usage, body)
            }
            None => (false, body),
        };
        meter.input_tokens_bound = body.len() as u64;

        let upstream_request = self.upstream.request(
            route.provider,
            parts.method,
            &route.upstream_path,
            query.as_deref(),
            headers::for_upstream(parts.headers),
            body,
        )?;
        let sent = Instant::now();
        let response = match self
            .upstream
            .send(route.provider, upstream_request, &mut meter)
            .await
        {
            Ok(response) => {
                self.metrics
                    .upstream(route.provider)
                    .ttfb
                    .observe(sent.elapsed().as_secs_f64());
                response
            }
            Err(err) => {
                // Settled as the meter drops: free if the request never reached the provider
                // (no connection), its input estimate if it may have (a timeout, a lost
                // connection), as when the client leaves while waiting.
                meter.status = err.code.status();
                return Err(err);
            }
        };
        let mut response = self
            .respond(&route, &key, response, meter, strip_usage_chunk)
            .await?;
        let headers = response.headers_mut();
        if let Some(decision) = rate {
            limits::set_rate_headers(headers, &decision);
        }
        if let Some(tokens) = clamped {
            headers.insert(OUTPUT_CLAMPED, HeaderValue::from(tokens));
        }
        // Only a request made with the key itself starts a session the bytes can use.
        if let Some(origin) = upload_origin.filter(|_| !keyless)
            && let Some(session) = upload_url::point_at_gateway(headers, &origin, &self.upstream)
        {
            self.upload_sessions
                .remember(session, &key.id, self.clock.monotonic());
        }
        Ok(response)
    }

    /// Step 12: streams the provider's answer back as it arrives, through the meter.
    async fn respond(
        &self,
        route: &ProviderRoute,
        key: &KeyEntry,
        response: http::Response<IdleTimeout<PooledBody>>,
        mut meter: Meter,
        strip_usage_chunk: bool,
    ) -> Result<Response, GatewayError> {
        let (mut parts, body) = response.into_parts();
        headers::strip_response(&mut parts.headers);
        // The gateway's own limit replaces the provider's account-wide one.
        if key.rate_limit_rpm.is_some() {
            headers::remove_where(&mut parts.headers, |name| {
                limits::RATE_HEADERS.contains(name)
            });
        }
        meter.status = parts.status.as_u16();
        if !parts.status.is_success() {
            // Provider errors pass through untouched and are not billed.
            meter.settle(&Observed::default(), Outcome::ProviderError);
            return Ok(http::Response::from_parts(parts, body.boxed()));
        }
        if route.model == ModelSource::Listing && key.policy.restricts_models() {
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
            let free = Observed {
                reported: Some(Tokens::default()),
                ..Observed::default()
            };
            meter.settle(&free, Outcome::Complete);
            let filtered = listing::filter(route.kind, &bytes, &key.policy);
            parts.headers.remove(http::header::CONTENT_LENGTH);
            return Ok(http::Response::from_parts(parts, http_util::full(filtered)));
        }
        let format = Format::of(route.kind, &route.upstream_path, &parts.headers);
        let observer = UsageObserver::new(route.kind, format, strip_usage_chunk);
        if observer.may_change_bytes() {
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        // Compressed although asked for plain text: nothing can be read (nor cut), so it is
        // billed its reservation's output bound, which the cap already allowed for.
        meter.unreadable = format == Format::Encoded;
        let enforce_cut = key.spend_limit.is_some() && !meter.unreadable;
        let body = MeteredBody::new(body, observer, meter, enforce_cut);
        Ok(http::Response::from_parts(parts, body.boxed()))
    }

    /// `/healthz`: the backends (`crate::health`), and `draining` once shutdown began.
    fn health(&self) -> Response {
        self.health
            .report(self.draining.load(Ordering::SeqCst))
            .response()
    }
}

/// Counts a request in flight for as long as it lives, however its future ends.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.in_flight.inc();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// The provider a path is for, as a metric label (bounded: five values; every configured
/// provider is `configured`).
fn provider_label(path: &str, configured: &route::Configured) -> &'static str {
    if path.starts_with("/openai/") || path.starts_with("/v1/") {
        "openai"
    } else if path.starts_with("/anthropic/") {
        "anthropic"
    } else if path.starts_with("/gemini/") {
        "gemini"
    } else if configured.routes(path) {
        "configured"
    } else {
        "none"
    }
}

/// The header Azure OpenAI's SDK sends its key in.
const AZURE_KEY: HeaderName = HeaderName::from_static("api-key");

/// How many times one request is admitted again after its key changed under it.
const MAX_RELOADS: u32 = 2;

const OUTPUT_CLAMPED: HeaderName = HeaderName::from_static("x-gateway-output-clamped");

/// A body the skim read but the rewrite could not: the client's to fix, never a 500. Not
/// expected (both read the same grammar, and the rewrite has no depth limit), but if it ever
/// happens the request has not left and is settled at zero.
fn unrewritable(err: &serde_json::Error) -> GatewayError {
    GatewayError::new(
        ErrorCode::InvalidRequest,
        format!("The request body could not be rewritten to fit the key's budget: {err}."),
    )
}
