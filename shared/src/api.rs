//! Request and response types of the management API (SPEC §6).
//!
//! Responses derive serde both ways so gwctl reads exactly what the daemon writes. Requests
//! are decoded by hand from a JSON object (`from_json`) rather than derived: SPEC §6 wants
//! every rejection to name its field and to tell "unknown field" (`invalid_argument`) apart
//! from "known but not editable" (`field_not_editable`), which serde's derive cannot.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::money::{self, Nanodollars};
use crate::period::SpendReset;
use crate::provider::Provider;
use crate::state::KeyState;
use crate::validate::{self, EDITABLE, FieldError, NOT_EDITABLE};

mod cluster;
mod providers;
pub use cluster::{
    BackendHealth, BackendStatus, Backends, ClusterMode, ClusterStatus, LimitsKind, ReplicaView,
    StoreKind,
};
pub use providers::{ProviderList, ProviderView};

/// A key as every read of the management API shows it. Never carries the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub state: KeyState,
    pub allowed_providers: Vec<Provider>,
    pub allowed_models: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub rate_limit_rpm: Option<u32>,
    pub spend_limit_usd: Option<Nanodollars>,
    pub spend_reset: Option<SpendReset>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub spend_period_usd: Nanodollars,
    pub spend_total_usd: Nanodollars,
    pub period_resets_at: Option<Timestamp>,
    pub request_count: u64,
    /// The key that replaced this one, when it was rotated (its secret works until
    /// `revoked_at`, the end of the grace period).
    #[serde(default)]
    pub replaced_by: Option<String>,
}

/// The answer to create (and rotate): the key and, this once, its secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyCreated {
    #[serde(flatten)]
    pub key: KeyView,
    pub secret: String,
}

impl std::fmt::Debug for KeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCreated")
            .field("key", &self.key)
            .field("secret", &"***")
            .finish()
    }
}

/// One page of `GET /v1/keys`, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Default and maximum page size of list endpoints.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;

/// One row of the audit log: who changed what, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Timestamp,
    /// `uid:<n>` for the Unix socket, the admin token's id over HTTPS.
    pub actor: String,
    /// `key.create`, `key.update`, `key.revoke`, …
    pub action: String,
    pub key_id: Option<String>,
    /// What changed, without secrets.
    pub details: Value,
}

/// One page of `GET /v1/audit`, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/keys/{id}/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`: spend and requests over a range
/// of UTC days (both ends included; default the last 30 days up to today).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub key_id: String,
    pub from: jiff::civil::Date,
    pub to: jiff::civil::Date,
    pub total: UsageTotals,
    /// One entry per day of the range, oldest first, days without requests included.
    pub by_day: Vec<DailyUsage>,
    /// One entry per (provider, model) used in the range, most expensive first.
    pub by_model: Vec<ModelUsage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Nanodollars,
    /// Requests whose cost is an estimate (usage never reported, e.g. a client disconnect).
    pub estimated_requests: u64,
    /// Requests that could not be priced (model with no price): counted, never free.
    pub unpriced_requests: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DailyUsage {
    pub date: jiff::civil::Date,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub provider: Provider,
    pub model: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// `GET /gateway/v1/key` on the proxy listener: a key reads its own state and headroom
/// (SPEC §5), authenticated by itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub state: KeyState,
    pub allowed_providers: Vec<Provider>,
    pub allowed_models: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub spend_limit_usd: Option<Nanodollars>,
    pub spend_reset: Option<SpendReset>,
    pub spend_period_usd: Nanodollars,
    pub spend_total_usd: Nanodollars,
    /// Budget left this period, less what requests in flight have reserved; absent
    /// without a spend limit.
    pub remaining_usd: Option<Nanodollars>,
    /// Worst-case cost reserved by this key's requests in flight.
    pub reserved_usd: Nanodollars,
    pub requests_in_flight: u32,
    pub period_resets_at: Option<Timestamp>,
    pub rate_limit_rpm: Option<u32>,
    /// Requests the key may still make in the current 60 s window.
    pub rate_limit_remaining: Option<u32>,
    /// Seconds until a window slot frees (0 when none is in use).
    pub rate_limit_reset_seconds: Option<f64>,
}

/// `POST /v1/keys/{id}/rotate` body. `grace_period_seconds` is how long the old key keeps
/// working (0, the default: revoked now).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    #[serde(default)]
    pub grace_period_seconds: u64,
}

/// Longest rotation grace period: 90 days.
pub const ROTATE_GRACE_MAX_SECONDS: u64 = 90 * 24 * 3600;

