//! `/v1/keys` handlers.

use gateway_shared::KeyState;
use gateway_shared::api::{CreateKey, RotateKey, UpdateKey};
use gateway_shared::validate::{self, FieldError};
use hyper::body::Incoming;

use super::query::Query;
use super::{AdminApi, json_body};
use crate::error::GatewayError;
use crate::http_util::{self, Response};
use crate::keys::Actor;

pub async fn list(
    api: &AdminApi,
    request: &http::Request<Incoming>,
) -> Result<Response, GatewayError> {
    let query = Query::parse(request.uri(), &["state", "limit", "cursor"])?;
    let state = query
        .get("state")
        .map(|text| {
            text.parse::<KeyState>()
                .map_err(|reason| FieldError::invalid("state", reason))
        })
        .transpose()?;
    let page = api
        .keys
        .list(state, query.get("cursor"), query.limit()?)
        .await?;
    Ok(http_util::json(200, &page))
}

pub async fn create(
    api: &AdminApi,
    actor: &Actor,
    request: http::Request<Incoming>,
) -> Result<Response, GatewayError> {
    let body = json_body(request).await?;
    let create = CreateKey::from_json(&body)?;
    validate::providers_known(&create.allowed_providers, &api.providers.names())?;
    let created = api.keys.create(actor, create).await?;
    Ok(http_util::json(201, &created))
}

pub async fn show(api: &AdminApi, id: &str) -> Result<Response, GatewayError> {
    Ok(http_util::json(200, &api.keys.get(id).await?))
}

pub async fn edit(
    api: &AdminApi,
    actor: &Actor,
    id: &str,
    request: http::Request<Incoming>,
) -> Result<Response, GatewayError> {
    // The key must exist before its body is judged: an unknown id is a 404 whatever the body.
    api.keys.get(id).await?;
    let body = json_body(request).await?;
    let update = UpdateKey::from_json(&body)?;
    if let Some(providers) = &update.allowed_providers {
        validate::providers_known(providers, &api.providers.names())?;
    }
    Ok(http_util::json(
        200,
        &api.keys.update(actor, id, update).await?,
    ))
}

pub async fn revoke(api: &AdminApi, actor: &Actor, id: &str) -> Result<Response, GatewayError> {
    Ok(http_util::json(200, &api.keys.revoke(actor, id).await?))
}

pub async fn usage(
    api: &AdminApi,
    id: &str,
    request: &http::Request<Incoming>,
) -> Result<Response, GatewayError> {
    let query = Query::parse(request.uri(), &["from", "to"])?;
    let date = |field: &str| -> Result<Option<jiff::civil::Date>, GatewayError> {
        query
            .get(field)
            .map(|text| {
                text.parse::<jiff::civil::Date>().map_err(|_| {
                    FieldError::invalid(field, format!("{text:?} is not a date like 2026-11-26"))
                        .into()
                })
            })
            .transpose()
    };
    let report = api.keys.usage(id, date("from")?, date("to")?).await?;
    Ok(http_util::json(200, &report))
}

pub async fn rotate(
    api: &AdminApi,
    actor: &Actor,
    id: &str,
    request: http::Request<Incoming>,
) -> Result<Response, GatewayError> {
    api.keys.get(id).await?;
    let bytes = http_util::read_body(request, super::MAX_BODY_BYTES, super::BODY_GAP).await?;
    let rotate: RotateKey = if bytes.iter().all(u8::is_ascii_whitespace) {
        RotateKey::default()
    } else {
        let value = super::strict_json::parse(&bytes).map_err(|err| {
            GatewayError::new(
                gateway_shared::ErrorCode::InvalidArgument,
                format!("Invalid body: not valid JSON ({err})."),
            )
        })?;
        let object = super::object_with(&value, &["grace_period_seconds"])?;
        match object.get("grace_period_seconds") {
            None => RotateKey::default(),
            Some(seconds) => RotateKey {
                grace_period_seconds: seconds.as_u64().ok_or_else(|| {
                    FieldError::invalid(
                        "grace_period_seconds",
                        "must be a whole number of seconds (0: revoke now)",
                    )
                })?,
            },
        }
    };
    Ok(http_util::json(
        201,
        &api.keys.rotate(actor, id, rotate).await?,
    ))
}
