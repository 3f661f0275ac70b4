//! What a key change is, decided from the key's current entry: pure functions of the row,
//! the request and the time, so that the service can decide again from a fresh row when
//! another replica changed the key meanwhile (see the service's module docs).

use gateway_shared::api::{Patch, RotateKey, UpdateKey};
use gateway_shared::validate::FieldError;
use gateway_shared::{ErrorCode, ProxyKey};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::super::cache::KeyEntry;
use super::super::record::{FIRST_VERSION, KeyRecord};
use super::Actor;
use crate::error::{GatewayError, Result};
use crate::store::AuditRecord;

/// `old` with the operator's edit applied: only the fields the request names change, so that
/// applied to a row another replica changed meanwhile it keeps that replica's change.
pub(super) fn edited(old: &KeyRecord, update: UpdateKey) -> Result<KeyRecord> {
    let mut new = old.clone();
    if let Some(name) = update.name {
        new.name = name;
    }
    if let Some(list) = update.allowed_providers {
        new.allowed_providers = list;
    }
    if let Some(list) = update.allowed_models {
        new.allowed_models = list;
    }
    if let Some(list) = update.allowed_ips {
        new.allowed_ips = list;
    }
    new.rate_limit_rpm = update.rate_limit_rpm.apply(old.rate_limit_rpm);
    new.spend_limit = update.spend_limit_usd.apply(old.spend_limit);
    // Clearing the limit clears its reset period too, unless the same request sets one
    // (which is then refused below: a reset period needs a limit).
    let reset_patch = match (update.spend_limit_usd, update.spend_reset) {
        (Patch::Clear, Patch::Keep) => Patch::Clear,
        (_, patch) => patch,
    };
    new.spend_reset = reset_patch.apply(old.spend_reset);
    if new.spend_reset.is_some() && new.spend_limit.is_none() {
        return Err(FieldError::invalid("spend_reset", "needs a spend_limit_usd to reset").into());
    }
    Ok(new)
}

/// A rotation of `old` at `now`, if its state allows one: the old key's row retiring after
/// the grace period, its successor under the new secret and id, and both audit rows.
pub(super) fn rotation(
    old: &KeyEntry,
    secret: &ProxyKey,
    new_id: &str,
    actor: &Actor,
    request: &RotateKey,
    now: Timestamp,
) -> Result<(KeyRecord, KeyRecord, Vec<AuditRecord>)> {
    let id = &old.id;
    if old.is_revoked_at(now) {
        return Err(GatewayError::new(
            ErrorCode::KeyRevoked,
            format!("Key {id} is revoked and cannot be rotated."),
        ));
    }
    if let Some(expired_at) = old.expires_at().filter(|at| *at <= now) {
        // Expiry is not editable, so the successor would be born expired: only a secret
        // burnt and the old key revoked.
        return Err(GatewayError::new(
            ErrorCode::KeyExpired,
            format!(
                "Key {id} expired at {expired_at} and cannot be rotated: its successor \
                 would be expired too. Create a new key instead."
            ),
        ));
    }
    if let Some(retires_at) = old.revoked_at() {
        // A second rotation would fork the key: two live successors, each with the
        // whole budget and rate limit.
        return Err(GatewayError::new(
            ErrorCode::KeyRevoked,
            format!(
                "Key {id} was already rotated and retires at {retires_at}: rotate its \
                 successor instead, or revoke this key now."
            ),
        ));
    }
    let grace = jiff::SignedDuration::from_secs(
        i64::try_from(request.grace_period_seconds).unwrap_or(i64::MAX),
    );
    let retire_at = now.checked_add(grace).unwrap_or(jiff::Timestamp::MAX);
    let mut previous = old.record();
    previous.revoked_at = Some(retire_at);
    previous.updated_at = now;
    // The successor is the same key with a new secret: it carries on the spend, request
    // count and rate window (shared with the old secret while both work, see
    // `KeyCache::insert_successor`), so a rotation never hands out a fresh budget.
    let new = KeyRecord {
        id: new_id.to_owned(),
        hash: secret.hash(),
        prefix: secret.display_prefix(),
        created_at: now,
        updated_at: now,
        revoked_at: None,
        version: FIRST_VERSION,
        ..previous.clone()
    };
    let audits = vec![
        audit(
            now,
            actor,
            "key.rotate",
            previous.id.clone(),
            json!({"new_key_id": new_id, "grace_period_seconds": request.grace_period_seconds, "revoked_at": previous.revoked_at}),
        ),
        audit(now, actor, "key.create", new_id.to_owned(), {
            let mut details = settings_json(&new);
            details["rotated_from"] = json!(previous.id);
            details
        }),
    ];
    Ok((previous, new, audits))
}

/// An audit row about one key, written with the change it describes.
pub(super) fn audit(
    at: jiff::Timestamp,
    actor: &Actor,
    action: &'static str,
    key_id: String,
    details: Value,
) -> AuditRecord {
    AuditRecord {
        at,
        actor: actor.0.clone(),
        action,
        key_id: Some(key_id),
        details,
    }
}

/// The settings of a key as the audit log records them at creation.
pub(super) fn settings_json(r: &KeyRecord) -> Value {
    json!({
        "name": r.name,
        "prefix": r.prefix,
        "allowed_providers": r.allowed_providers,
        "allowed_models": r.allowed_models,
        "allowed_ips": r.allowed_ips,
        "rate_limit_rpm": r.rate_limit_rpm,
        "spend_limit_usd": r.spend_limit,
        "spend_reset": r.spend_reset,
        "expires_at": r.expires_at,
    })
}

/// `{"field": {"from": old, "to": new}}` for every editable field that changed.
pub(super) fn diff(old: &KeyRecord, new: &KeyRecord) -> Map<String, Value> {
    let (old, new) = (settings_json(old), settings_json(new));
    let mut changes = Map::new();
    if let (Value::Object(old), Value::Object(new)) = (old, new) {
        for (field, to) in new {
            let from = old.get(&field).cloned().unwrap_or(Value::Null);
            if from != to {
                changes.insert(field, json!({"from": from, "to": to}));
            }
        }
    }
    changes
}
