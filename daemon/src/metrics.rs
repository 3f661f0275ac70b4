//! Prometheus metrics for `GET /metrics` on the management side (SPEC §8).
//!
//! An explicit registry (no global recorder), so tests can read what a daemon reports. Labels
//! are bounded by construction: a provider name or `none`, a SPEC error code or a response
//! class, an authentication failure reason, a listener's name. Never a key, prefix, model
//! string, client address or message.

use gateway_shared::{ErrorCode, Provider};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub provider: &'static str,
    /// A SPEC error code, or `ok`, `provider_4xx`, `provider_5xx`.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `proxy`, `admin_https` or `admin_socket`.
    pub listener: &'static str,
}

/// A backend (SPEC §9 "Operation"): `store` (SQLite or PostgreSQL) or `limits`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: &'static str,
}

/// A failed operation on the shared store: what was tried (`usage_write`, `change_feed`)
/// and whether the store was away (`unavailable`) or refused it (`refused`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabels {
    pub operation: &'static str,
    pub kind: &'static str,
}

type HistogramFamily = Family<ProviderLabels, Histogram, fn() -> Histogram>;

/// Series every proxied request touches, resolved once: a family look-up takes the family's
/// lock and hashes the labels, several times per request otherwise.
pub struct RequestSeries {
    pub ok: Counter,
    pub provider_4xx: Counter,
    pub provider_5xx: Counter,
    pub duration: Histogram,
}

/// Per-provider series of requests that reached the provider.
pub struct UpstreamSeries {
    pub ttfb: Histogram,
    pub spend_nanodollars: Counter,
    /// Requests whose provider reported more output than the request allowed.
    pub usage_over_allowed: Counter,
}

/// The provider labels of requests: the three providers, or `none` (no route).
/// The built-in providers, `configured` for every `[providers.NAME]` together (the label set
/// stays bounded and fixed at start), and `none` for requests no provider was found for.
const REQUEST_PROVIDERS: [&str; 5] = ["openai", "anthropic", "gemini", "configured", "none"];

pub struct Metrics {
    registry: Registry,
    by_provider: [RequestSeries; 5],
    upstream: [UpstreamSeries; 4],
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily,
    pub ttfb: HistogramFamily,
    pub in_flight: Gauge,
    pub open_reservations: Gauge,
    pub spend_nanodollars: Family<ProviderLabels, Counter>,
    pub usage_over_allowed: Family<ProviderLabels, Counter>,
    pub usage_queue_depth: Gauge,
    pub auth_failures: Family<ReasonLabels, Counter>,
    /// Failed admin-token authentications on the HTTPS listener, by `AuthFailure` reason.
    pub admin_auth_failures: Family<ReasonLabels, Counter>,
    /// Failed admin authentications answered late (the address failed repeatedly).
    pub admin_auth_slowed: Counter,
    /// Connections refused at a listener's connection cap.
    pub connections_refused: Family<ListenerLabels, Counter>,
    /// 1 while a backend answers, 0 while it is away (set when `/metrics` is read).
    pub backend_up: Family<BackendLabels, Gauge>,
    /// Time a usage batch took to commit to the shared store (cluster mode).
    pub store_write_seconds: Histogram,
    /// Time an admission took in Redis (cluster mode): the round trip each limited request
    /// adds.
    pub limits_admission: Histogram,
    pub store_errors: Family<StoreErrorLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let ttfb: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        let open_reservations = Gauge::default();
        let spend_nanodollars = Family::<ProviderLabels, Counter>::default();
        let usage_over_allowed = Family::<ProviderLabels, Counter>::default();
        let usage_queue_depth = Gauge::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let admin_auth_failures = Family::<ReasonLabels, Counter>::default();
        let admin_auth_slowed = Counter::default();
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        let backend_up = Family::<BackendLabels, Gauge>::default();
        let store_write_seconds = latency_histogram();
        let limits_admission = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let store_errors = Family::<StoreErrorLabels, Counter>::default();
        registry.register(
            "backend_up",
            "1 while the backend answers (store: SQLite or PostgreSQL; limits, and redis in a cluster), 0 while it is away",
            backend_up.clone(),
        );
        registry.register(
            "store_write_seconds",
            "Time a usage batch took to commit to the shared store (cluster mode)",
            store_write_seconds.clone(),
        );
        registry.register(
            "limits_admission_seconds",
            "Time an admission took in Redis, the shared limits (cluster mode)",
            limits_admission.clone(),
        );
        registry.register(
            "store_errors",
            "Failed operations on the shared store by operation and kind (unavailable, refused)",
            store_errors.clone(),
        );
        registry.register(
            "requests",
            "Proxied and refused requests by provider and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers",
            duration.clone(),
        );
        registry.register(
            "upstream_ttfb_seconds",
            "Time to the provider's response headers",
            ttfb.clone(),
        );
        registry.register(
            "inflight_requests",
            "Requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "open_reservations",
            "Spend reservations not yet settled",
            open_reservations.clone(),
        );
        registry.register(
            "spend_nanodollars",
            "Settled spend in nano-dollars",
            spend_nanodollars.clone(),
        );
        registry.register(
            "usage_over_allowed",
            "Requests whose provider reported more output tokens than the request allowed \
             (billed as reported; such a request can pass a key's cap)",
            usage_over_allowed.clone(),
        );
        registry.register(
            "usage_queue_depth",
            "Usage records waiting for the writer",
            usage_queue_depth.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused credentials by reason",
            auth_failures.clone(),
        );
        registry.register(
            "admin_auth_failures",
            "Refused admin tokens on the HTTPS management listener by reason",
            admin_auth_failures.clone(),
        );
        registry.register(
            "admin_auth_slowed",
            "Refused admin authentications answered after a delay (repeated failures)",
            admin_auth_slowed.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at a listener's connection cap",
            connections_refused.clone(),
        );
        let by_provider = REQUEST_PROVIDERS.map(|provider| {
            let count = |code| {
                requests
                    .get_or_create(&RequestLabels { provider, code })
                    .clone()
            };
            RequestSeries {
                ok: count("ok"),
                provider_4xx: count("provider_4xx"),
                provider_5xx: count("provider_5xx"),
                duration: duration.get_or_create(&ProviderLabels { provider }).clone(),
            }
        });
        let upstream = ["openai", "anthropic", "gemini", "configured"].map(|provider| {
            let labels = ProviderLabels { provider };
            UpstreamSeries {
                ttfb: ttfb.get_or_create(&labels).clone(),
                spend_nanodollars: spend_nanodollars.get_or_create(&labels).clone(),
                usage_over_allowed: usage_over_allowed.get_or_create(&labels).clone(),
            }
        });
        Metrics {
            registry,
            by_provider,
            upstream,
            requests,
            duration,
            ttfb,
            in_flight,
            open_reservations,
            spend_nanodollars,
            usage_over_allowed,
            usage_queue_depth,
            auth_failures,
            admin_auth_failures,
            admin_auth_slowed,
            connections_refused,
            backend_up,
            store_write_seconds,
            limits_admission,
            store_errors,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }

