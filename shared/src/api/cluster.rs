//! `GET /v1/cluster` (SPEC §9, "gwctl cluster status"): the replicas seen recently and the
//! health of the backends they share.
//!
//! A module of its own because `api.rs` is long already; re-exported from [`crate::api`], so
//! callers write `api::ClusterStatus` like every other wire type. Kinds and statuses are
//! enums rather than strings: gwctl matches on them, and a value that is neither fails to
//! decode instead of being shown as if it were known.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The answer to `GET /v1/cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `single`: no `[cluster]` section, SQLite and memory; `cluster`: PostgreSQL and Redis.
    pub mode: ClusterMode,
    /// The id of the replica that answered (one of `replicas`).
    pub replica: String,
    /// The replicas seen recently, the one that answered first.
    pub replicas: Vec<ReplicaView>,
    pub backends: Backends,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    Single,
    Cluster,
}

/// One `gatewayd` process as its last heartbeat described it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// 16 hex digits, kept in the replica's `data_dir/replica-id` across restarts.
    pub id: String,
    /// The host name, at most 64 characters, control characters removed.
    pub host: String,
    /// The `gatewayd` version it runs.
    pub version: String,
    pub started_at: Timestamp,
    /// Its latest heartbeat; for the replica that answered, the moment it answered.
    pub last_seen: Timestamp,
    /// Requests its proxy listener answered since it started (refusals included).
    pub requests: u64,
}

/// The shared engines a replica depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backends {
    /// Keys, admin tokens, audit and usage.
    pub store: BackendHealth<StoreKind>,
    /// Rate windows, spend ledgers and holds.
    pub limits: BackendHealth<LimitsKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth<K> {
    pub kind: K,
    pub status: BackendStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsKind {
    Memory,
    Redis,
    /// A cluster without a shared limits engine (before Redis is configured to enforce them):
    /// keys with a rate or spend limit are refused 503 `limits_unavailable` on every replica.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendStatus {
    Ok,
    /// The replica cannot reach it: what depends on it is refused with 503 (SPEC §9.5, §9.6).
    Unavailable,
}

impl ClusterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
        }
    }
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

impl LimitsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::None => "none",
        }
    }
}

impl BackendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unavailable => "unavailable",
        }
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(ClusterMode, StoreKind, LimitsKind, BackendStatus);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_wire_shape_is_the_documented_one() {
        let at: Timestamp = "2027-01-02T03:04:05Z".parse().expect("ts");
        let status = ClusterStatus {
            mode: ClusterMode::Single,
            replica: "00ff00ff00ff00ff".into(),
            replicas: vec![ReplicaView {
                id: "00ff00ff00ff00ff".into(),
                host: "web-1".into(),
                version: "0.1.0".into(),
                started_at: at,
                last_seen: at,
                requests: 7,
            }],
            backends: Backends {
                store: BackendHealth {
                    kind: StoreKind::Sqlite,
                    status: BackendStatus::Ok,
                },
                limits: BackendHealth {
                    kind: LimitsKind::Memory,
                    status: BackendStatus::Unavailable,
                },
            },
        };
        let expected = json!({
            "mode": "single",
            "replica": "00ff00ff00ff00ff",
            "replicas": [{
                "id": "00ff00ff00ff00ff", "host": "web-1", "version": "0.1.0",
                "started_at": "2027-01-02T03:04:05Z", "last_seen": "2027-01-02T03:04:05Z",
                "requests": 7
            }],
            "backends": {
                "store": {"kind": "sqlite", "status": "ok"},
                "limits": {"kind": "memory", "status": "unavailable"}
            }
        });
        assert_eq!(serde_json::to_value(&status).expect("encodes"), expected);
        let decoded: ClusterStatus = serde_json::from_value(expected).expect("decodes");
        assert_eq!(decoded, status);
        assert_eq!(
            serde_json::from_value::<BackendStatus>(json!("down")).map_err(|_| ()),
            Err(())
        );
    }
}
