//! `GET /v1/cluster` (SPEC §9, `gwctl cluster status`): the replicas seen recently and the
//! backends' health, as this replica sees them.
//!
//! The handler only assembles: the mode, the replica directory and the backends' health are
//! [`ClusterInputs`] that `run` gives the API, so that cluster mode changes what is wired in,
//! not this file. One server is [`ClusterInputs::single`].

use std::sync::Arc;

use gateway_shared::api::{
    BackendHealth, BackendStatus, Backends, ClusterMode, ClusterStatus, LimitsKind, StoreKind,
};

use super::AdminApi;
use crate::health::{Health, LimitsStatus, StoreStatus};
use crate::http_util::{self, Response};
use crate::replica::Replicas;

/// What `GET /v1/cluster` reports, wired by `run`.
pub struct ClusterInputs {
    pub mode: ClusterMode,
    pub replicas: Arc<Replicas>,
    /// The backends' health as this replica last saw it, read on every request: it must
    /// answer from what the backends keep (the outcome of their latest operation), never
    /// by a round trip.
    pub backends: Box<dyn Fn() -> Backends + Send + Sync>,
}

impl ClusterInputs {
    /// One server: SQLite and the in-memory limits live in this process, so they are there
    /// whenever it answers.
    pub fn single(replicas: Arc<Replicas>) -> Self {
        Self {
            mode: ClusterMode::Single,
            replicas,
            backends: Box::new(|| Backends {
                store: BackendHealth {
                    kind: StoreKind::Sqlite,
                    status: BackendStatus::Ok,
                },
                limits: BackendHealth {
                    kind: LimitsKind::Memory,
                    status: BackendStatus::Ok,
                },
            }),
        }
    }

    /// A replica of a cluster: the shared store as the replica last found it (`health`, set
    /// by the usage writer and the change listener). No shared limits engine yet: keys with
    /// limits are refused on every replica (SPEC §9.5), nothing here can be down.
    pub fn cluster(replicas: Arc<Replicas>, health: Arc<Health>) -> Self {
        Self {
            mode: ClusterMode::Cluster,
            replicas,
            backends: Box::new(move || Backends {
                store: BackendHealth {
                    kind: StoreKind::Postgres,
                    status: match health.store() {
                        StoreStatus::Ok => BackendStatus::Ok,
                        StoreStatus::Unavailable => BackendStatus::Unavailable,
                    },
                },
                limits: BackendHealth {
                    kind: LimitsKind::Redis,
                    status: match health.limits() {
                        LimitsStatus::Unavailable => BackendStatus::Unavailable,
                        LimitsStatus::Ok => BackendStatus::Ok,
                    },
                },
            }),
        }
    }

    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            mode: self.mode,
            replica: self.replicas.local().id.to_string(),
            replicas: self.replicas.list(),
            backends: (self.backends)(),
        }
    }
}

pub fn status(api: &AdminApi) -> Response {
    http_util::json(200, &api.cluster.status())
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::metrics::Metrics;
    use crate::replica::{Replica, ReplicaId};

    #[test]
    fn the_status_is_assembled_from_its_inputs() {
        let dir = tempfile::tempdir().expect("dir");
        let start: Timestamp = "2027-01-02T03:04:05Z".parse().expect("ts");
        let clock = Arc::new(ManualClock::new(start));
        let replica_id = ReplicaId::load_or_create(dir.path()).expect("replica id");
        let replica = Replica::start(replica_id, clock.as_ref(), Arc::new(Metrics::new()));
        let id = replica.id.to_string();
        let replicas = Arc::new(Replicas::new(replica, clock as Arc<dyn Clock>));

        let single = ClusterInputs::single(Arc::clone(&replicas)).status();
        assert_eq!(single.mode, ClusterMode::Single);
        assert_eq!(single.replica, id);
        assert_eq!(single.replicas.len(), 1);
        assert_eq!(single.replicas[0].id, id);
        assert_eq!(single.backends.store.kind, StoreKind::Sqlite);
        assert_eq!(single.backends.limits.status, BackendStatus::Ok);

        let cluster = ClusterInputs {
            mode: ClusterMode::Cluster,
            replicas,
            backends: Box::new(|| Backends {
                store: BackendHealth {
                    kind: StoreKind::Postgres,
                    status: BackendStatus::Ok,
                },
                limits: BackendHealth {
                    kind: LimitsKind::Redis,
                    status: BackendStatus::Unavailable,
                },
            }),
        }
        .status();
        assert_eq!(cluster.mode, ClusterMode::Cluster);
        assert_eq!(cluster.backends.store.kind, StoreKind::Postgres);
        assert_eq!(cluster.backends.limits.status, BackendStatus::Unavailable);
    }
}
