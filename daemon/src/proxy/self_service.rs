//! `GET /gateway/v1/key` (SPEC §3): a key reads its own state, budget and rate headroom,
//! authenticated as a proxied request is, no provider involved. In a cluster the numbers are
//! the shared ledger's and window's (`Limits::standing`) and the lifetime total PostgreSQL's,
//! so every replica answers the same.

use std::net::SocketAddr;

use gateway_shared::ErrorCode;
use gateway_shared::api::SelfView;

use super::access::{check_ip, check_lifecycle};
use super::{Proxy, client_ip};
use crate::error::GatewayError;
use crate::http_util::{self, Response};

impl Proxy {
    /// `GET /gateway/v1/key`: a key reads its own state, budget and rate headroom. The same
    /// authentication as a proxied request; no provider is involved.
    pub(super) async fn self_service(
        &self,
        peer: SocketAddr,
        request: &http::Request<()>,
    ) -> Result<Response, GatewayError> {
        let headers = request.headers();
        let presented = self
            .any_credential(request)
            .ok_or_else(|| GatewayError::new(ErrorCode::MissingKey, "No API key was presented."))?;
        let key = self.authenticate_anywhere(presented).await?;
        let now = self.clock.now();
        check_lifecycle(&key, now)?;
        check_ip(
            &key,
            client_ip::resolve(peer, headers, &self.trusted_proxies),
        )?;
        let standing = self.limits.standing(&key).await?;
        let rate = standing.rate;
        let mut view = key.view(now);
        let spend = key.spend();
        let (reserved, in_flight) = match standing.shared {
            // A cluster: the whole cluster's spend and holds, the same on every replica.
            Some(shared) => {
                view.spend_period_usd = shared.period;
                view.state = key.state_with_period(now, shared.period);
                if let Some(total) = shared.total {
                    view.spend_total_usd = total;
                }
                (
                    shared.held,
                    u32::try_from(shared.open_holds).unwrap_or(u32::MAX),
                )
            }
            None => (spend.reserved, spend.open_reservations),
        };
        let body = SelfView {
            remaining_usd: view.spend_limit_usd.map(|limit| {
                limit
                    .saturating_sub(view.spend_period_usd)
                    .saturating_sub(reserved)
            }),
            reserved_usd: reserved,
            requests_in_flight: in_flight,
            id: view.id,
            name: view.name,
            prefix: view.prefix,
            state: view.state,
            allowed_providers: view.allowed_providers,
            allowed_models: view.allowed_models,
            expires_at: view.expires_at,
            spend_limit_usd: view.spend_limit_usd,
            spend_reset: view.spend_reset,
            spend_period_usd: view.spend_period_usd,
            spend_total_usd: view.spend_total_usd,
            period_resets_at: view.period_resets_at,
            rate_limit_rpm: view.rate_limit_rpm,
            rate_limit_remaining: rate.map(|d| d.remaining),
            rate_limit_reset_seconds: rate.map(|d| d.reset_after.as_secs_f64()),
        };
        Ok(http_util::json(200, &body))
    }
}
