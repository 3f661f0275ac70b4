//! Who this `gatewayd` is among its peers (SPEC §9: `gwctl cluster status`), and the directory
//! of replicas that `GET /v1/cluster` reads.
//!
//! A replica's id is a random 64-bit number kept in `data_dir/replica-id`, so that a restart
//! is the same replica (its heartbeat row is updated, not duplicated) and, in cluster mode,
//! its usage record ids (replica id, sequence) stay unique across replicas. The file is made
//! once, whole or not at all (written aside, then renamed), mode 0600; a file that is not
//! such an id stops start-up naming the file rather than quietly becoming another replica.
//!
//! The requests a replica served are read from the proxy's own request counter
//! (`gateway_requests_total` in [`Metrics`]), not counted a second time on the hot path.
//!
//! [`Replicas`] is the directory: this replica, always, as of the moment it is asked, plus
//! the rows of its peers that the last heartbeat brought back. One server has no peers and
//! runs no heartbeat; a cluster runs [`heartbeat`] with a closure that writes this replica's
//! [`ReplicaRecord`] to the shared store and reads back the replicas seen since a given
//! instant, so that the store is the only thing cluster mode adds here.

use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use gateway_shared::ErrorCode;
use gateway_shared::api::ReplicaView;
use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::{Metrics, RequestLabels};

/// The file in the data directory that holds the replica id.
pub const REPLICA_ID_FILE: &str = "replica-id";

/// How often a cluster replica writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// A replica whose last heartbeat is older than this is no longer listed: six missed beats,
/// so a store that is slow for a while does not make live replicas vanish.
pub const SEEN_WITHIN: SignedDuration = SignedDuration::from_secs(60);

/// Host names are shown in tables: longer ones are cut (the kernel's own limit is 64 bytes).
const HOST_MAX_CHARS: usize = 64;

/// A replica's identity: 64 random bits, written as 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaId(u64);

/// This process: what its heartbeat says about it.
pub struct Replica {
    pub id: ReplicaId,
    pub host: String,
    pub version: &'static str,
    pub started_at: Timestamp,
    metrics: Arc<Metrics>,
}

/// One replica as a heartbeat records it: the row the store keeps per replica (its id as
/// [`ReplicaId`]'s text).
pub use crate::store::ReplicaRecord;

/// The replicas `GET /v1/cluster` lists: this one, and the peers seen recently.
pub struct Replicas {
    local: Replica,
    clock: Arc<dyn Clock>,
    /// The peers' rows as the last successful heartbeat read them. Std mutex: held to swap
    /// or copy a short vector, never across `.await`.
    peers: Mutex<Vec<ReplicaRecord>>,
}

impl ReplicaId {
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Exactly 16 lowercase hex digits, as [`fmt::Display`] writes them.
    pub fn parse(text: &str) -> Option<ReplicaId> {
        let valid = text.len() == 16
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid
            .then(|| u64::from_str_radix(text, 16).ok())
            .flatten()
            .map(ReplicaId)
    }

    /// The id kept in `data_dir/replica-id`, made on the first start. The caller holds the
    /// data directory's lock, so no other daemon makes one at the same time.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<ReplicaId> {
        let path = data_dir.join(REPLICA_ID_FILE);
        match read_id_file(&path)? {
            Some(id) => Ok(id),
            None => create_id_file(data_dir, &path),
        }
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Replica {
    /// This process's identity: `id` (from [`ReplicaId::load_or_create`]), the host name,
    /// the version, and `clock`'s now as its start.
    pub fn start(id: ReplicaId, clock: &dyn Clock, metrics: Arc<Metrics>) -> Replica {
        Replica {
            id,
            host: host_name(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: clock.now(),
            metrics,
        }
    }

    /// Requests the proxy listener answered since this process started, refusals included:
    /// the sum of `gateway_requests_total` over its labels.
    pub fn requests_served(&self) -> u64 {
        requests_answered(&self.metrics)
    }

    /// This replica's heartbeat row, seen at `now`.
    pub fn record(&self, now: Timestamp) -> ReplicaRecord {
        ReplicaRecord {
            id: self.id.to_string(),
            host: self.host.clone(),
            version: self.version.to_owned(),
            started_at: self.started_at,
            last_seen: now,
            requests: self.requests_served(),
        }
    }
}

impl From<ReplicaRecord> for ReplicaView {
    fn from(record: ReplicaRecord) -> Self {
        ReplicaView {
            id: record.id,
            host: record.host,
            version: record.version,
            started_at: record.started_at,
            last_seen: record.last_seen,
            requests: record.requests,
        }
    }
}

impl Replicas {
    /// The directory of one server: this replica alone until [`Replicas::remember`] is fed.
    pub fn new(local: Replica, clock: Arc<dyn Clock>) -> Replicas {
        Replicas {
            local,
            clock,
            peers: Mutex::new(Vec::new()),
        }
    }

    pub fn local(&self) -> &Replica {
        &self.local
    }

    /// This replica first (seen now), then the peers whose last heartbeat is within
    /// [`SEEN_WITHIN`], by id. A stored row with this replica's own id is the one this
    /// process wrote: the live values replace it.
    pub fn list(&self) -> Vec<ReplicaView> {
        let now = self.clock.now();
        let since = seen_since(now);
        let local_id = self.local.id.to_string();
        let mut peers: Vec<ReplicaRecord> = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|peer| peer.id != local_id && peer.last_seen >= since)
            .cloned()
            .collect();
        // Ids are 16 lowercase hex digits: their text sorts as their number.
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        std::iter::once(self.local.record(now))
            .chain(peers)
            .map(ReplicaView::from)
            .collect()
    }

    /// Replaces the peers with the rows a heartbeat read from the shared store.
    pub fn remember(&self, rows: Vec<ReplicaRecord>) {
        *self.peers.lock().unwrap_or_else(|p| p.into_inner()) = rows;
    }
}

/// Every `every`, until `stop`: hands this replica's record and the oldest `last_seen` still
/// listed to `beat`, which writes the record to the shared store and returns the replicas
/// seen since that instant (`Store::heartbeat` then `Store::list_replicas`); those become the
/// peers [`Replicas::list`] shows. A beat that fails or takes longer than `every` is logged
/// (once until one succeeds again) and the peers shown stay those of the last good beat,
/// each aging out by its own `last_seen`.
pub async fn heartbeat<F, Fut>(
    replicas: Arc<Replicas>,
    every: Duration,
    stop: CancellationToken,
    mut beat: F,
) where
    F: FnMut(ReplicaRecord, Timestamp) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<ReplicaRecord>>>,
{
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = replicas.clock.now();
        let record = replicas.local.record(now);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(every, beat(record, seen_since(now))) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(Ok(rows)) => {
                replicas.remember(rows);
                if std::mem::take(&mut failing) {
                    tracing::info!("replica heartbeat written again");
                }
            }
            Ok(Err(err)) if !failing => {
                failing = true;
                tracing::warn!(
                    error = format!("{err:#}"),
                    "cannot write the replica heartbeat; retrying"
                );
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!(
                    timeout = ?every,
                    "the replica heartbeat timed out; retrying"
                );
            }
            Ok(Err(_)) | Err(_) => {}
        }
    }
}