    /// The series of requests whose provider label is `provider` (`none` if unknown).
    pub fn requests_for(&self, provider: &str) -> &RequestSeries {
        let index = REQUEST_PROVIDERS
            .iter()
            .position(|p| *p == provider)
            .unwrap_or(REQUEST_PROVIDERS.len() - 1);
        &self.by_provider[index]
    }

    pub fn upstream(&self, provider: Provider) -> &UpstreamSeries {
        &self.upstream[match provider {
            Provider::Openai => 0,
            Provider::Anthropic => 1,
            Provider::Gemini => 2,
            Provider::Configured(_) => 3,
        }]
    }

    /// Counts a finished request: the common outcomes through resolved series, SPEC codes
    /// through the family.
    pub fn count_request(&self, provider: &'static str, code: &'static str) {
        let series = self.requests_for(provider);
        match code {
            "ok" => series.ok.inc(),
            "provider_4xx" => series.provider_4xx.inc(),
            "provider_5xx" => series.provider_5xx.inc(),
            _ => self
                .requests
                .get_or_create(&RequestLabels { provider, code })
                .inc(),
        };
    }

    /// Counts a refused request's credential problem, if it was one.
    pub fn auth_failure(&self, code: ErrorCode) {
        let reason = match code {
            ErrorCode::MissingKey
            | ErrorCode::InvalidKey
            | ErrorCode::KeyRevoked
            | ErrorCode::KeyExpired
            | ErrorCode::IpNotAllowed
            | ErrorCode::Unauthorized => code.as_str(),
            _ => return,
        };
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a refused admin token by its reason (`AuthFailure::as_str`).
    pub fn admin_auth_failure(&self, reason: &'static str) {
        self.admin_auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a connection refused at `listener`'s cap.
    pub fn connection_refused(&self, listener: &'static str) {
        self.connections_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_series_are_the_families_series() {
        let metrics = Metrics::new();
        metrics.count_request("anthropic", "ok");
        metrics.count_request("anthropic", "ok");
        metrics.count_request("gemini", "provider_5xx");
        metrics.count_request("openai", "rate_limit_exceeded");
        metrics.count_request("none", "unknown_route");
        metrics
            .upstream(Provider::Gemini)
            .spend_nanodollars
            .inc_by(42);
        let text = metrics.render();
        for line in [
            r#"gateway_requests_total{provider="anthropic",code="ok"} 2"#,
            r#"gateway_requests_total{provider="gemini",code="provider_5xx"} 1"#,
            r#"gateway_requests_total{provider="openai",code="rate_limit_exceeded"} 1"#,
            r#"gateway_requests_total{provider="none",code="unknown_route"} 1"#,
            r#"gateway_spend_nanodollars_total{provider="gemini"} 42"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::new();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                provider: "openai",
                code: "ok",
            })
            .inc();
        metrics.auth_failure(ErrorCode::InvalidKey);
        metrics.auth_failure(ErrorCode::ModelNotAllowed);
        let text = metrics.render();
        assert!(
            text.contains("gateway_requests_total{provider=\"openai\",code=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gateway_auth_failures_total{reason=\"invalid_key\"} 1"),
            "{text}"
        );
        assert!(!text.contains("model_not_allowed"), "not an auth failure");
        assert!(text.ends_with("# EOF\n"));
    }
}
