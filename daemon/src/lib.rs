//! `gatewayd`: the Gateway AI daemon.
//!
//! Modules in reading order:
//! - [`config`]: embedded defaults + optional TOML file → validated runtime config;
//!   [`config_check`]: `gatewayd --check-config`, every error of a file with its line.
//! - [`clock`]: the injectable source of "now".
//! - [`store`]: SQLite (WAL, migrations, one writer); the only module with SQL.
//! - [`keys`]: the in-memory key table and the service that changes keys.
//! - [`proxy`]: the data plane's request pipeline (SPEC §3).
//! - [`admin_api`]: the management API router (SPEC §6), [`admin_tokens`] for HTTPS,
//!   [`admin_guard`] for its failed logins, [`tls`] for its certificate, [`metrics`] for
//!   `/metrics`.
//! - [`replica`]: this replica's identity (id kept in the data directory) and the directory of
//!   replicas that `GET /v1/cluster` lists.
//! - [`server`]: listeners, connection caps, HTTP/1 serving and draining; [`fd_budget`]: the
//!   caps against the open-files limit; [`event_loops`]: the proxy's thread-per-core runtimes;
//!   [`notify`]: readiness and stopping for systemd.
//! - [`error`], [`http_util`]: the one way errors become HTTP, and small HTTP helpers;
//!   [`protocol_errors`]: hyper's own refusals of malformed HTTP in the same error shape.
//! - `fuzzing` (hidden): the parsers' fuzz targets, shared with the corpus replay test.
//!
//! [`run`] wires them together; `main.rs` only parses flags, loads config and waits for a
//! signal, so tests can call `run` with their own listeners, clock and shutdown future.

pub mod admin_api;
pub mod admin_guard;
pub mod admin_tokens;
pub mod clock;
pub mod config;
pub mod config_check;
pub mod cpu_affinity;
pub mod error;
pub mod event_loops;
pub mod fd_budget;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http_util;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod protocol_errors;
pub mod proxy;
pub mod replica;
pub mod server;
pub mod spend;
pub mod store;
pub mod tls;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use server::Listeners;

use admin_api::AdminApi;
use keys::{KeyCache, KeyService};
use store::Store;

