//! The management API (SPEC §6): one router for every transport.
//!
//! Transports differ only in how they authenticate and whom they name as the actor: the Unix
//! socket's peer uid, or the admin token presented over HTTPS (checked here, in
//! [`AdminApi::handle_https`]). Admin tokens themselves are managed on the socket only.
//! A refused token is counted against the client's address (`admin_guard`): its answer may
//! wait, it closes the connection, and a warning names the address.
//! Handlers are thin: decode a `shared::api` type, call a service, encode the answer.

mod admin_tokens;
mod audit;
pub mod cluster;
mod keys;
mod query;
pub(crate) mod strict_json;

use gateway_shared::key::redact_secrets;
use std::net::SocketAddr;
use std::sync::Arc;

use gateway_shared::ErrorCode;
use hyper::body::Incoming;

use crate::admin_guard::FailedLogins;
use crate::admin_tokens::{AdminTokens, AuthFailure};
use crate::error::{GatewayError, Plane};
use crate::health::{Health, StoreStatus};
use crate::http_util::{self, Response};
use crate::keys::{Actor, KeyCache, KeyService};
use crate::metrics::Metrics;
use crate::store::writer::UsageWriter;

/// Largest management request body; key settings are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest a management request body may pause (a client that stalls its body would
/// otherwise hold its connection, on the socket or over HTTPS, indefinitely).
pub const BODY_GAP: std::time::Duration = std::time::Duration::from_secs(30);

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    UnixSocket,
    Https,
}

pub struct AdminApi {
    pub keys: Arc<KeyService>,
    pub tokens: Arc<AdminTokens>,
    pub metrics: Arc<Metrics>,
    pub cache: Arc<KeyCache>,
    pub usage: UsageWriter,
    /// Failed HTTPS authentications per client address: their delay and warnings.
    pub failed_logins: FailedLogins,
    /// What `GET /v1/cluster` reports: mode, replicas, backends.
    pub cluster: cluster::ClusterInputs,
    /// The backends `/healthz` reports (the same answer as the proxy listener's).
    pub health: Arc<Health>,
    /// The providers this daemon runs (SPEC §10): what `GET /v1/providers` lists and what
    /// a key's `allowed_providers` may name.
    pub providers: gateway_shared::api::ProviderList,
}

impl AdminApi {
    pub async fn handle(
        &self,
        actor: Actor,
        transport: Transport,
        request: http::Request<Incoming>,
    ) -> Response {
        let has_body = !hyper::body::Body::is_end_stream(request.body());
        match self.route(actor, transport, request).await {
            Ok(response) => response,
            Err(err) => closing_if(has_body, err.into_response(Plane::Management)),
        }
    }

    /// HTTPS: every request needs `Authorization: Bearer gwadm-…` naming a live admin token;
    /// the token's id is the actor. A refusal is answered after the delay `client`'s
    /// failures have earned (none for the first few) and closes the connection, so an
    /// unauthenticated client cannot keep its connection slot by trying again on it.
    pub async fn handle_https(
        &self,
        client: SocketAddr,
        mut request: http::Request<Incoming>,
    ) -> Response {
        if let Some(value) = request.headers_mut().get_mut(http::header::AUTHORIZATION) {
            value.set_sensitive(true);
        }
        let presented = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::http_util::bearer_token);
        let reason = match presented.map(|token| self.tokens.authenticate(token)) {
            Some(Ok(actor)) => return self.handle(actor, Transport::Https, request).await,
            Some(Err(reason)) => reason,
            None => AuthFailure::Missing,
        };
        self.metrics.auth_failure(ErrorCode::Unauthorized);
        self.metrics.admin_auth_failure(reason.as_str());
        let delay = self.failed_logins.failed(client, reason);
        if !delay.is_zero() {
            self.metrics.admin_auth_slowed.inc();
            tokio::time::sleep(delay).await;
        }
        let refusal = GatewayError::new(
            ErrorCode::Unauthorized,
            "This listener needs Authorization: Bearer with a live admin token \
             (create one with gwctl admin-tokens create on the server).",
        )
        .into_response(Plane::Management);
        closing_if(true, refusal)
    }

    async fn route(
        &self,
        actor: Actor,
        transport: Transport,
        request: http::Request<Incoming>,
    ) -> Result<Response, GatewayError> {
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let method = request.method().clone();
        // With the shared store away, what this replica holds may be stale (a peer that still
        // reaches it may have changed keys) and no change can be saved: every management
        // route but health, metrics and the cluster's status answers 503 until it returns.
        if self.health.store() == StoreStatus::Unavailable
            && segments.first() == Some(&"v1")
            && segments.get(1) != Some(&"cluster")
        {
            return Err(GatewayError::store_unavailable());
        }
        use http::Method as M;
        match (segments.as_slice(), &method) {
            (["healthz"], &M::GET) => Ok(self.health.report(false).response()),
            (["v1", "keys"], &M::GET) => keys::list(self, &request).await,
            (["v1", "keys"], &M::POST) => keys::create(self, &actor, request).await,
            (["v1", "keys", id], &M::GET) => keys::show(self, id).await,
            (["v1", "keys", id], &M::PATCH) => keys::edit(self, &actor, id, request).await,
            (["v1", "keys", id], &M::DELETE) => keys::revoke(self, &actor, id).await,
            (["v1", "keys", id, "usage"], &M::GET) => keys::usage(self, id, &request).await,
            (["v1", "keys", id, "rotate"], &M::POST) => {
                keys::rotate(self, &actor, id, request).await
            }
            (["v1", "audit"], &M::GET) => audit::list(self, &request).await,
            (["v1", "cluster"], &M::GET) => Ok(cluster::status(self)),
            (["v1", "providers"], &M::GET) => Ok(http_util::json(200, &self.providers)),
            (["metrics"], &M::GET) => Ok(self.metrics_response()),
            (["v1", "admin-tokens", ..], _) if transport == Transport::Https => {
                Err(GatewayError::new(
                    ErrorCode::Unauthorized,
                    "Admin tokens can be created, listed and revoked only over the Unix socket.",
                ))
            }
            (["v1", "admin-tokens"], &M::GET) => Ok(http_util::json(200, &self.tokens.list())),
            (["v1", "admin-tokens"], &M::POST) => admin_tokens::create(self, &actor, request).await,
            (["v1", "admin-tokens", id], &M::DELETE) => {
                admin_tokens::revoke(self, &actor, id).await
            }
            (route, _) if allowed_methods(route).is_some() => {
                let allowed = allowed_methods(route).unwrap_or_default();
                let mut allow = http::HeaderMap::new();
                allow.insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
                Err(GatewayError::new(
                    ErrorCode::MethodNotAllowed,
                    format!(
                        "{method} is not supported on {}; use {allowed}.",
                        redact_secrets(&path)
                    ),
                )
                .with_headers(allow))
            }
            _ => Err(GatewayError::new(
                ErrorCode::UnknownRoute,
                format!("There is no management route {}.", redact_secrets(&path)),
            )),
        }
    }
}

