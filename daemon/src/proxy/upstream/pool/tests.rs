//! The keep-alive pool against real sockets: connections reused and checked when taken, a
//! request retried only when it could not have been sent, idle connections aged out.

use super::*;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use hyper::service::service_fn;
use tokio::net::TcpListener;

/// A server that runs `serve` on every connection it accepts, and counts them.
async fn counting_server<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (addr, accepted)
}

/// An echo server that counts the connections it accepts.
async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    counting_server(|stream| async move {
        let service = service_fn(|req: http::Request<Incoming>| async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Ok::<_, Infallible>(http::Response::new(Full::new(body)))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .await
}

fn pool(addr: std::net::SocketAddr) -> Arc<Pool> {
    pool_with_idle_timeout(addr, Duration::from_secs(30))
}

fn pool_with_idle_timeout(addr: std::net::SocketAddr, idle: Duration) -> Arc<Pool> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let origin: http::Uri = format!("http://{addr}").parse().unwrap();
    Pool::new(connector, origin, 1, 4, idle)
}

fn request(addr: std::net::SocketAddr, body: &'static str) -> Request {
    http::Request::builder()
        .method("POST")
        .uri("/echo")
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    for i in 0..20 {
        let text: &'static str = if i % 2 == 0 { "even" } else { "odd" };
        let response = pool.send(request(addr, text), &mut false).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, text.as_bytes());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_without_traffic() {
    let (addr, _) = server().await;
    let pool = pool_with_idle_timeout(addr, Duration::from_millis(50));
    let response = pool.send(request(addr, "x"), &mut false).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(pool.idle_count(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.idle_count(), 0, "the reaper closed it");
}

#[tokio::test]
async fn a_body_dropped_after_its_last_byte_gives_its_connection_back() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    for _ in 0..3 {
        // An empty body is complete before anyone polls it (hyper never does).
        let body = pool
            .send(request(addr, ""), &mut false)
            .await
            .unwrap()
            .into_body();
        assert!(body.is_end_stream());
        drop(body);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unfinished_body_is_not_reused() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    let response = pool
        .send(request(addr, "abandoned"), &mut false)
        .await
        .unwrap();
    drop(response);
    assert_eq!(pool.idle_count(), 0);
    let response = pool.send(request(addr, "next"), &mut false).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "next".as_bytes());
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_requests_open_connections_and_keep_at_most_max_idle() {
    let (addr, accepted) = server().await;
    let pool = pool(addr);
    let mut responses = Vec::new();
    for _ in 0..6 {
        responses.push(pool.send(request(addr, "x"), &mut false).await.unwrap());
    }
    for response in responses {
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 6);
    assert_eq!(pool.idle_count(), 4);
}

#[tokio::test]
async fn a_connection_the_far_end_closed_is_replaced_without_failing_the_request() {
    // A server that answers one request per connection and then closes it, without
    // announcing it (no `Connection: close`).
    let (addr, accepted) = counting_server(|mut stream| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        // Dropped here: the socket closes while the client holds it as idle.
    })
    .await;
    let pool = pool(addr);
    for _ in 0..5 {
        let response = pool.send(request(addr, ""), &mut false).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok".as_bytes());
        // Let the close reach us, as it would between two requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn connect_failure_is_a_connect_error_and_nothing_was_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut sent = false;
    let err = pool(addr)
        .send(request(addr, ""), &mut sent)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    assert!(!sent, "never reached the provider");
}

#[tokio::test]
async fn a_request_read_and_never_answered_may_have_been_sent() {
    // Reads the whole request, then closes without a word.
    let (addr, _) = counting_server(|mut stream| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        while !seen.ends_with(b"unanswered") {
            let n = stream.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let mut sent = false;
    let err = pool(addr)
        .send(request(addr, "unanswered"), &mut sent)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Lost(_)), "{err:?}");
    assert!(sent, "the provider has the request");

    // Still waiting for the answer when the caller gives up: sent too.
    let (addr, _) = counting_server(|mut stream| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let pool = pool(addr);
    let mut sent = false;
    let waiting = pool.send(request(addr, "slow"), &mut sent);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), waiting)
            .await
            .is_err()
    );
    assert!(sent);
}

#[test]
fn frames_stream_through_as_they_arrive() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                .await
                .unwrap();
            release_rx.await.unwrap();
            stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
            let _ = stream.read(&mut buf).await;
        });
        let pool = pool(addr);
        let mut body = pool
            .send(request(addr, ""), &mut false)
            .await
            .unwrap()
            .into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first".as_bytes());
        release_tx.send(()).unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "second".as_bytes());
        assert!(body.frame().await.is_none());
        assert_eq!(pool.idle_count(), 1);
    });
}
