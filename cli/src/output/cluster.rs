//! `gwctl cluster status` as text: the mode and the replica that answered, a table of the
//! replicas seen recently, then one of the backends and their health.
//!
//! Host names and versions come from other replicas' heartbeats, so every cell goes through
//! [`row`] and every labelled value through [`labelled`], like the rest of the output. The
//! last heartbeat is shown as an age ("3s ago"): that is what tells a live replica from one
//! that stopped, and an instant would leave the subtraction to the reader.

use gateway_shared::api::ClusterStatus;
use jiff::Timestamp;

use super::{finish, labelled, plain_table, relative, row, when};

/// The status as three blocks separated by blank lines.
pub fn cluster_table(status: &ClusterStatus, now: Timestamp) -> String {
    let header = labelled(&[
        ("mode", status.mode.to_string()),
        ("replica", status.replica.clone()),
    ]);
    let mut replicas = plain_table([
        "REPLICA",
        "HOST",
        "VERSION",
        "STARTED",
        "LAST HEARTBEAT",
        "REQUESTS",
    ]);
    for replica in &status.replicas {
        replicas.add_row(row([
            replica.id.clone(),
            replica.host.clone(),
            replica.version.clone(),
            when(replica.started_at, now),
            relative(replica.last_seen, now),
            replica.requests.to_string(),
        ]));
    }
    let mut backends = plain_table(["BACKEND", "KIND", "STATUS"]);
    let store = &status.backends.store;
    let limits = &status.backends.limits;
    backends.add_row(row([
        "store".to_owned(),
        store.kind.to_string(),
        store.status.to_string(),
    ]));
    backends.add_row(row([
        "limits".to_owned(),
        limits.kind.to_string(),
        limits.status.to_string(),
    ]));
    format!(
        "{header}\n\n{}\n\n{}",
        finish(&mut replicas),
        finish(&mut backends)
    )
}

#[cfg(test)]
mod tests {
    use gateway_shared::api::{
        BackendHealth, BackendStatus, Backends, ClusterMode, LimitsKind, ReplicaView, StoreKind,
    };

    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    const NOW: &str = "2027-01-02T12:00:00Z";

    fn replica(id: &str, host: &str, last_seen: &str, requests: u64) -> ReplicaView {
        ReplicaView {
            id: id.into(),
            host: host.into(),
            version: "0.1.0".into(),
            started_at: ts("2027-01-02T09:00:00Z"),
            last_seen: ts(last_seen),
            requests,
        }
    }

    fn status(replicas: Vec<ReplicaView>) -> ClusterStatus {
        ClusterStatus {
            mode: ClusterMode::Cluster,
            replica: "00000000000000aa".into(),
            replicas,
            backends: Backends {
                store: BackendHealth {
                    kind: StoreKind::Postgres,
                    status: BackendStatus::Ok,
                },
                limits: BackendHealth {
                    kind: LimitsKind::Redis,
                    status: BackendStatus::Unavailable,
                },
            },
        }
    }

    #[test]
    fn replicas_then_backends_with_ages() {
        let text = cluster_table(
            &status(vec![
                replica("00000000000000aa", "web-1", NOW, 1234),
                replica(
                    "00000000000000bb",
                    "web-2.example",
                    "2027-01-02T11:59:57Z",
                    7,
                ),
            ]),
            ts(NOW),
        );
        let expected = "\
mode:    cluster
replica: 00000000000000aa

REPLICA           HOST           VERSION  STARTED                        LAST HEARTBEAT  REQUESTS
00000000000000aa  web-1          0.1.0    2027-01-02T09:00:00Z (3h ago)  now             1234
00000000000000bb  web-2.example  0.1.0    2027-01-02T09:00:00Z (3h ago)  3s ago          7

BACKEND  KIND      STATUS
store    postgres  ok
limits   redis     unavailable";
        assert_eq!(text, expected, "\n{text}");
    }

    /// A peer's host name is text gwctl did not write: escaped, on its own row.
    #[test]
    fn a_host_name_from_a_heartbeat_cannot_reach_the_terminal_raw() {
        let text = cluster_table(
            &status(vec![replica(
                "00000000000000bb",
                "evil\u{1b}]0;pwned\u{7}\nrow",
                NOW,
                0,
            )]),
            ts(NOW),
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        let row = text
            .lines()
            .find(|line| line.starts_with("00000000000000bb"))
            .expect("the replica's row");
        assert!(row.contains("evil") && row.contains("row"), "{row}");
    }
}