/// An error answer to a request that came with a body says `Connection: close`: the body
/// may be unread (refused before it was needed), and hyper then closes the connection after
/// answering, which a keep-alive client would otherwise learn only from its next request
/// failing. Management errors are rare; a new connection costs little.
fn closing_if(has_body: bool, mut response: Response) -> Response {
    if has_body {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The methods a management route answers (for 405's `Allow`); `None` for no such route.
fn allowed_methods(route: &[&str]) -> Option<&'static str> {
    match route {
        ["healthz"]
        | ["v1", "keys", _, "usage"]
        | ["v1", "audit"]
        | ["v1", "cluster"]
        | ["v1", "providers"]
        | ["metrics"] => Some("GET"),
        ["v1", "keys"] | ["v1", "admin-tokens"] => Some("GET, POST"),
        ["v1", "keys", _] => Some("GET, PATCH, DELETE"),
        ["v1", "keys", _, "rotate"] => Some("POST"),
        ["v1", "admin-tokens", _] => Some("DELETE"),
        _ => None,
    }
}

impl AdminApi {
    /// Gauges that are read rather than counted are set at scrape time.
    fn metrics_response(&self) -> Response {
        let open = self.cache.open_reservations();
        self.metrics
            .open_reservations
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        let up = |is_up: bool| i64::from(is_up);
        self.metrics
            .backend_up
            .get_or_create(&crate::metrics::BackendLabels { backend: "store" })
            .set(up(self.health.store() == StoreStatus::Ok));
        self.metrics
            .backend_up
            .get_or_create(&crate::metrics::BackendLabels { backend: "limits" })
            .set(up(
                self.health.limits() != crate::health::LimitsStatus::Unavailable
            ));
        if self.cluster.mode == gateway_shared::api::ClusterMode::Cluster {
            // Cluster mode: the shared limits are Redis.
            self.metrics
                .backend_up
                .get_or_create(&crate::metrics::BackendLabels { backend: "redis" })
                .set(up(self.health.limits() == crate::health::LimitsStatus::Ok));
        }
        self.metrics
            .usage_queue_depth
            .set(i64::try_from(self.usage.queue_depth()).unwrap_or(i64::MAX));
        let mut response = http::Response::new(http_util::full(self.metrics.render()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        response
    }
}

/// Reads a JSON body: 413 beyond the limit, 400 `invalid_argument` naming `body` if malformed.
async fn json_body(request: http::Request<Incoming>) -> Result<serde_json::Value, GatewayError> {
    let bytes = http_util::read_body(request, MAX_BODY_BYTES, BODY_GAP).await?;
    strict_json::parse(&bytes).map_err(|err| {
        GatewayError::new(
            ErrorCode::InvalidArgument,
            format!("Invalid body: not valid JSON ({err})."),
        )
    })
}

/// The fields of a small JSON object body, refusing unknown ones by name.
fn object_with<'a>(
    body: &'a serde_json::Value,
    known: &[&str],
) -> Result<&'a serde_json::Map<String, serde_json::Value>, GatewayError> {
    use gateway_shared::validate::FieldError;
    let object = body
        .as_object()
        .ok_or_else(|| FieldError::invalid("body", "must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(FieldError::invalid(
            unknown.as_str(),
            format!("unknown field (expected: {})", known.join(", ")),
        )
        .into());
    }
    Ok(object)
}
