//! Model listings filtered to what the key may use.
//!
//! SPEC §3 lets listings through without a model check; going a step further, a key
//! restricted to `gpt-4o*` sees only those models, so SDK model pickers offer what will work.
//! Listings are small JSON documents, so this one response is read whole.

use crate::config::Kind;
use bytes::Bytes;
use serde_json::Value;

use crate::keys::policy::Policy;

/// The listing with models the policy refuses removed; the input unchanged if it is not a
/// listing this code understands.
pub fn filter(provider: Kind, body: &Bytes, policy: &Policy) -> Bytes {
    let Ok(mut document) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    let (field, id_of): (&str, fn(&Value) -> Option<&str>) = match provider {
        Kind::Openai | Kind::AzureOpenai | Kind::Anthropic => {
            ("data", |m| m.get("id").and_then(Value::as_str))
        }
        Kind::Gemini => ("models", |m| {
            m.get("name")
                .and_then(Value::as_str)
                .map(|n| n.strip_prefix("models/").unwrap_or(n))
        }),
    };
    let Some(models) = document.get_mut(field).and_then(Value::as_array_mut) else {
        return body.clone();
    };
    models.retain(|model| id_of(model).is_some_and(|id| policy.allows_model(id)));
    serde_json::to_vec(&document)
        .map(Bytes::from)
        .unwrap_or_else(|_| body.clone())
}
