//! Admin tokens: the credentials of the HTTPS management listener (SPEC §6).
//!
//! Same recipe as proxy keys: `gwadm-` secrets from the OS CSPRNG with a checksum, shown once,
//! stored as SHA-256 and a display prefix. They are few, so they live in a small in-memory
//! list, updated after each commit like the key table. Creating, listing and revoking them
//! is allowed on the Unix socket only (the router enforces it): a leaked token must not be
//! able to mint more tokens.
//!
//! In a cluster, other replicas' changes arrive through [`AdminTokens::apply_stored`] (see
//! `keys::sync`). Every update of the list goes through one merge rule, so that an update
//! built from an older copy can never undo a newer one: a revocation is permanent, and the
//! last use only moves forward.

use gateway_shared::key::redact_secrets;
use std::sync::{Arc, RwLock};

use gateway_shared::api::{AdminTokenCreated, AdminTokenList, AdminTokenView, CreateAdminToken};
use gateway_shared::key::{AdminToken, random_base62};
use gateway_shared::{ErrorCode, KeyHash};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::clock::Clock;
use crate::error::{GatewayError, Result};
use crate::keys::Actor;
use crate::store::{AuditRecord, Store};

/// How stale `last_used_at` may be on disk: it is written at most once a minute per token.
const LAST_USED_WRITE_INTERVAL: SignedDuration = SignedDuration::from_secs(60);

/// Why a presented admin credential was refused: a metrics label and a log field, never
/// anything of the credential itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer …` at all.
    Missing,
    /// Not an admin token (wrong prefix, length or checksum): a typo, or a guess.
    Malformed,
    /// A well-formed token that was never issued here.
    Unknown,
    Revoked,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown",
            AuthFailure::Revoked => "revoked",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub hash: KeyHash,
    pub prefix: String,
    pub name: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

impl TokenRecord {
    /// Takes `newer`'s lifecycle into this copy by the one merge rule of tokens: a
    /// revocation is permanent (tokens cannot be un-revoked, so a copy without one is older)
    /// and the last use only moves forward. The in-memory list and both stores apply it, so
    /// a write built from an older copy can undo nothing, wherever it lands.
    pub fn merge_lifecycle(&mut self, newer: &TokenRecord) {
        self.revoked_at = self.revoked_at.or(newer.revoked_at);
        self.last_used_at = self.last_used_at.max(newer.last_used_at);
    }

    pub fn view(&self) -> AdminTokenView {
        AdminTokenView {
            id: self.id.clone(),
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            created_at: self.created_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
        }
    }
}

pub struct AdminTokens {
    store: Store,
    clock: Arc<dyn Clock>,
    // Std RwLock: a handful of tokens, held for a scan or a push, never across `.await`.
    tokens: RwLock<Vec<TokenRecord>>,
    writes: tokio::sync::Mutex<()>,
}

