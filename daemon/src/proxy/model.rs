//! The model a request names, and the model check (SPEC §3).

use bytes::Bytes;
use gateway_shared::ErrorCode;
use serde::Deserialize;

use super::route::ModelSource;
use crate::error::GatewayError;
use crate::keys::policy::Policy;

/// The model named by the request, if any. A JSON body that does not parse is a 400: the
/// gateway cannot check what it cannot read.
pub fn named(
    source: &ModelSource,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Result<Option<String>, GatewayError> {
    match source {
        ModelSource::Listing | ModelSource::None => Ok(None),
        ModelSource::Path(model) => Ok(Some(model.clone())),
        ModelSource::Body => {
            if !is_json(headers, body) {
                return Ok(None);
            }
            #[derive(Deserialize)]
            struct ModelField {
                model: Option<serde_json::Value>,
            }
            let parsed: ModelField = serde_json::from_slice(body).map_err(|err| {
                GatewayError::new(
                    ErrorCode::InvalidRequest,
                    format!("The request body is not valid JSON: {err}."),
                )
            })?;
            match parsed.model {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(model)) => Ok(Some(model)),
                Some(_) => Err(GatewayError::new(
                    ErrorCode::InvalidRequest,
                    "The request's \"model\" must be a string.",
                )),
            }
        }
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

    #[test]
    fn reads_the_model_from_a_json_body() {
        let body =
            Bytes::from_static(br#"{"messages": [], "model": "gpt-4o-mini", "stream": true}"#);
        assert_eq!(
            named(&ModelSource::Body, &json_headers(), &body).ok(),
            Some(Some("gpt-4o-mini".into()))
        );
        let no_model = Bytes::from_static(br#"{"input": "x"}"#);
        assert_eq!(
            named(&ModelSource::Body, &json_headers(), &no_model).ok(),
            Some(None)
        );
        let bad = Bytes::from_static(b"{not json");
        let err = named(&ModelSource::Body, &json_headers(), &bad).expect_err("bad json");
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        let number = Bytes::from_static(br#"{"model": 4}"#);
        assert!(named(&ModelSource::Body, &json_headers(), &number).is_err());
        let multipart = Bytes::from_static(b"--x\r\n");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            "multipart/form-data; boundary=x".parse().expect("value"),
        );
        assert_eq!(
            named(&ModelSource::Body, &headers, &multipart).ok(),
            Some(None)
        );
    }
}
