//! Who may send this request: steps 3 to 6 of the pipeline (`proxy`'s module doc). The key
//! presented where the provider's SDK puts it, authenticated against the in-memory table
//! (checksum first, so garbage never costs a look-up), then its lifecycle, client address
//! and provider. Each refusal is the SPEC's code for it; the order is SPEC §3's.

use std::net::IpAddr;
use std::sync::Arc;

use gateway_shared::{ErrorCode, ProxyKey};

use super::Proxy;
use super::credential;
use super::route::ProviderRoute;
use crate::config::Kind;
use crate::error::GatewayError;
use crate::keys::KeyEntry;

impl Proxy {
    /// A revoked or expired key is refused as such on any request (the product page's
    /// promise), a path that is no route included; any other request to such a path keeps
    /// the route's own error.
    pub(super) fn revoked_first(
        &self,
        request: &http::Request<()>,
        err: GatewayError,
    ) -> GatewayError {
        let dead = self
            .any_credential(request)
            .and_then(|presented| self.authenticate(presented).ok())
            .and_then(|key| check_lifecycle(&key, self.clock.now()).err());
        dead.unwrap_or(err)
    }

    /// The key presented in any provider's fashion, if any.
    pub(super) fn any_credential<'r>(&self, request: &'r http::Request<()>) -> Option<&'r str> {
        Kind::ALL
            .into_iter()
            .find_map(|k| credential::presented(k, request.headers(), request.uri().query()))
    }

    /// Checksum first, so garbage never costs a look-up; then the table, by hash.
    pub(super) fn authenticate(&self, presented: &str) -> Result<Arc<KeyEntry>, GatewayError> {
        let invalid = || {
            GatewayError::new(
                ErrorCode::InvalidKey,
                "The API key is not a valid gateway key.",
            )
        };
        let hash = ProxyKey::hash_of(presented).map_err(|_| invalid())?;
        self.keys.by_hash(&hash).ok_or_else(invalid)
    }

    /// [`Proxy::authenticate`], and in a cluster a key created on another replica that this
    /// one has not heard of yet (`Limits::newcomer`).
    pub(super) async fn authenticate_anywhere(
        &self,
        presented: &str,
    ) -> Result<Arc<KeyEntry>, GatewayError> {
        match self.authenticate(presented) {
            Ok(key) => Ok(key),
            Err(err) => match ProxyKey::hash_of(presented) {
                Ok(hash) => self.limits.newcomer(&hash).await.ok_or(err),
                Err(_) => Err(err),
            },
        }
    }
}

pub(super) fn missing_key(route: &ProviderRoute) -> GatewayError {
    let place = match route.kind {
        Kind::Openai => "an Authorization: Bearer header",
        Kind::Anthropic => "an x-api-key or Authorization: Bearer header",
        Kind::Gemini => "an x-goog-api-key header or a key= query parameter",
        Kind::AzureOpenai => "an api-key or Authorization: Bearer header",
    };
    GatewayError::new(
        ErrorCode::MissingKey,
        format!("No API key was presented; send a gateway key in {place}."),
    )
}

/// Revoked and expired, in SPEC order. Exhaustion is judged at the spend step (9), after
/// the restrictions, as SPEC §3 orders the checks (so the ledger is not read here).
pub(super) fn check_lifecycle(key: &KeyEntry, now: jiff::Timestamp) -> Result<(), GatewayError> {
    if key.is_revoked_at(now) {
        Err(GatewayError::new(
            ErrorCode::KeyRevoked,
            "This key has been revoked.",
        ))
    } else if key.expires_at().is_some_and(|at| at <= now) {
        Err(GatewayError::new(
            ErrorCode::KeyExpired,
            "This key has expired.",
        ))
    } else {
        Ok(())
    }
}

/// Steps 5 and 6 for a key: lifecycle, client address, provider. Run again on a key
/// reloaded at admission (another replica changed it).
pub(super) fn check_access(
    key: &KeyEntry,
    now: jiff::Timestamp,
    client_ip: Option<IpAddr>,
    route: &ProviderRoute,
) -> Result<(), GatewayError> {
    check_lifecycle(key, now)?;
    check_ip(key, client_ip)?;
    if !key.policy.allows_provider(route.provider) {
        return Err(GatewayError::new(
            ErrorCode::ProviderNotAllowed,
            format!("This key may not use {}.", route.provider),
        ));
    }
    Ok(())
}

pub(super) fn check_ip(key: &KeyEntry, client_ip: Option<IpAddr>) -> Result<(), GatewayError> {
    if key.policy.allows_ip(client_ip) {
        return Ok(());
    }
    let who = client_ip.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
    Err(GatewayError::new(
        ErrorCode::IpNotAllowed,
        format!("This key may not be used from {who}."),
    ))
}