impl AdminTokens {
    pub async fn load(store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<AdminTokens> {
        let tokens = store.load_admin_tokens().await?;
        Ok(AdminTokens {
            store,
            clock,
            tokens: RwLock::new(tokens),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    pub async fn create(
        &self,
        actor: &Actor,
        request: CreateAdminToken,
    ) -> Result<AdminTokenCreated> {
        let name = gateway_shared::validate::name(&request.name)?;
        let _serialised = self.writes.lock().await;
        let random = |what: &str| {
            GatewayError::internal(anyhow::anyhow!("OS random source failed generating {what}"))
        };
        let secret = AdminToken::generate().map_err(|_| random("a token"))?;
        let id = format!("tok_{}", random_base62(20).map_err(|_| random("an id"))?);
        let now = self.clock.now();
        let token = TokenRecord {
            id: id.clone(),
            hash: secret.hash(),
            prefix: secret.display_prefix(),
            name,
            created_at: now,
            revoked_at: None,
            last_used_at: None,
        };
        let audit = AuditRecord {
            at: now,
            actor: actor.0.clone(),
            action: "admin_token.create",
            key_id: None,
            details: json!({"token_id": id, "name": token.name, "prefix": token.prefix}),
        };
        self.store
            .save_admin_token(token.clone(), Some(audit))
            .await
            .map_err(GatewayError::internal)?;
        self.write().push(token.clone());
        tracing::info!(token_id = %id, actor = %actor.0, "admin token created");
        Ok(AdminTokenCreated {
            token: token.view(),
            secret: secret.expose().to_owned(),
        })
    }

    pub fn list(&self) -> AdminTokenList {
        AdminTokenList {
            tokens: self.read().iter().map(TokenRecord::view).collect(),
        }
    }

    /// Revokes a token now; revoking a revoked token changes nothing.
    pub async fn revoke(&self, actor: &Actor, id: &str) -> Result<AdminTokenView> {
        let _serialised = self.writes.lock().await;
        let Some(mut token) = self.read().iter().find(|t| t.id == id).cloned() else {
            return Err(GatewayError::new(
                ErrorCode::KeyNotFound,
                format!("No admin token has the id {:?}.", redact_secrets(id)),
            ));
        };
        if token.revoked_at.is_some() {
            return Ok(token.view());
        }
        let now = self.clock.now();
        token.revoked_at = Some(now);
        let audit = AuditRecord {
            at: now,
            actor: actor.0.clone(),
            action: "admin_token.revoke",
            key_id: None,
            details: json!({"token_id": id, "name": token.name, "prefix": token.prefix}),
        };
        self.store
            .save_admin_token(token.clone(), Some(audit))
            .await
            .map_err(GatewayError::internal)?;
        self.replace(token.clone());
        tracing::info!(token_id = %id, actor = %actor.0, "admin token revoked");
        Ok(token.view())
    }

    /// The actor for a presented bearer token if it is a live admin token, else why not.
    /// Checksum first, then the hash; records when it was last used (on disk at most once a
    /// minute).
    pub fn authenticate(&self, presented: &str) -> std::result::Result<Actor, AuthFailure> {
        let parsed = AdminToken::parse(presented).map_err(|_| AuthFailure::Malformed)?;
        let hash = parsed.hash();
        let now = self.clock.now();
        let token = self
            .read()
            .iter()
            .find(|t| t.hash == hash)
            .cloned()
            .ok_or(AuthFailure::Unknown)?;
        if token.revoked_at.is_some() {
            return Err(AuthFailure::Revoked);
        }
        let actor = Actor(format!("token:{}", token.id));
        if is_stale(token.last_used_at, now) {
            // The write is built from the list's current copy, not from the one read above:
            // a revocation applied in between (by this replica or from another) must not be
            // written back as live.
            let Some(token) = self.touch(&token.id, now) else {
                return Ok(actor);
            };
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(err) = store.save_admin_token(token, None).await {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "could not record admin token use"
                    );
                }
            });
        }
        Ok(actor)
    }

    /// Applies a token as the store has it now (another replica created or revoked it, or
    /// recorded its use): added if new, else merged (see the module docs), so that applying
    /// it twice, or after a newer change, changes nothing. A revoked token stops
    /// authenticating here as soon as this returns.
    pub fn apply_stored(&self, token: TokenRecord) -> TokenApplied {
        let mut tokens = self.write();
        let Some(slot) = tokens.iter_mut().find(|t| t.id == token.id) else {
            let applied = if token.revoked_at.is_some() {
                TokenApplied::Revoked
            } else {
                TokenApplied::Created
            };
            tokens.push(token);
            return applied;
        };
        let was_revoked = slot.revoked_at.is_some();
        merge(slot, token);
        if !was_revoked && slot.revoked_at.is_some() {
            TokenApplied::Revoked
        } else {
            TokenApplied::Updated
        }
    }

    /// After the store was restored from a backup (`keys::sync`): takes the store's tokens,
    /// merged as always, so a revocation held here is kept, and written back to the store
    /// when the restored row had lost it; tokens the store does not have (made after the
    /// backup) are dropped, as a replica started now would not know them. Answers the ids
    /// dropped and the ids revoked again.
    pub async fn replace_stored(
        &self,
        stored: Vec<TokenRecord>,
        actor: &str,
    ) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let _serialised = self.writes.lock().await;
        let ids: std::collections::HashSet<String> = stored.iter().map(|t| t.id.clone()).collect();
        let mut lost_revocations = Vec::new();
        for token in stored {
            let active_in_store = token.revoked_at.is_none();
            let id = token.id.clone();
            self.apply_stored(token);
            if active_in_store
                && let Some(held) = self.read().iter().find(|t| t.id == id)
                && held.revoked_at.is_some()
            {
                lost_revocations.push(held.clone());
            }
        }
        let mut dropped = Vec::new();
        self.write().retain(|token| {
            let keep = ids.contains(&token.id);
            if !keep {
                dropped.push(token.id.clone());
            }
            keep
        });
        let mut revoked = Vec::new();
        for token in lost_revocations {
            let audit = AuditRecord {
                at: token.revoked_at.unwrap_or(token.created_at),
                actor: actor.to_owned(),
                action: "admin_token.revoke",
                key_id: None,
                details: json!({"token_id": token.id, "name": token.name, "prefix": token.prefix}),
            };
            revoked.push(token.id.clone());
            self.store.save_admin_token(token, Some(audit)).await?;
        }
        Ok((dropped, revoked))
    }

    fn replace(&self, token: TokenRecord) {
        let mut tokens = self.write();
        if let Some(slot) = tokens.iter_mut().find(|t| t.id == token.id) {
            merge(slot, token);
        }
    }