/// The answer to rotate (201): the new key with its secret, shown once, and the old key
/// with the instant its revocation takes effect (`revoked_at`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotated {
    #[serde(flatten)]
    pub created: KeyCreated,
    pub previous: KeyView,
}

impl std::fmt::Debug for KeyRotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRotated")
            .field("created", &self.created)
            .field("previous", &self.previous)
            .finish()
    }
}

/// An admin token as listed (never its secret). Tokens authenticate the HTTPS management
/// listener; they are created, listed and revoked over the Unix socket only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminTokenView {
    /// `tok_` and 20 base62 characters; the audit actor of changes made with it.
    pub id: String,
    pub name: String,
    /// `gwadm-` and its first four random characters.
    pub prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

/// `POST /v1/admin-tokens` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminToken {
    pub name: String,
}

/// The answer to creating an admin token (201): shown once.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminTokenCreated {
    #[serde(flatten)]
    pub token: AdminTokenView,
    pub secret: String,
}

impl std::fmt::Debug for AdminTokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTokenCreated")
            .field("token", &self.token)
            .field("secret", &"***")
            .finish()
    }
}

/// `GET /v1/admin-tokens`, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminTokenList {
    pub tokens: Vec<AdminTokenView>,
}

/// `POST /v1/keys`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CreateKey {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_providers: Vec<Provider>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_rpm: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend_limit_usd: Option<Nanodollars>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend_reset: Option<SpendReset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// A change to one optional field: leave it, clear it (`null`) or set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Patch<T> {
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Patch::Keep => current,
            Patch::Clear => None,
            Patch::Set(value) => Some(value),
        }
    }

    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }
}

/// `PATCH /v1/keys/{id}`: absent fields are left as they are; `null` clears an optional one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateKey {
    pub name: Option<String>,
    pub allowed_providers: Option<Vec<Provider>>,
    pub allowed_models: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    pub rate_limit_rpm: Patch<u32>,
    pub spend_limit_usd: Patch<Nanodollars>,
    pub spend_reset: Patch<SpendReset>,
}

impl CreateKey {
    pub fn from_json(body: &Value) -> Result<Self, FieldError> {
        let object = as_object(body)?;
        for field in object.keys() {
            if !EDITABLE.contains(&field.as_str()) && field != "expires_at" {
                return Err(unknown_field(field, &["expires_at"]));
            }
        }
        let name = match object.get("name") {
            Some(Value::String(s)) => validate::name(s)?,
            Some(_) => return Err(FieldError::invalid("name", "must be a string")),
            None => return Err(FieldError::invalid("name", "is required")),
        };
        let spend_limit_usd = optional(object, "spend_limit_usd", spend_limit)?;
        let spend_reset = optional(object, "spend_reset", spend_reset)?;
        if spend_reset.is_some() && spend_limit_usd.is_none() {
            return Err(FieldError::invalid(
                "spend_reset",
                "needs a spend_limit_usd to reset",
            ));
        }
        Ok(Self {
            name,
            allowed_providers: optional(object, "allowed_providers", providers)?
                .unwrap_or_default(),
            allowed_models: optional(object, "allowed_models", models)?.unwrap_or_default(),
            allowed_ips: optional(object, "allowed_ips", ips)?.unwrap_or_default(),
            rate_limit_rpm: optional(object, "rate_limit_rpm", rpm)?,
            spend_limit_usd,
            spend_reset,
            expires_at: optional(object, "expires_at", |v| {
                let text = v.as_str().ok_or_else(|| {
                    FieldError::invalid("expires_at", "must be an RFC 3339 string")
                })?;
                validate::timestamp("expires_at", text)
            })?,
        })
    }
}

