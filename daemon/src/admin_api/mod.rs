//! The management API (SPEC §6): one router for every transport.
//!
//! Transports differ only in how they authenticate and whom they name as the actor; they
//! hand this module an [`Actor`] and the request. Handlers are thin: decode a `shared::api`
//! type, call [`KeyService`], encode the answer.

mod audit;
mod keys;
mod query;

use std::sync::Arc;

use gateway_shared::ErrorCode;
use hyper::body::Incoming;

use crate::error::{GatewayError, Plane};
use crate::http_util::{self, Response};
use crate::keys::{Actor, KeyService};

/// Largest management request body; key settings are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct AdminApi {
    pub keys: Arc<KeyService>,
}

impl AdminApi {
    pub async fn handle(&self, actor: Actor, request: http::Request<Incoming>) -> Response {
        match self.route(actor, request).await {
            Ok(response) => response,
            Err(err) => err.into_response(Plane::Management),
        }
    }

    async fn route(
        &self,
        actor: Actor,
        request: http::Request<Incoming>,
    ) -> Result<Response, GatewayError> {
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let method = request.method().clone();
        use http::Method as M;
        match (segments.as_slice(), &method) {
            (["healthz"], &M::GET) => Ok(http_util::json_response(200, r#"{"status":"ok"}"#)),
            (["v1", "keys"], &M::GET) => keys::list(self, &request),
            (["v1", "keys"], &M::POST) => keys::create(self, &actor, request).await,
            (["v1", "keys", id], &M::GET) => keys::show(self, id),
            (["v1", "keys", id], &M::PATCH) => keys::edit(self, &actor, id, request).await,
            (["v1", "keys", id], &M::DELETE) => keys::revoke(self, &actor, id).await,
            (["v1", "keys", id, "usage"], &M::GET) => keys::usage(self, id, &request).await,
            (["v1", "audit"], &M::GET) => audit::list(self, &request).await,
            (
                ["healthz"]
                | ["v1", "keys"]
                | ["v1", "keys", _]
                | ["v1", "keys", _, "usage"]
                | ["v1", "audit"],
                _,
            ) => Err(GatewayError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not supported on {path}."),
            )),
            _ => Err(GatewayError::new(
                ErrorCode::UnknownRoute,
                format!("There is no management route {path}."),
            )),
        }
    }
}

/// Reads a JSON body: 413 beyond the limit, 400 `invalid_argument` naming `body` if malformed.
async fn json_body(request: http::Request<Incoming>) -> Result<serde_json::Value, GatewayError> {
    let bytes = http_util::read_body(request, MAX_BODY_BYTES).await?;
    serde_json::from_slice(&bytes).map_err(|err| {
        GatewayError::new(
            ErrorCode::InvalidArgument,
            format!("Invalid body: not valid JSON ({err})."),
        )
    })
}
