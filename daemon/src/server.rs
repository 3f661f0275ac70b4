//! Listeners and connection handling: binding the admin Unix socket safely, serving HTTP/1 on
//! it with hyper, and draining connections on shutdown.
//!
//! HTTP/1 is served with `hyper::server::conn::http1` and a `TokioTimer`: without a timer
//! hyper's header-read timeout is silently off (research/reliability.md §0.2), and a client
//! that connects and says nothing would hold a connection forever. Every connection's socket
//! is wrapped in `ProtocolErrors`, so that what hyper refuses itself is answered in the SPEC's
//! error shape too.
//!
//! Every listener has its own connection cap, so a flood of one cannot take the file
//! descriptors the others need (their sum fits the open-files limit: `fd_budget`). Beyond
//! its cap the proxy answers a fast 503 from a small pool of refusal slots, and closes the
//! connection unanswered when those are busy too; the management listeners close it at once
//! (HTTPS before any TLS work; there one client may hold only a quarter of the slots, so
//! a single address cannot lock the operators out). An HTTPS management connection has `auth_timeout` to finish
//! its handshake and send its first request's headers, so an unauthenticated client cannot
//! sit on a slot.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin_api::{AdminApi, Transport};
use crate::admin_guard::{self, ClientConnections};
use crate::config::Config;
use crate::error::{GatewayError, Plane};
use crate::event_loops::EventLoops;
use crate::keys::Actor;
use crate::metrics::Metrics;
use crate::protocol_errors::ProtocolErrors;
use crate::proxy::Proxy;
use gateway_shared::ErrorCode;

/// How long a client may take to send a request's headers (also the keep-alive idle limit).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for open management connections.
const ADMIN_DRAIN: Duration = Duration::from_secs(10);
/// At most one "connection cap reached" warning per listener this often.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Limits of the management listeners (from `[admin]` in the config).
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    pub https_max_connections: usize,
    pub socket_max_connections: usize,
    /// Longest an HTTPS connection may take to finish TLS and its first request's headers.
    pub auth_timeout: Duration,
}

/// How many connections beyond the proxy's cap may be answered 503 at once; beyond these
/// they are closed unanswered (each answer holds a descriptor for up to 5 s).
pub fn refusal_slots(max_connections: usize) -> usize {
    (max_connections / 16).max(16)
}

/// The sockets the daemon serves, bound before [`crate::run`] so that start-up fails early
/// (and tests can bind port 0 and learn the address).
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin_socket: UnixListener,
    pub admin_socket_path: PathBuf,
    /// The HTTPS management listener (TLS is set up by `run`).
    pub admin_https: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let proxy = TcpListener::bind(config.proxy.listen)
            .await
            .with_context(|| format!("binding the proxy listener {}", config.proxy.listen))?;
        let admin_https = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("binding the admin HTTPS listener {}", config.admin.listen))?;
        let path = config.admin.socket.clone();
        let admin_socket = bind_unix(&path, config.admin.socket_mode).await?;
        Ok(Listeners {
            proxy,
            admin_socket,
            admin_socket_path: path,
            admin_https,
        })
    }
}

/// Binds the admin socket: refuses when a live daemon answers on `path`, replaces a stale
/// socket file left by a crash, never deletes anything that is not a socket.
async fn bind_unix(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating socket directory {}", parent.display()))?;
            // Operators reach the socket through its group; others cannot even look in.
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o750))
                .with_context(|| format!("setting mode of {}", parent.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match tokio::net::UnixStream::connect(path).await {
                Ok(_) => bail!(
                    "another gatewayd is already serving the admin socket {}; stop it first or set admin.socket",
                    path.display()
                ),
                Err(err) if err.kind() == ErrorKind::ConnectionRefused => {
                    tracing::warn!(socket = %path.display(), "removing stale admin socket");
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing stale socket {}", path.display()))?;
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("checking existing socket {}", path.display()));
                }
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", path.display()))?;
    Ok(listener)
}

/// Serves the management API on the Unix socket until `stop` fires, then lets open
/// requests finish (bounded) and removes the socket file.
pub async fn serve_admin_socket(
    listener: UnixListener,
    path: PathBuf,
    api: Arc<AdminApi>,
    limits: AdminLimits,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.socket_max_connections));
    let mut at_cap = CapWarning::new("admin_socket", limits.socket_max_connections);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            api.metrics.connection_refused("admin_socket");
            at_cap.refused();
            continue;
        };
        // The peer's uid is the actor of every change made on this connection.
        let actor = match stream.peer_cred() {
            Ok(cred) => Actor(format!("uid:{}", cred.uid())),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read admin socket peer credentials; closing");
                continue;
            }
        };
        let api = Arc::clone(&api);
        let (stream, served) = ProtocolErrors::new(stream);
        let service = service_fn(move |request| {
            served.mark();
            let api = Arc::clone(&api);
            let actor = actor.clone();
            async move {
                Ok::<_, std::convert::Infallible>(
                    api.handle(actor, Transport::UnixSocket, request).await,
                )
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    if let Err(err) = std::fs::remove_file(&path) {
        tracing::warn!(error = %err, socket = %path.display(), "could not remove admin socket");
    }
    if tokio::time::timeout(ADMIN_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after the drain deadline; closing them");
    }
}

/// Serves the management API over HTTPS until `stop` fires. Every request needs an admin
/// token (`AdminApi::handle_https`).
pub async fn serve_admin_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<AdminApi>,
    limits: AdminLimits,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.https_max_connections));
    let mut at_cap = CapWarning::new("admin_https", limits.https_max_connections);
    // One client (address, IPv6 /64) may hold only a share of the slots (`admin_guard`).
    let client_cap = admin_guard::per_client_cap(limits.https_max_connections);
    let per_client = ClientConnections::new(client_cap);
    let mut client_at_cap = CapWarning::new("admin_https (one client's share)", client_cap);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "admin HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Beyond its client's share, or beyond the cap: closed before any TLS work.
        let Some(client_slot) = per_client.try_open(peer.ip()) else {
            api.metrics.connection_refused("admin_https");
            client_at_cap.refused();
            continue;
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            api.metrics.connection_refused("admin_https");
            at_cap.refused();
            continue;
        };
        let acceptor = acceptor.clone();
        let api = Arc::clone(&api);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slots = (permit, client_slot);
            // The handshake and the first request's headers share one deadline.
            let deadline = Instant::now() + limits.auth_timeout;
            let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake not finished within the auth timeout");
                    return;
                }
            };
            let first_request = Arc::new(Notify::new());
            let (stream, served) = ProtocolErrors::new(stream);
            let service = {
                let first_request = Arc::clone(&first_request);
                service_fn(move |request| {
                    served.mark();
                    first_request.notify_one();
                    let api = Arc::clone(&api);
                    async move {
                        Ok::<_, std::convert::Infallible>(api.handle_https(peer, request).await)
                    }
                })
            };
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let connection = watcher.watch(connection);
            tokio::pin!(connection);
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(err) = ended {
                        tracing::debug!(error = %err, "admin HTTPS connection ended with an error");
                    }
                    return;
                }
                () = first_request.notified() => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(%peer, "no request within the auth timeout; closing");
                    return;
                }
            }
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "admin HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(ADMIN_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin HTTPS connections still open after the drain deadline; closing them");
    }
}

