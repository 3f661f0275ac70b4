//! The replica id file (made once, 0600, reused, refused when damaged), the host name's
//! cleaning, the request count read from the metrics, and the directory with its heartbeat.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::clock::ManualClock;

fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

const START: &str = "2027-01-02T03:04:05Z";

fn replica_in(dir: &Path, clock: &ManualClock, metrics: Arc<Metrics>) -> Replica {
    let id = ReplicaId::load_or_create(dir).expect("replica id");
    Replica::start(id, clock, metrics)
}

#[test]
fn the_id_is_made_once_0600_and_reused() {
    let dir = tempfile::tempdir().expect("dir");
    let first = ReplicaId::load_or_create(dir.path()).expect("created");
    let path = dir.path().join(REPLICA_ID_FILE);
    let text = std::fs::read_to_string(&path).expect("id file");
    assert_eq!(text, format!("{first}\n"));
    assert_eq!(first.to_string().len(), 16);
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert!(
        !dir.path().join("replica-id.new").exists(),
        "nothing left aside"
    );

    for _ in 0..3 {
        assert_eq!(
            ReplicaId::load_or_create(dir.path()).expect("reused"),
            first
        );
    }
    // Another data directory is another replica.
    let other = tempfile::tempdir().expect("dir");
    assert_ne!(ReplicaId::load_or_create(other.path()).expect("new"), first);
}

#[test]
fn a_file_left_aside_by_a_start_that_died_is_replaced() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("replica-id.new"), "0123").expect("stale");
    let id = ReplicaId::load_or_create(dir.path()).expect("created");
    let text = std::fs::read_to_string(dir.path().join(REPLICA_ID_FILE)).expect("id");
    assert_eq!(text.trim_end(), id.to_string());
    assert!(!dir.path().join("replica-id.new").exists());
}

#[test]
fn a_damaged_id_file_stops_start_up_naming_the_file() {
    let check = |content: &[u8]| {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(REPLICA_ID_FILE);
        std::fs::write(&path, content).expect("write");
        let err = format!(
            "{:#}",
            ReplicaId::load_or_create(dir.path()).expect_err("refused")
        );
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("corrupt"), "{err}");
        // Left as it was, for the operator to look at.
        assert_eq!(std::fs::read(&path).expect("still there"), content);
    };
    check(b"");
    check(b"\n");
    check(b"0123456789abcde\n"); // 15 digits
    check(b"0123456789abcdef0\n"); // 17
    check(b"0123456789ABCDEF\n"); // not as written
    check(b"+123456789abcdef\n");
    check(b"0123456789abcdeg\n");
    check(b"0123456789abcdef\n0123456789abcdef\n");
    check(&[0xff; 16]);
    check(&[b'a'; 4096]);
}

#[test]
fn an_id_file_with_or_without_its_line_break_is_read() {
    for content in [
        "00000000000000ff",
        "00000000000000ff\n",
        "00000000000000ff\r\n",
    ] {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(REPLICA_ID_FILE), content).expect("write");
        let id = ReplicaId::load_or_create(dir.path()).expect("read");
        assert_eq!(id.as_u64(), 255, "{content:?}");
    }
}

/// Opening a FIFO waits for a writer: refused without opening it.
#[test]
fn an_id_file_that_is_not_a_regular_file_is_refused_without_waiting() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(REPLICA_ID_FILE);
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let err = format!(
        "{:#}",
        ReplicaId::load_or_create(dir.path()).expect_err("refused")
    );
    assert!(err.contains("not a regular file"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");

    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join(REPLICA_ID_FILE)).expect("dir");
    let err = format!(
        "{:#}",
        ReplicaId::load_or_create(dir.path()).expect_err("refused")
    );
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn ids_parse_only_as_displayed() {
    for id in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
        let id = ReplicaId(id);
        assert_eq!(ReplicaId::parse(&id.to_string()), Some(id));
    }
    assert_eq!(ReplicaId(1).to_string(), "0000000000000001");
    assert_eq!(ReplicaId::parse("1"), None);
    assert_eq!(ReplicaId::parse("FFFFFFFFFFFFFFFF"), None);
}

#[test]
fn host_names_are_cleaned_and_capped() {
    let check = |raw: &str, expected: &str| assert_eq!(clean_host_name(raw), expected, "{raw:?}");
    check("web-1", "web-1");
    check("web\u{1b}[31m-1\n", "web[31m-1");
    check("\u{7}\u{0}", "unknown");
    check("  ", "unknown");
    check(&"h".repeat(300), &"h".repeat(HOST_MAX_CHARS));
    assert!(!host_name().is_empty());
    assert!(host_name().chars().count() <= HOST_MAX_CHARS);
}

/// Every outcome the proxy counts, under every provider label, is a request served.
#[test]
fn requests_served_is_the_proxy_request_counter() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = ManualClock::new(ts(START));
    let metrics = Arc::new(Metrics::new());
    let replica = replica_in(dir.path(), &clock, Arc::clone(&metrics));
    assert_eq!(replica.requests_served(), 0);
    let mut expected = 0;
    for provider in ["openai", "anthropic", "gemini", "none"] {
        for code in ["ok", "provider_4xx", "provider_5xx"]
            .into_iter()
            .chain(ErrorCode::ALL.iter().map(|code| code.as_str()))
        {
            metrics.count_request(provider, code);
            expected += 1;
        }
    }
    metrics.count_request("openai", "ok");
    expected += 1;
    assert_eq!(replica.requests_served(), expected);
    assert_eq!(replica.record(ts(START)).requests, expected);
}