impl UpdateKey {
    pub fn from_json(body: &Value) -> Result<Self, FieldError> {
        let object = as_object(body)?;
        for field in object.keys() {
            if NOT_EDITABLE.contains(&field.as_str()) {
                return Err(FieldError::not_editable(field.as_str()));
            }
            if !EDITABLE.contains(&field.as_str()) {
                return Err(unknown_field(field, &[]));
            }
        }
        let required = |field: &str| -> Result<Option<&Value>, FieldError> {
            match object.get(field) {
                Some(Value::Null) => Err(FieldError::invalid(
                    field,
                    "cannot be null; send [] for no restriction",
                )),
                other => Ok(other),
            }
        };
        Ok(Self {
            name: match object.get("name") {
                None => None,
                Some(Value::String(s)) => Some(validate::name(s)?),
                Some(_) => return Err(FieldError::invalid("name", "must be a string")),
            },
            allowed_providers: required("allowed_providers")?.map(providers).transpose()?,
            allowed_models: required("allowed_models")?.map(models).transpose()?,
            allowed_ips: required("allowed_ips")?.map(ips).transpose()?,
            rate_limit_rpm: patch(object, "rate_limit_rpm", rpm)?,
            spend_limit_usd: patch(object, "spend_limit_usd", spend_limit)?,
            spend_reset: patch(object, "spend_reset", spend_reset)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The JSON body gwctl sends: only the fields being changed.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        if let Some(name) = &self.name {
            object.insert("name".into(), Value::from(name.as_str()));
        }
        if let Some(list) = &self.allowed_providers {
            object.insert(
                "allowed_providers".into(),
                list.iter().map(|p| p.as_str()).collect(),
            );
        }
        if let Some(list) = &self.allowed_models {
            object.insert(
                "allowed_models".into(),
                list.iter().map(String::as_str).collect(),
            );
        }
        if let Some(list) = &self.allowed_ips {
            object.insert(
                "allowed_ips".into(),
                list.iter().map(String::as_str).collect(),
            );
        }
        insert_patch(
            &mut object,
            "rate_limit_rpm",
            self.rate_limit_rpm,
            Value::from,
        );
        insert_patch(&mut object, "spend_limit_usd", self.spend_limit_usd, |n| {
            Value::from(n.as_dollars_f64())
        });
        insert_patch(&mut object, "spend_reset", self.spend_reset, |r| {
            Value::from(r.as_str())
        });
        Value::Object(object)
    }
}

fn insert_patch<T>(
    object: &mut Map<String, Value>,
    field: &str,
    patch: Patch<T>,
    to_value: impl Fn(T) -> Value,
) {
    match patch {
        Patch::Keep => {}
        Patch::Clear => {
            object.insert(field.into(), Value::Null);
        }
        Patch::Set(value) => {
            object.insert(field.into(), to_value(value));
        }
    }
}

fn as_object(body: &Value) -> Result<&Map<String, Value>, FieldError> {
    body.as_object()
        .ok_or_else(|| FieldError::invalid("body", "must be a JSON object"))
}

fn unknown_field(field: &str, extra: &[&str]) -> FieldError {
    let mut known: Vec<&str> = EDITABLE.to_vec();
    known.extend_from_slice(extra);
    FieldError::invalid(
        field,
        format!("unknown field (expected one of: {})", known.join(", ")),
    )
}

/// A field that may be absent or `null` (both mean "not set" on create).
fn optional<T>(
    object: &Map<String, Value>,
    field: &str,
    parse: impl Fn(&Value) -> Result<T, FieldError>,
) -> Result<Option<T>, FieldError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => parse(value).map(Some),
    }
}

fn patch<T>(
    object: &Map<String, Value>,
    field: &str,
    parse: impl Fn(&Value) -> Result<T, FieldError>,
) -> Result<Patch<T>, FieldError> {
    match object.get(field) {
        None => Ok(Patch::Keep),
        Some(Value::Null) => Ok(Patch::Clear),
        Some(value) => parse(value).map(Patch::Set),
    }
}

fn string_list<'a>(field: &str, value: &'a Value) -> Result<Vec<&'a str>, FieldError> {
    let items = value
        .as_array()
        .ok_or_else(|| FieldError::invalid(field, "must be an array of strings"))?;
    items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| FieldError::invalid(field, "must be an array of strings"))
        })
        .collect()
}

fn providers(value: &Value) -> Result<Vec<Provider>, FieldError> {
    validate::providers(&string_list("allowed_providers", value)?)
}

fn models(value: &Value) -> Result<Vec<String>, FieldError> {
    validate::model_globs(&string_list("allowed_models", value)?)
}

fn ips(value: &Value) -> Result<Vec<String>, FieldError> {
    validate::ips(&string_list("allowed_ips", value)?)
}

fn rpm(value: &Value) -> Result<u32, FieldError> {
    match value.as_u64() {
        Some(n) => validate::rate_limit_rpm(n),
        None => Err(FieldError::invalid(
            "rate_limit_rpm",
            format!("must be a positive whole number (got {value})"),
        )),
    }
}

fn spend_limit(value: &Value) -> Result<Nanodollars, FieldError> {
    let amount = money::parse_json(value)
        .map_err(|e| FieldError::invalid("spend_limit_usd", format!("{e} (got {value})")))?;
    validate::spend_limit(amount)
}

fn spend_reset(value: &Value) -> Result<SpendReset, FieldError> {
    let text = value.as_str().ok_or_else(|| {
        FieldError::invalid(
            "spend_reset",
            "must be \"daily\", \"weekly\" or \"monthly\"",
        )
    })?;
    text.parse()
        .map_err(|reason| FieldError::invalid("spend_reset", reason))
}

#[cfg(test)]
mod tests;