/// Runs the daemon until `shutdown` completes, then drains and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Held until `run` returns: one daemon per data directory.
    let _data_dir_lock = prepare_data_dir(&config)?;
    // Before anything else reads the directory: a damaged id file stops start-up here.
    let replica_id = replica::ReplicaId::load_or_create(&config.data_dir)?;
    let health = Arc::new(health::Health::new());
    let store = open_store(&config).await?;
    let mut cluster_id = None;
    if let Some(cluster) = &config.cluster {
        // A fresh or emptied database is not this replica's cluster (`store::cluster_id`).
        if let Some(id) = store.cluster_id().await.with_context(|| {
            format!(
                "cluster mode: reading the cluster id at {}",
                cluster.postgres_url
            )
        })? {
            store::cluster_id::check(&config.data_dir, &id).with_context(|| {
                format!("cluster mode: the shared store at {}", cluster.postgres_url)
            })?;
            cluster_id = Some(id);
        }
    }
    // Read before the keys load: the change feed is followed from here, so a change committed
    // by a peer while they load is applied after (SQLite: no feed, 0).
    let feed_from = store
        .max_change_seq()
        .await
        .context("reading the store's change feed position")?;
    // Before the keys load, so their spend counts it: requests that were in flight when the
    // daemon last died (`kill -9`, power loss) are charged their holds (SPEC §9.4).
    let charged = store
        .charge_journaled_holds()
        .await
        .context("charging the requests in flight when gatewayd last stopped")?;
    if charged.requests > 0 {
        tracing::warn!(
            requests = charged.requests,
            cost = %charged.cost,
            "requests in flight when gatewayd last stopped were charged their holds, as estimated usage"
        );
    }
    let cache = KeyCache::load(&store, Arc::clone(&clock))
        .await
        .context("loading keys")?;
    warn_of_unconfigured_providers(&config, &cache);
    // Read before any thread is pinned: the CPUs this process may use.
    let cpus = config
        .cpu_affinity
        .then(cpu_affinity::CpuPlan::of_current_thread)
        .flatten();
    let metrics = Arc::new(metrics::Metrics::new());
    let usage_cpu = cpus.as_ref().map(cpu_affinity::CpuPlan::for_background);
    let (usage, usage_thread) = match &config.cluster {
        None => store::writer::UsageWriter::spawn(store.clone(), usage_cpu, Arc::clone(&clock))?,
        Some(_) => store::writer::UsageWriter::spawn_shared(
            store.clone(),
            store::spool::Spool::open(&config.data_dir.join("spool"))?,
            Arc::clone(&health),
            Arc::clone(&metrics),
            usage_cpu,
            Arc::clone(&clock),
        )?,
    };
    let stop = CancellationToken::new();
    // Steps 8 and 9 of every request: memory on one server, Redis shared by a cluster.
    let shared_limits = match &config.cluster {
        None => None,
        Some(cluster) => Some(limits::cluster::ClusterLimits::start(
            limits::cluster::ClusterParts {
                redis_url: cluster.redis_url.clone(),
                prefix: format!(
                    "gw:{}",
                    cluster_id
                        .as_deref()
                        .context("the shared store has no cluster id")?
                ),
                lease: cluster.hold_lease,
                store: store.clone(),
                cache: Arc::clone(&cache),
                usage: usage.clone(),
                health: Arc::clone(&health),
                metrics: Arc::clone(&metrics),
                clock: Arc::clone(&clock),
            },
            stop.clone(),
        )),
    };
    let limits = match &shared_limits {
        None => limits::Limits::Memory(limits::memory::MemoryLimits::new(Arc::clone(&clock))),
        Some(shared) => limits::Limits::Cluster(Arc::clone(shared)),
    };
    let keys = Arc::new(KeyService::new(
        store.clone(),
        Arc::clone(&cache),
        Arc::clone(&clock),
        usage.clone(),
        shared_limits.clone(),
    ));
    let replica = replica::Replica::start(replica_id, clock.as_ref(), Arc::clone(&metrics));
    let replicas = Arc::new(replica::Replicas::new(replica, Arc::clone(&clock)));
    let tokens =
        Arc::new(admin_tokens::AdminTokens::load(store.clone(), Arc::clone(&clock)).await?);
    let cluster_inputs = match config.cluster {
        None => admin_api::cluster::ClusterInputs::single(Arc::clone(&replicas)),
        Some(_) => {
            admin_api::cluster::ClusterInputs::cluster(Arc::clone(&replicas), Arc::clone(&health))
        }
    };
    let admin = Arc::new(AdminApi {
        health: Arc::clone(&health),
        keys,
        tokens: Arc::clone(&tokens),
        metrics: Arc::clone(&metrics),
        cache: Arc::clone(&cache),
        usage: usage.clone(),
        failed_logins: admin_guard::FailedLogins::new(Arc::clone(&clock)),
        cluster: cluster_inputs,
        providers: config.provider_list(),
    });
    let proxy = Arc::new(proxy::Proxy::new(
        &config,
        Arc::clone(&cache),
        Arc::clone(&clock),
        usage.clone(),
        Arc::clone(&metrics),
        Arc::clone(&health),
        limits,
    )?);
    let configured_cert = config
        .admin
        .tls_cert
        .clone()
        .zip(config.admin.tls_key.clone());
    let cert =
        tls::ReloadableCert::new(tls::CertSource::resolve(configured_cert, &config.data_dir)?)
            .context("loading the admin TLS certificate")?;
    let tls_config = tls::server_config(Arc::clone(&cert))?;

    if let Some(cluster) = &config.cluster {
        // Changes committed through other replicas, into this one's memory (`keys::sync`);
        // the feed's connection also tells `/healthz` whether the store answers.
        let events = store::postgres::listen(cluster.postgres_url.expose(), feed_from)
            .context("following the store's change feed")?;
        tokio::spawn(keys::sync::follow(
            store.clone(),
            watch_store_health(events, Arc::clone(&health), Arc::clone(&metrics)),
            Arc::clone(&cache),
            Arc::clone(&tokens),
            stop.clone(),
        ));
        let store = store.clone();
        tokio::spawn(replica::heartbeat(
            Arc::clone(&replicas),
            replica::HEARTBEAT_EVERY,
            stop.clone(),
            move |record, seen_since| {
                let store = store.clone();
                async move {
                    store.heartbeat(record).await?;
                    store.list_replicas(seen_since).await
                }
            },
        ));
    }
    let proxy_addr = listeners
        .proxy
        .local_addr()
        .context("proxy listener address")?;
    // Taken out of the database only now that nothing can fail before serving: a start that
    // failed earlier leaves them for the next one.
    match store.take_rate_windows().await {
        Ok(saved) => cache.restore_rate_windows(&saved),
        Err(err) => tracing::warn!(
            error = format!("{err:#}"),
            "cannot read the saved rate windows; they start empty"
        ),
    }
    let loops = Arc::new(event_loops::EventLoops::start(
        config.event_loops(),
        cpus.as_ref(),
    )?);
    let proxy_task = tokio::spawn(server::serve_proxy(
        listeners.proxy,
        proxy,
        Arc::clone(&loops),
        server::ProxyLimits {
            max_connections: config.proxy.max_connections,
            header_read_timeout: config.proxy.header_read_timeout,
            drain_timeout: config.proxy.drain_timeout,
        },
        Arc::clone(&metrics),
        stop.clone(),
    ));
    let admin_limits = server::AdminLimits {
        https_max_connections: config.admin.max_connections,
        socket_max_connections: config.admin.socket_max_connections,
        auth_timeout: config.admin.auth_timeout,
    };
    let admin_addr = listeners
        .admin_https
        .local_addr()
        .context("admin listener address")?;
    let https_task = tokio::spawn(server::serve_admin_https(
        listeners.admin_https,
        tls_config,
        Arc::clone(&admin),
        admin_limits,
        stop.clone(),
    ));
    let admin_task = tokio::spawn(server::serve_admin_socket(
        listeners.admin_socket,
        listeners.admin_socket_path.clone(),
        admin,
        admin_limits,
        stop.clone(),
    ));
    tokio::spawn(reload_on_sighup(cert, stop.clone()));
    let window_saver = tokio::spawn(save_rate_windows_now_and_then(
        Arc::clone(&cache),
        store.clone(),
        Arc::clone(&clock),
        stop.clone(),
    ));
    // Every listener is bound and listening since `Listeners::bind` (the kernel queues
    // connections until the tasks above accept them). Sent before the ready line, so whoever
    // reads that line (install.sh, the tests) already has the datagram.
    notify::ready(&format!(
        "serving: proxy {proxy_addr}, admin https {admin_addr}, socket {}, {} keys",
        listeners.admin_socket_path.display(),
        cache.len()
    ));
    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        socket = %listeners.admin_socket_path.display(),
        data_dir = %config.data_dir.display(),
        keys = cache.len(),
        event_loops = config.event_loops(),
        pinned = cpus.is_some(),
        "ready"
    );

    shutdown.await;
    tracing::info!("shutting down");
    notify::stopping("draining: finishing in-flight requests, then saving usage");
    stop.cancel();
    let (proxy_done, admin_done, https_done) = tokio::join!(proxy_task, admin_task, https_task);
    proxy_done.context("proxy server task panicked")?;
    // Drained (or past the deadline): stop the loops, cutting whatever still runs there.
    if let Some(loops) = Arc::into_inner(loops) {
        tokio::task::spawn_blocking(move || loops.shutdown())
            .await
            .context("stopping the proxy event loops")?;
    }
    admin_done.context("admin server task panicked")?;
    https_done.context("admin HTTPS task panicked")?;
    if let Some(shared) = &shared_limits {
        // Every request has settled: what they queued for Redis is sent now.
        shared.shutdown().await;
    }
    // No request is admitted any more: the windows carry over to the next start (saved
    // after any periodic save still in progress, so the final state is the one kept).
    let _ = window_saver.await;
    let windows = cache.rate_windows();
    let saved = windows.len();
    if let Err(err) = store
        .save_rate_windows(clock.now().as_millisecond(), windows)
        .await
    {
        tracing::warn!(
            error = format!("{err:#}"),
            "cannot save the rate windows; the next start begins them empty"
        );
    } else {
        tracing::info!(windows = saved, "rate windows saved");
    }
    // Every request that finished has queued its usage: commit it before exiting.
    let pending = usage.queue_depth();
    usage.flush().await;
    // Every request has settled (the loops are stopped), and the flush deleted the journal
    // rows of those the writer had journaled.
    let open = usage.open_holds();
    if open > 0 {
        tracing::warn!(
            holds = open,
            "holds still open at exit; the next start charges those journaled"
        );
    }
    drop(usage);
    tracing::info!(records = pending, "usage flushed");
    drop(usage_thread);
    tracing::info!("stopped");
    Ok(())
}

