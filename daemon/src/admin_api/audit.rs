//! `/v1/audit`: who changed what, when.

use hyper::body::Incoming;

use super::AdminApi;
use super::query::Query;
use crate::error::GatewayError;
use crate::http_util::{self, Response};

pub async fn list(
    api: &AdminApi,
    request: &http::Request<Incoming>,
) -> Result<Response, GatewayError> {
    let query = Query::parse(request.uri(), &["key_id", "limit", "cursor"])?;
    let page = api
        .keys
        .audit(
            query.get("key_id").map(str::to_owned),
            query.get("cursor"),
            query.limit()?,
        )
        .await?;
    Ok(http_util::json(200, &page))
}