/// Limits of the proxy listener (from `[proxy]` in the config).
#[derive(Clone, Copy, Debug)]
pub struct ProxyLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

/// Serves the proxy until `stop` fires; then stops accepting, turns health to 503, lets
/// in-flight requests and streams finish within the drain deadline, and returns.
///
/// Connections are accepted here and served on `loops` (see [`crate::event_loops`]).
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    loops: Arc<EventLoops>,
    limits: ProxyLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(refusal_slots(limits.max_connections)));
    let mut at_cap = CapWarning::new("proxy", limits.max_connections);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %err, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            metrics.connection_refused("proxy");
            at_cap.refused();
            // With every refusal slot busy too, the connection is closed unanswered.
            if let Ok(slot) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(refuse_overloaded(stream, slot));
            }
            continue;
        };
        // The socket leaves this runtime's driver and joins the chosen loop's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "cannot hand a proxy connection to an event loop");
                continue;
            }
        };
        let proxy = Arc::clone(&proxy);
        let watcher = graceful.watcher();
        let header_read_timeout = limits.header_read_timeout;
        loops.spawn(async move {
            let _permit = permit;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot register a proxy connection");
                    return;
                }
            };
            let (stream, served) = ProtocolErrors::new(stream);
            let service = service_fn(move |request| {
                served.mark();
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(peer, request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(error = %err, "proxy connection ended with an error");
            }
        });
    }
    // Drain: in-flight requests and streams may finish; the listener stays open only to
    // answer new requests 503 `shutting_down` (and health 503) and close, so clients and load
    // balancers get a clear answer rather than a refused connection.
    proxy.start_draining();
    tracing::info!(deadline = ?limits.drain_timeout, "draining proxy connections");
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    let deadline = tokio::time::sleep(limits.drain_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut drained => break,
            () = &mut deadline => {
                tracing::warn!("requests still in flight after the drain deadline; cutting them");
                break;
            }
            accepted = listener.accept() => {
                // Bounded like the refusals beyond the cap: a flood while draining closes.
                if let Ok((stream, peer)) = accepted
                    && let Ok(slot) = Arc::clone(&refusals).try_acquire_owned()
                {
                    tokio::spawn(serve_one_and_close(stream, peer, Arc::clone(&proxy), slot));
                }
            }
        }
    }
}

/// One request on a connection that is then closed: used while draining.
async fn serve_one_and_close(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    proxy: Arc<Proxy>,
    _slot: OwnedSemaphorePermit,
) {
    let (stream, served) = ProtocolErrors::new(stream);
    let service = service_fn(move |request| {
        served.mark();
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(peer, request).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Beyond the connection cap: answer one fast 503 and close, rather than queue.
async fn refuse_overloaded(stream: tokio::net::TcpStream, _slot: OwnedSemaphorePermit) {
    let (stream, served) = ProtocolErrors::new(stream);
    let service = service_fn(move |_request| {
        served.mark();
        overloaded()
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = connection.await;
}

/// The 503 `overloaded` answer, closing the connection.
async fn overloaded() -> Result<crate::http_util::Response, std::convert::Infallible> {
    let mut response = GatewayError::new(
        ErrorCode::Overloaded,
        "The gateway is at its connection limit; retry shortly.",
    )
    .into_response(Plane::Data);
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    Ok(response)
}

/// "Connection cap reached" for one listener: the first refusal is said at once, then at
/// most once per [`CAP_WARNING_EVERY`] with the count since; a flood writes a few lines,
/// not one per connection. Owned by the listener's accept loop.
struct CapWarning {
    listener: &'static str,
    cap: usize,
    last: Option<Instant>,
    refused: u64,
}

impl CapWarning {
    fn new(listener: &'static str, cap: usize) -> CapWarning {
        CapWarning {
            listener,
            cap,
            last: None,
            refused: 0,
        }
    }

    fn refused(&mut self) {
        self.refused += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|at| now.duration_since(at) >= CAP_WARNING_EVERY)
        {
            tracing::warn!(
                listener = self.listener,
                cap = self.cap,
                refused = self.refused,
                "connection cap reached; closing new connections"
            );
            self.last = Some(now);
            self.refused = 0;
        }
    }
}