/// The durable store: SQLite in the data directory, or in cluster mode the PostgreSQL every
/// replica shares (migrated first, under a lock). A replica that cannot reach it refuses to
/// start, saying why (SPEC §9.6): it would have no keys to serve. The URL is shown with its
/// password hidden.
async fn open_store(config: &Config) -> anyhow::Result<Store> {
    match &config.cluster {
        None => Store::open(&config.database_path()),
        Some(cluster) => Store::connect_postgres(cluster.postgres_url.expose())
            .await
            .with_context(|| {
                format!(
                    "cluster mode: opening the shared store at {}",
                    cluster.postgres_url
                )
            }),
    }
}

/// Passes the change feed's events on, marking the store unavailable while the feed's
/// connection is lost and available once the first read after it came back succeeded
/// (`CaughtUp`: a connection that cannot read is no store; the usage writer marks it too,
/// from its own commits).
fn watch_store_health(
    mut events: tokio::sync::mpsc::Receiver<store::postgres::Event>,
    health: Arc<health::Health>,
    metrics: Arc<metrics::Metrics>,
) -> tokio::sync::mpsc::Receiver<store::postgres::Event> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match &event {
                store::postgres::Event::CaughtUp => health.set_store(health::StoreStatus::Ok),
                store::postgres::Event::Disconnected(_) => {
                    health.set_store(health::StoreStatus::Unavailable);
                    metrics
                        .store_errors
                        .get_or_create(&metrics::StoreErrorLabels {
                            operation: "change_feed",
                            kind: "unavailable",
                        })
                        .inc();
                }
                store::postgres::Event::Connected
                | store::postgres::Event::Changes(_)
                | store::postgres::Event::Reset { .. } => {}
            }
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// How often the rate windows are saved while serving.
const RATE_WINDOW_SAVE_EVERY: Duration = Duration::from_secs(5);

