//! `/v1/admin-tokens` handlers (Unix socket only; the router refuses them over HTTPS).

use gateway_shared::api::CreateAdminToken;
use hyper::body::Incoming;

use gateway_shared::validate::FieldError;

use super::{AdminApi, json_body, object_with};
use crate::error::GatewayError;
use crate::http_util::{self, Response};
use crate::keys::Actor;

pub async fn create(
    api: &AdminApi,
    actor: &Actor,
    request: http::Request<Incoming>,
) -> Result<Response, GatewayError> {
    let body = json_body(request).await?;
    let object = object_with(&body, &["name"])?;
    let name = match object.get("name") {
        Some(serde_json::Value::String(name)) => name.clone(),
        Some(_) => return Err(FieldError::invalid("name", "must be a string").into()),
        None => return Err(FieldError::invalid("name", "is required").into()),
    };
    Ok(http_util::json(
        201,
        &api.tokens.create(actor, CreateAdminToken { name }).await?,
    ))
}

pub async fn revoke(api: &AdminApi, actor: &Actor, id: &str) -> Result<Response, GatewayError> {
    Ok(http_util::json(200, &api.tokens.revoke(actor, id).await?))
}