/// The oldest `last_seen` still listed at `now`.
fn seen_since(now: Timestamp) -> Timestamp {
    now.checked_sub(SEEN_WITHIN).unwrap_or(Timestamp::MIN)
}

/// The sum of the proxy's request counter over every label it is given: the provider
/// labels (`requests_for` maps anything else to `none`) times the outcomes `count_request`
/// is called with (`ok`, the provider's answer class, or a SPEC error code). A few hundred
/// look-ups, on a management request or a heartbeat: nothing on the proxy's path.
fn requests_answered(metrics: &Metrics) -> u64 {
    let providers = ["openai", "anthropic", "gemini", "configured"];
    let outcomes = ["ok", "provider_4xx", "provider_5xx"];
    let codes = ErrorCode::ALL.iter().map(|code| code.as_str());
    providers
        .into_iter()
        .chain(["none"])
        .flat_map(|provider| {
            outcomes
                .into_iter()
                .chain(codes.clone())
                .map(move |code| RequestLabels { provider, code })
        })
        .filter_map(|labels| metrics.requests.get(&labels).map(|counter| counter.get()))
        .fold(0u64, u64::saturating_add)
}

/// The kernel's host name (`uname`), cleaned for display: control characters dropped, at
/// most [`HOST_MAX_CHARS`] characters; `unknown` if nothing is left.
fn host_name() -> String {
    clean_host_name(&rustix::system::uname().nodename().to_string_lossy())
}

fn clean_host_name(raw: &str) -> String {
    let host: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(HOST_MAX_CHARS)
        .collect();
    let host = host.trim();
    if host.is_empty() {
        "unknown".to_owned()
    } else {
        host.to_owned()
    }
}

/// The id in `path`, `None` if there is no such file. Anything else there is an error
/// naming the file: never a new id in place of a damaged one.
fn read_id_file(path: &Path) -> anyhow::Result<Option<ReplicaId>> {
    /// The id, a line break, and room for a trailing space or `\r`; more is not an id file.
    const MAX_BYTES: u64 = 32;
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    // Opening a FIFO (or a device) waits for a writer: start-up would hang.
    anyhow::ensure!(
        metadata.is_file(),
        "the replica id file {} is not a regular file; remove it and gatewayd makes a new id",
        path.display()
    );
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading the replica id file {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).unwrap_or_default();
    match ReplicaId::parse(text.trim_end()) {
        Some(id) => Ok(Some(id)),
        None => anyhow::bail!(
            "the replica id file {} is corrupt (it must hold 16 lowercase hex digits); remove \
             it and gatewayd makes a new id",
            path.display()
        ),
    }
}

/// A new random id written to `path` whole: to a file aside (0600, synced), renamed into
/// place, the directory synced, so a crash leaves either no id file or a complete one.
fn create_id_file(data_dir: &Path, path: &Path) -> anyhow::Result<ReplicaId> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).context("reading the OS random source for a replica id")?;
    let id = ReplicaId(u64::from_le_bytes(bytes));
    let aside: PathBuf = data_dir.join(format!("{REPLICA_ID_FILE}.new"));
    // Left by a start that died before its rename: never used, never complete for sure.
    match std::fs::remove_file(&aside) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", aside.display())),
    }
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)?;
        writeln!(file, "{id}")?;
        file.sync_all()?;
        std::fs::rename(&aside, path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().with_context(|| format!("writing the replica id file {}", path.display()))?;
    tracing::info!(replica = %id, file = %path.display(), "new replica id");
    Ok(id)
}

#[cfg(test)]
mod tests;