#[test]
fn one_server_lists_itself_as_of_now() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(ManualClock::new(ts(START)));
    let metrics = Arc::new(Metrics::new());
    let replica = replica_in(dir.path(), &clock, Arc::clone(&metrics));
    let id = replica.id;
    let replicas = Replicas::new(replica, Arc::clone(&clock) as Arc<dyn Clock>);
    clock.advance(SignedDuration::from_secs(90));
    metrics.count_request("gemini", "ok");
    let listed = replicas.list();
    assert_eq!(
        listed,
        vec![ReplicaView {
            id: id.to_string(),
            host: host_name(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: ts(START),
            last_seen: ts("2027-01-02T03:05:35Z"),
            requests: 1,
        }]
    );
}

fn peer(id: u64, last_seen: &str) -> ReplicaRecord {
    ReplicaRecord {
        id: ReplicaId(id).to_string(),
        host: format!("host-{id}"),
        version: "0.0.9".into(),
        started_at: ts("2027-01-01T00:00:00Z"),
        last_seen: ts(last_seen),
        requests: id * 10,
    }
}

#[test]
fn peers_are_listed_after_this_replica_until_they_age_out() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(ManualClock::new(ts(START)));
    let replica = replica_in(dir.path(), &clock, Arc::new(Metrics::new()));
    let own = replica.record(ts("2027-01-02T03:00:00Z"));
    let replicas = Replicas::new(replica, Arc::clone(&clock) as Arc<dyn Clock>);
    replicas.remember(vec![
        peer(9, "2027-01-02T03:04:00Z"),
        peer(3, "2027-01-02T03:03:05Z"), // exactly SEEN_WITHIN ago: still listed
        peer(4, "2027-01-02T03:03:04Z"), // a second more: gone
        own.clone(),                     // this replica's stored row: the live one wins
    ]);
    let ids = |replicas: &Replicas| -> Vec<String> {
        replicas.list().into_iter().map(|view| view.id).collect()
    };
    assert_eq!(
        ids(&replicas),
        vec![
            own.id.to_string(),
            ReplicaId(3).to_string(),
            ReplicaId(9).to_string()
        ]
    );
    let listed = replicas.list();
    assert_eq!(listed[0].last_seen, ts(START));
    assert_eq!(
        listed[1],
        ReplicaView::from(peer(3, "2027-01-02T03:03:05Z"))
    );
    clock.advance(SignedDuration::from_secs(1));
    assert_eq!(
        ids(&replicas),
        vec![own.id.to_string(), ReplicaId(9).to_string()]
    );
}

/// The heartbeat writes this replica's record each period, asks for those seen within
/// `SEEN_WITHIN`, keeps what comes back, survives failures and stops when told.
#[tokio::test(start_paused = true)]
async fn the_heartbeat_persists_this_replica_and_keeps_the_peers_it_reads() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(ManualClock::new(ts(START)));
    let metrics = Arc::new(Metrics::new());
    let replica = replica_in(dir.path(), &clock, Arc::clone(&metrics));
    let id = replica.id;
    let replicas = Arc::new(Replicas::new(replica, Arc::clone(&clock) as Arc<dyn Clock>));
    let stop = CancellationToken::new();
    let written: Arc<Mutex<Vec<(ReplicaRecord, Timestamp)>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(heartbeat(
        Arc::clone(&replicas),
        HEARTBEAT_EVERY,
        stop.clone(),
        {
            let written = Arc::clone(&written);
            let calls = Arc::clone(&calls);
            move |record: ReplicaRecord, since: Timestamp| {
                let written = Arc::clone(&written);
                let call = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    written
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((record, since));
                    match call {
                        // The store is down on the second beat and hangs on the third.
                        1 => anyhow::bail!("store unavailable"),
                        2 => std::future::pending().await,
                        _ => Ok(vec![peer(7, START)]),
                    }
                }
            }
        },
    ));
    // The first beat is at once.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(replicas.list().len(), 2, "the peer read back is listed");
    {
        let written = written.lock().unwrap_or_else(|p| p.into_inner());
        let (record, since) = &written[0];
        assert_eq!(record.id, id.to_string());
        assert_eq!(record.last_seen, ts(START));
        assert_eq!(record.requests, 0);
        assert_eq!(*since, ts("2027-01-02T03:03:05Z"));
    }

    // A failure keeps the peers of the last good beat.
    metrics.count_request("openai", "ok");
    clock.advance(SignedDuration::from_secs(10));
    tokio::time::sleep(HEARTBEAT_EVERY).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(replicas.list().len(), 2);
    // A beat that hangs is given up after a period; the next one is still made.
    clock.advance(SignedDuration::from_secs(10));
    tokio::time::sleep(HEARTBEAT_EVERY).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    clock.advance(SignedDuration::from_secs(20));
    tokio::time::sleep(HEARTBEAT_EVERY * 2).await;
    assert!(calls.load(Ordering::SeqCst) >= 4);
    {
        let written = written.lock().unwrap_or_else(|p| p.into_inner());
        let (record, _) = written.last().expect("beats");
        assert_eq!(record.requests, 1, "the requests served so far");
        assert_eq!(record.last_seen, ts("2027-01-02T03:04:45Z"));
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("stops when told")
        .expect("no panic");
}
