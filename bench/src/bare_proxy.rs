//! The reference: the least a Rust HTTP proxy can do, with the same stack as gatewayd.
//!
//! A hyper 1 HTTP/1 server whose service hands each request, as it is (method, path, headers,
//! streaming body), to a pooled hyper-util legacy client pointed at the mock, and streams the
//! response back untouched. No parsing, no checks, no metering: whatever gatewayd costs above
//! this is the price of its features. It runs in its own process (`gateway-bench bare-proxy`)
//! on a tokio multi-thread runtime with the same worker count gatewayd is given.
//!
//! With `--work-ns` it also spins that long in every request before forwarding it: the
//! calibration server `bare-work`, which shows what a given amount of per-request work costs
//! in throughput on the machine at hand (see `bench/README.md`, seventh round).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Runs the proxy until the process is killed, printing `bare listening ADDR` when ready;
/// `work` is spent spinning in every request (zero for the reference itself).
pub fn serve(workers: usize, upstream: SocketAddr, work: Duration) -> anyhow::Result<()> {
    let runtime = crate::runtime(workers)?;
    runtime.block_on(async {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .pool_max_idle_per_host(256)
            .build(connector);
        let client = Arc::new(client);
        let authority: http::uri::Authority = upstream.to_string().parse()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        crate::mock::announce("bare", listener.local_addr()?)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let client = Arc::clone(&client);
            let authority = authority.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let client = Arc::clone(&client);
                    let authority = authority.clone();
                    async move {
                        spin(work);
                        Ok::<_, Infallible>(forward(&client, authority, request).await)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Busy for `work` on this thread: CPU a request costs, like a gateway's checks would.
fn spin(work: Duration) {
    if work.is_zero() {
        return;
    }
    let started = std::time::Instant::now();
    while started.elapsed() < work {
        std::hint::spin_loop();
    }
}

async fn forward(
    client: &Client<HttpConnector, Incoming>,
    authority: http::uri::Authority,
    request: http::Request<Incoming>,
) -> http::Response<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    match http::Uri::from_parts(uri) {
        Ok(uri) => parts.uri = uri,
        Err(_) => return bad_gateway(),
    }
    match client.request(http::Request::from_parts(parts, body)).await {
        Ok(response) => response.map(Either::Left),
        Err(_) => bad_gateway(),
    }
}

fn bad_gateway() -> http::Response<ProxyBody> {
    let mut response =
        http::Response::new(Either::Right(Full::new(Bytes::from_static(b"bad gateway"))));
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response
}
