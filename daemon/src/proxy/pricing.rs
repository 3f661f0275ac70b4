//! Step 9's first half: what a request may cost at worst, before the limits engine
//! (`crate::limits`) reserves it. Its price from the table (403 `model_not_priced` on a key
//! with a spend limit when there is none), whether the endpoint's cost can be bounded at
//! all, and the worst case the reservation holds. Pure: nothing is counted or reserved here,
//! so the same ask serves one server's ledger and a cluster's.

use gateway_shared::{ErrorCode, Nanodollars};

use super::model;
use super::rewrite;
use super::route::{ModelSource, ProviderRoute};
use crate::config::SpendConfig;
use crate::error::GatewayError;
use crate::keys::KeyEntry;
use crate::limits::SpendAsk;
use crate::spend::ledger::Ask;
use crate::spend::price::{Price, PriceTable};

/// Listings cost nothing.
pub(super) const FREE: Price = Price {
    input: Nanodollars::ZERO,
    output: Nanodollars::ZERO,
    cache_read: Nanodollars::ZERO,
    cache_write: Nanodollars::ZERO,
    max_output_tokens: 0,
};

/// The request's price and worst case (SPEC §5), for the limits engine to reserve.
pub(super) fn spend_ask(
    prices: &PriceTable,
    spend: &SpendConfig,
    route: &ProviderRoute,
    key: &KeyEntry,
    model: Option<&str>,
    json: Option<&model::Skimmed>,
    body_len: usize,
) -> Result<SpendAsk, GatewayError> {
    let limit = key.spend_limit;
    let price = if route.model == ModelSource::Listing {
        Some(FREE)
    } else {
        model.and_then(|m| prices.lookup_for(route.provider, m))
    };
    if price.is_none() && limit.is_some() {
        let what = model.map_or_else(
            || "this request names no model".to_owned(),
            |m| format!("the model {m:?} has no price"),
        );
        return Err(GatewayError::new(
            ErrorCode::ModelNotPriced,
            format!("This key has a spend limit and {what}, so its cost cannot be bounded."),
        ));
    }
    if limit.is_some() && !metered(route, json) {
        return Err(GatewayError::new(
            ErrorCode::ModelNotPriced,
            "This key has a spend limit, and the cost of this endpoint cannot be bounded \
             or read by the gateway (a batch, background or fine-tuning job is billed by \
             the provider after answering): use a key without a spend limit for it.",
        ));
    }
    let charge = price.unwrap_or(FREE);
    let requested =
        json.and_then(|j| rewrite::requested_output(route.kind, &route.upstream_path, j));
    let ask = Ask {
        price: charge,
        input_tokens_bound: body_len as u64,
        output_tokens: requested.unwrap_or(charge.max_output_tokens),
        answers: json.map_or(1, |j| rewrite::answers(route.kind, j)),
        min_output_tokens: spend.min_output_tokens,
        // Only a body the gateway read can have its output limit lowered.
        clamp: spend.clamp_output && json.is_some(),
    };
    Ok(SpendAsk { price, ask })
}

/// Whether the request is one whose cost the gateway can bound before and read after: the
/// generation, embedding and token-counting endpoints, answered with their usage. What a
/// spend-limited key may use, so that its cap holds. An allowlist, not a list of exceptions:
/// batches, fine-tuning jobs, long-running operations and background responses are run and
/// billed by the provider after an answer without usage, and new endpoints of that kind (or
/// another spelling of a known one) must not slip past the cap.
fn metered(route: &ProviderRoute, json: Option<&model::Skimmed>) -> bool {
    use crate::config::Kind;
    use model::Fields;
    if route.model == ModelSource::Listing {
        return true;
    }
    let path = route.upstream_path.as_str();
    match route.kind {
        Kind::Openai | Kind::AzureOpenai => {
            let background = match json.and_then(|j| j.field("background")) {
                None | Some(serde_json::Value::Null | serde_json::Value::Bool(false)) => false,
                Some(_) => true,
            };
            !background
                && (model_info(path)
                    || [
                        "/chat/completions",
                        "/completions",
                        "/responses",
                        "/embeddings",
                    ]
                    .iter()
                    .any(|endpoint| path.ends_with(endpoint)))
        }
        Kind::Anthropic => {
            model_info(path)
                || ["/messages", "/messages/count_tokens", "/complete"]
                    .iter()
                    .any(|endpoint| path.ends_with(endpoint))
        }
        Kind::Gemini => {
            let method = path.rsplit_once(':').map_or("", |(_, method)| method);
            matches!(
                method,
                // No method: a model's own description.
                "" | "generateContent"
                    | "streamGenerateContent"
                    | "countTokens"
                    | "embedContent"
                    | "batchEmbedContents"
            )
        }
    }
}

/// `…/models/{id}`: a model's description, free.
fn model_info(path: &str) -> bool {
    path.rsplit_once("/models/")
        .is_some_and(|(_, id)| !id.is_empty() && !id.contains('/'))
}
