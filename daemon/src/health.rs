//! The replica's backends as `/healthz` reports them (SPEC §8, §9): the durable store and
//! the limits engine, each set by the code that talks to it and read by both listeners.
//!
//! A load balancer reads `/healthz` to decide where new requests go, so the answer is about
//! *this replica serving new requests*:
//!
//! | store | limits | `status` | HTTP |
//! |---|---|---|---|
//! | ok | ok | `ok` | 200 |
//! | unavailable | ok | `degraded` | 200: the proxy serves from the keys in memory and spools usage (SPEC §9.6); only the management API refuses |
//! | any | unavailable | `unavailable` | 503: keys with limits would be refused (SPEC §9.5), so route around this replica |
//! | any | any, draining | `draining` | 503 (proxy listener, during shutdown) |
//!
//! In a cluster `limits` is Redis: unavailable from a failed admission (or before the first
//! connection) until a probe or an admission gets an answer again (`limits::cluster`). One
//! server always reports `{"status":"ok","store":"ok","limits":"ok"}`.
//!
//! Two atomics, read with relaxed loads: each flag is independent, and a health probe that
//! sees a change a moment late is answered right by the next one.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::http_util::{self, Response};

/// The durable store (SQLite on one server, PostgreSQL in a cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreStatus {
    Ok,
    Unavailable,
}

/// The limits engine (memory on one server, Redis in a cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitsStatus {
    Ok,
    Unavailable,
}

/// What `/healthz` says overall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overall {
    Ok,
    Degraded,
    Unavailable,
    Draining,
}

/// The backends' status, shared (`Arc`) by the listeners and the code that sets it.
#[derive(Debug)]
pub struct Health {
    store: AtomicU8,
    limits: AtomicU8,
}

/// One answer of `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthReport {
    pub status: Overall,
    pub store: StoreStatus,
    pub limits: LimitsStatus,
}

impl Health {
    /// Every backend up: one server's state, and a replica's until told otherwise.
    pub fn new() -> Health {
        Health {
            store: AtomicU8::new(StoreStatus::Ok as u8),
            limits: AtomicU8::new(LimitsStatus::Ok as u8),
        }
    }

    pub fn set_store(&self, status: StoreStatus) {
        self.store.store(status as u8, Ordering::Relaxed);
    }

    pub fn set_limits(&self, status: LimitsStatus) {
        self.limits.store(status as u8, Ordering::Relaxed);
    }

    pub fn store(&self) -> StoreStatus {
        match self.store.load(Ordering::Relaxed) {
            x if x == StoreStatus::Ok as u8 => StoreStatus::Ok,
            _ => StoreStatus::Unavailable,
        }
    }

    pub fn limits(&self) -> LimitsStatus {
        match self.limits.load(Ordering::Relaxed) {
            x if x == LimitsStatus::Ok as u8 => LimitsStatus::Ok,
            _ => LimitsStatus::Unavailable,
        }
    }

    /// The answer now; `draining` on the proxy listener once shutdown began.
    pub fn report(&self, draining: bool) -> HealthReport {
        let store = self.store();
        let limits = self.limits();
        let status = if draining {
            Overall::Draining
        } else if limits == LimitsStatus::Unavailable {
            Overall::Unavailable
        } else if store == StoreStatus::Unavailable {
            Overall::Degraded
        } else {
            Overall::Ok
        };
        HealthReport {
            status,
            store,
            limits,
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthReport {
    /// 200 while this replica can serve new requests, else 503.
    pub fn http_status(&self) -> u16 {
        match self.status {
            Overall::Ok | Overall::Degraded => 200,
            Overall::Unavailable | Overall::Draining => 503,
        }
    }

    /// `{"status":"ok","store":"ok","limits":"ok"}`.
    pub fn to_json(&self) -> String {
        let status = match self.status {
            Overall::Ok => "ok",
            Overall::Degraded => "degraded",
            Overall::Unavailable => "unavailable",
            Overall::Draining => "draining",
        };
        let store = match self.store {
            StoreStatus::Ok => "ok",
            StoreStatus::Unavailable => "unavailable",
        };
        let limits = match self.limits {
            LimitsStatus::Ok => "ok",
            LimitsStatus::Unavailable => "unavailable",
        };
        format!(r#"{{"status":"{status}","store":"{store}","limits":"{limits}"}}"#)
    }

    pub fn response(&self) -> Response {
        http_util::json_response(self.http_status(), self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        store: StoreStatus,
        limits: LimitsStatus,
        draining: bool,
        expected_status: u16,
        expected_body: &str,
    ) {
        let health = Health::new();
        health.set_store(store);
        health.set_limits(limits);
        assert_eq!(health.store(), store);
        assert_eq!(health.limits(), limits);
        let report = health.report(draining);
        assert_eq!(report.http_status(), expected_status, "{report:?}");
        assert_eq!(report.to_json(), expected_body, "{report:?}");
        let parsed: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert!(parsed.is_object());
    }

    #[test]
    fn one_server_is_ok_on_both_backends() {
        let report = Health::new().report(false);
        assert_eq!(report.http_status(), 200);
        assert_eq!(
            report.to_json(),
            r#"{"status":"ok","store":"ok","limits":"ok"}"#
        );
    }

    #[test]
    fn each_backend_state_maps_to_its_answer() {
        use LimitsStatus as L;
        use StoreStatus as S;
        let cases = [
            (S::Ok, L::Ok, false, 200, "ok", "ok", "ok"),
            // The proxy serves from memory while the store is down (SPEC §9.6).
            (
                S::Unavailable,
                L::Ok,
                false,
                200,
                "degraded",
                "unavailable",
                "ok",
            ),
            // Limited keys would be refused: a load balancer routes around (SPEC §9).
            (
                S::Ok,
                L::Unavailable,
                false,
                503,
                "unavailable",
                "ok",
                "unavailable",
            ),
            (
                S::Unavailable,
                L::Unavailable,
                false,
                503,
                "unavailable",
                "unavailable",
                "unavailable",
            ),
            (S::Ok, L::Ok, true, 503, "draining", "ok", "ok"),
            (
                S::Unavailable,
                L::Unavailable,
                true,
                503,
                "draining",
                "unavailable",
                "unavailable",
            ),
        ];
        for (store, limits, draining, code, status, store_text, limits_text) in cases {
            check(
                store,
                limits,
                draining,
                code,
                &format!(
                    r#"{{"status":"{status}","store":"{store_text}","limits":"{limits_text}"}}"#
                ),
            );
        }
    }

    #[test]
    fn a_backend_that_comes_back_is_reported_ok_again() {
        let health = Health::new();
        health.set_limits(LimitsStatus::Unavailable);
        health.set_store(StoreStatus::Unavailable);
        assert_eq!(health.report(false).http_status(), 503);
        health.set_limits(LimitsStatus::Ok);
        assert_eq!(health.report(false).status, Overall::Degraded);
        health.set_store(StoreStatus::Ok);
        assert_eq!(health.report(false).status, Overall::Ok);
    }
}
