//! Admin tokens: the credentials of the HTTPS management listener (SPEC §6).
//!
//! Same recipe as proxy keys: `gwadm-` secrets from the OS CSPRNG with a checksum, shown once,
//! stored as SHA-256 and a display prefix. They are few, so they live in a small in-memory
//! list, updated after each commit like the key table. Creating, listing and revoking them
//! is allowed on the Unix socket only (the router enforces it): a leaked token must not be
//! able to mint more tokens.

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
        let mut token = self
            .read()
            .iter()
            .find(|t| t.hash == hash)
            .cloned()
            .ok_or(AuthFailure::Unknown)?;
        if token.revoked_at.is_some() {
            return Err(AuthFailure::Revoked);
        }
        let actor = Actor(format!("token:{}", token.id));
        let stale = token
            .last_used_at
            .is_none_or(|at| now.duration_since(at) >= LAST_USED_WRITE_INTERVAL);
        if stale {
            token.last_used_at = Some(now);
            self.replace(token.clone());
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

    fn replace(&self, token: TokenRecord) {
        let mut tokens = self.write();
        if let Some(slot) = tokens.iter_mut().find(|t| t.id == token.id) {
            *slot = token;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<TokenRecord>> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<TokenRecord>> {
        self.tokens.write().unwrap_or_else(|p| p.into_inner())
    }
}
