//! A TCP relay to the tests' PostgreSQL server that a test can cut and restore: a store
//! that cannot be reached between a change's notification and its read.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

/// `host:port` of the server in a `postgres://` URL.
pub(super) fn server_of(url: &str) -> String {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let server = authority.rsplit_once('@').map_or(authority, |(_, s)| s);
    if server.contains(':') {
        server.to_owned()
    } else {
        format!("{server}:5432")
    }
}

/// `url` with its server replaced by `addr` (user, database and options kept).
pub(super) fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{addr}{tail}")
}

/// A TCP relay to the PostgreSQL server that can be cut (every connection dropped, new
/// ones refused) and restored on the same port.
pub(super) struct Relay {
    pub(super) addr: SocketAddr,
    upstream: String,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    pub(super) async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = Some(tokio::spawn(relay(listener, upstream.clone())));
        Relay {
            addr,
            upstream,
            task,
        }
    }

    pub(super) fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            // Its `JoinSet` of connections goes with it.
            task.abort();
        }
    }

    pub(super) async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind");
        self.task = Some(tokio::spawn(relay(listener, self.upstream.clone())));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn relay(listener: tokio::net::TcpListener, upstream: String) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstream.clone();
        connections.spawn(async move {
            if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

#[test]
fn urls_are_pointed_at_the_relay_keeping_user_and_database() {
    let addr: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
    assert_eq!(
        through(
            "postgres://postgres@127.0.0.1:5432/gw?sslmode=disable",
            addr
        ),
        "postgres://postgres@127.0.0.1:4000/gw?sslmode=disable"
    );
    assert_eq!(
        through("postgres://db.internal/gw", addr),
        "postgres://127.0.0.1:4000/gw"
    );
    assert_eq!(
        server_of("postgres://u:p@db.internal:6543/gw"),
        "db.internal:6543"
    );
    assert_eq!(server_of("postgres://localhost/gw"), "localhost:5432");
}