    /// Records a use at `now` on the list's copy of token `id` and returns that copy to be
    /// written; `None` when there is nothing to write (revoked, or recorded meanwhile).
    fn touch(&self, id: &str, now: Timestamp) -> Option<TokenRecord> {
        let mut tokens = self.write();
        let slot = tokens.iter_mut().find(|t| t.id == id)?;
        if slot.revoked_at.is_some() || !is_stale(slot.last_used_at, now) {
            return None;
        }
        slot.last_used_at = Some(now);
        Some(slot.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<TokenRecord>> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<TokenRecord>> {
        self.tokens.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// What [`AdminTokens::apply_stored`] did, for its caller's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenApplied {
    /// A token this replica did not have (created elsewhere; possibly revoked already).
    Created,
    /// A token this replica had live is now revoked here.
    Revoked,
    /// Anything else: a recorded use, or nothing new.
    Updated,
}

/// Whether a use at `now` should be written (see [`LAST_USED_WRITE_INTERVAL`]).
fn is_stale(last_used_at: Option<Timestamp>, now: Timestamp) -> bool {
    last_used_at.is_none_or(|at| now.duration_since(at) >= LAST_USED_WRITE_INTERVAL)
}

/// `newer` into `slot`: every field from `newer`, except the lifecycle, which is merged
/// ([`TokenRecord::merge_lifecycle`]).
fn merge(slot: &mut TokenRecord, newer: TokenRecord) {
    slot.merge_lifecycle(&newer);
    *slot = TokenRecord {
        revoked_at: slot.revoked_at,
        last_used_at: slot.last_used_at,
        ..newer
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    async fn tokens(dir: &tempfile::TempDir) -> (AdminTokens, Arc<ManualClock>) {
        let store = Store::open(&dir.path().join("gateway.db")).expect("store");
        let clock = Arc::new(ManualClock::new(
            "2026-03-01T12:00:00Z".parse().expect("time"),
        ));
        let tokens = AdminTokens::load(store, clock.clone()).await.expect("load");
        (tokens, clock)
    }

    /// A token as another replica would have stored it, and its secret.
    fn stored(id: &str, at: Timestamp) -> (TokenRecord, String) {
        let secret = AdminToken::generate().expect("random");
        let record = TokenRecord {
            id: id.into(),
            hash: secret.hash(),
            prefix: secret.display_prefix(),
            name: "ci".into(),
            created_at: at,
            revoked_at: None,
            last_used_at: None,
        };
        (record, secret.expose().to_owned())
    }

    #[tokio::test]
    async fn a_stored_token_applies_once_and_its_revocation_is_never_undone() {
        let dir = tempfile::tempdir().expect("dir");
        let (tokens, clock) = tokens(&dir).await;
        let now = clock.now();
        let (live, secret) = stored("tok_remote", now);
        assert_eq!(tokens.authenticate(&secret), Err(AuthFailure::Unknown));

        assert_eq!(tokens.apply_stored(live.clone()), TokenApplied::Created);
        assert_eq!(
            tokens.authenticate(&secret),
            Ok(Actor("token:tok_remote".into()))
        );
        assert_eq!(
            tokens.apply_stored(live.clone()),
            TokenApplied::Updated,
            "applying the same row again is harmless"
        );
        assert_eq!(tokens.list().tokens.len(), 1);

        let revoked = TokenRecord {
            revoked_at: Some(now),
            ..live.clone()
        };
        assert_eq!(tokens.apply_stored(revoked), TokenApplied::Revoked);
        assert_eq!(tokens.authenticate(&secret), Err(AuthFailure::Revoked));

        // A copy from before the revocation (a stale write of its last use) changes nothing
        // but the last use.
        let later = now + SignedDuration::from_secs(120);
        let stale = TokenRecord {
            last_used_at: Some(later),
            ..live
        };
        assert_eq!(tokens.apply_stored(stale), TokenApplied::Updated);
        assert_eq!(tokens.authenticate(&secret), Err(AuthFailure::Revoked));
        let view = tokens.list().tokens.pop().expect("one token");
        assert_eq!(
            (view.revoked_at, view.last_used_at),
            (Some(now), Some(later))
        );
    }

    #[tokio::test]
    async fn a_token_applied_already_revoked_never_authenticates() {
        let dir = tempfile::tempdir().expect("dir");
        let (tokens, clock) = tokens(&dir).await;
        let (mut record, secret) = stored("tok_gone", clock.now());
        record.revoked_at = Some(clock.now());
        assert_eq!(tokens.apply_stored(record), TokenApplied::Revoked);
        assert_eq!(tokens.authenticate(&secret), Err(AuthFailure::Revoked));
    }

    #[tokio::test]
    async fn a_use_is_recorded_on_the_current_copy_and_never_on_a_revoked_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (tokens, clock) = tokens(&dir).await;
        let now = clock.now();
        let (record, _) = stored("tok_used", now);
        tokens.apply_stored(record.clone());
        let touched = tokens.touch("tok_used", now).expect("first use is written");
        assert_eq!(touched.last_used_at, Some(now));
        assert!(
            tokens.touch("tok_used", now).is_none(),
            "within the write interval: nothing to write"
        );
        tokens.apply_stored(TokenRecord {
            revoked_at: Some(now),
            ..record
        });
        let later = now + LAST_USED_WRITE_INTERVAL;
        assert!(
            tokens.touch("tok_used", later).is_none(),
            "a revoked token's use is never written back (as live)"
        );
    }
}