/// Saves the rate windows every few seconds, when they changed, so that a start after a
/// crash (`kill -9`, power loss) restores them too: without it the windows of a daemon that
/// never shut down gracefully started empty, and a key got up to twice its rpm in the minute
/// around the restart. Now only what was admitted since the last save (at most
/// [`RATE_WINDOW_SAVE_EVERY`]) is forgotten. Graceful shutdown still saves the final state.
async fn save_rate_windows_now_and_then(
    cache: Arc<KeyCache>,
    store: Store,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(RATE_WINDOW_SAVE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Vec::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let windows = cache.rate_windows();
        if windows == last {
            continue;
        }
        match store
            .save_rate_windows(clock.now().as_millisecond(), windows.clone())
            .await
        {
            Ok(()) => last = windows,
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "cannot save the rate windows; retrying"
            ),
        }
    }
}

/// SIGHUP re-reads the admin certificate; a bad file keeps the old one and logs why.
async fn reload_on_sighup(cert: Arc<tls::ReloadableCert>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; certificate reload disabled");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => match cert.reload() {
                Ok(()) => tracing::info!("reloaded the admin TLS certificate"),
                Err(err) => tracing::error!(error = format!("{err:#}"), "certificate reload failed; keeping the current one"),
            },
            () = stop.cancelled() => return,
        }
    }
}

/// Creates the data directory if needed (0700: it holds the database and TLS keys) and
/// locks it for this daemon.
///
/// Two daemons on one database would each enforce spend limits from their own memory (a key
/// could spend its limit once per daemon) and overwrite each other's spend counters, so a
/// second one refuses to start. The lock is `flock` on `gatewayd.lock` in the directory,
/// released by the kernel however the process ends (no stale lock after a crash).
fn prepare_data_dir(config: &Config) -> anyhow::Result<std::fs::File> {
    let dir = &config.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode of {}", dir.display()))?;
    }
    lock_data_dir(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another gatewayd is already using the data directory {}; stop it first, or give \
             this one its own data_dir",
            dir.display()
        )
    })
}

/// The data directory's lock (`flock` on `gatewayd.lock`), or `None` when another process
/// holds it: the one rule by which a daemon owns its directory, also honoured by
/// `gatewayd migrate-store`, which must not copy a store a daemon is still writing.
pub(crate) fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<Option<std::fs::File>> {
    let path = dir.join("gatewayd.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// SPEC §10: a key naming a provider the config no longer has keeps working for its other
/// providers (that route is `unknown_route`); the operator is told which keys name it.
fn warn_of_unconfigured_providers(config: &Config, cache: &KeyCache) {
    let known = config.provider_names();
    let mut missing: std::collections::BTreeMap<gateway_shared::Provider, Vec<String>> =
        std::collections::BTreeMap::new();
    for key in cache.all() {
        for provider in key.policy.providers() {
            if !known.contains(provider) {
                missing
                    .entry(*provider)
                    .or_default()
                    .push(key.id.to_string());
            }
        }
    }
    for (provider, keys) in missing {
        tracing::warn!(
            %provider,
            keys = %keys.join(","),
            "keys name a provider this config does not have; they keep working for their other providers"
        );
    }
}
