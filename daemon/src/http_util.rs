//! Small HTTP plumbing shared by both listeners: the response body type, JSON responses and
//! a size-bounded body read.

use bytes::Bytes;
use gateway_shared::ErrorCode;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;

use crate::error::GatewayError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = BoxBody<Bytes, BoxError>;
pub type Response = http::Response<ResponseBody>;

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn json_response(status: u16, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(full(body));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serialises `value` as the JSON body of a response with `status`.
pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_response(status, bytes),
        Err(err) => GatewayError::internal(err).into_response(crate::error::Plane::Management),
    }
}

/// Reads a whole request body of at most `limit` bytes: 413 `body_too_large` beyond it,
/// decided from `Content-Length` before reading when the client sent one.
pub async fn read_body(
    request: http::Request<Incoming>,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let (parts, body) = request.into_parts();
    read_limited(&parts.headers, body, limit).await
}

pub async fn read_limited(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorCode::BodyTooLarge,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Frame by frame rather than `collect()`: a body that arrives in one frame (most) is
    // returned as that frame, with no list of frames built around it.
    let mut body = Limited::new(body, limit);
    let mut whole: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                GatewayError::new(
                    ErrorCode::InvalidRequest,
                    format!("The request body could not be read: {err}."),
                )
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match (&whole, &mut joined) {
            (None, _) => whole = Some(data),
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
            (Some(first), None) => {
                let mut both = bytes::BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(match joined {
        Some(joined) => joined.freeze(),
        None => whole.unwrap_or_default(),
    })
}
