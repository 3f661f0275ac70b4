//! The model a request names, and the model check (SPEC §3).

use bytes::Bytes;
use gateway_shared::ErrorCode;
use serde_json::{Map, Value};

use super::route::ModelSource;
use crate::error::GatewayError;
use crate::keys::policy::Policy;

/// The request body as a JSON object, when its model is named there and it is JSON. A JSON
/// body that does not parse is a 400: the gateway cannot check what it cannot read.
pub fn json_body(
    source: &ModelSource,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Result<Option<Map<String, Value>>, GatewayError> {
    if *source != ModelSource::Body || !is_json(headers, body) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(_) => Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            "The request body must be a JSON object.",
        )),
        Err(err) => Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            format!("The request body is not valid JSON: {err}."),
        )),
    }
}

/// The model named by the request, if any.
pub fn named(
    source: &ModelSource,
    json: Option<&Map<String, Value>>,
) -> Result<Option<String>, GatewayError> {
    match source {
        ModelSource::Listing | ModelSource::None => Ok(None),
        ModelSource::Path(model) => Ok(Some(model.clone())),
        ModelSource::Body => match json.and_then(|j| j.get("model")) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(model)) => Ok(Some(model.clone())),
            Some(_) => Err(GatewayError::new(
                ErrorCode::InvalidRequest,
                "The request's \"model\" must be a string.",
            )),
        },
    }
}

/// 403 `model_not_allowed` unless the key allows `model`. Listings pass; a request that names
/// no model passes only keys without a model restriction.
pub fn check(
    source: &ModelSource,
    model: Option<&str>,
    policy: &Policy,
) -> Result<(), GatewayError> {
    if matches!(source, ModelSource::Listing) {
        return Ok(());
    }
    match model {
        Some(model) if policy.allows_model(model) => Ok(()),
        Some(model) => Err(GatewayError::new(
            ErrorCode::ModelNotAllowed,
            format!("This key may not use the model {model:?}."),
        )),
        None if !policy.restricts_models() => Ok(()),
        None => Err(GatewayError::new(
            ErrorCode::ModelNotAllowed,
            "This key is restricted to certain models and this request names none.",
        )),
    }
}

/// JSON by content type, or by shape when the client sent none.
fn is_json(headers: &http::HeaderMap, body: &Bytes) -> bool {
    match headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(content_type) => {
            let essence = content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        }
        None => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            "application/json; charset=utf-8".parse().expect("value"),
        );
        headers
    }

    fn named_in(
        headers: &http::HeaderMap,
        body: &'static [u8],
    ) -> Result<Option<String>, GatewayError> {
        let body = Bytes::from_static(body);
        let json = json_body(&ModelSource::Body, headers, &body)?;
        named(&ModelSource::Body, json.as_ref())
    }

    #[test]
    fn reads_the_model_from_a_json_body() {
        let headers = json_headers();
        assert_eq!(
            named_in(
                &headers,
                br#"{"messages": [], "model": "gpt-4o-mini", "stream": true}"#
            )
            .ok(),
            Some(Some("gpt-4o-mini".into()))
        );
        assert_eq!(named_in(&headers, br#"{"input": "x"}"#).ok(), Some(None));
        assert_eq!(
            named_in(&headers, b"{not json").map_err(|e| e.code).err(),
            Some(ErrorCode::InvalidRequest)
        );
        assert!(named_in(&headers, br#"{"model": 4}"#).is_err());
        assert!(named_in(&headers, br#"[1]"#).is_err());
        let mut multipart = http::HeaderMap::new();
        multipart.insert(
            "content-type",
            "multipart/form-data; boundary=x".parse().expect("value"),
        );
        assert_eq!(named_in(&multipart, b"--x\r\n").ok(), Some(None));
    }
}
