//! A counting TCP relay between gatewayd and Redis: how many round trips a request costs.
//!
//! gatewayd's Redis URL points here; every connection it opens is relayed byte for byte to
//! the real Redis, on a runtime thread of its own (so the load generator's thread does not
//! carry it), with `TCP_NODELAY` both ways. What is counted is a *flight*: the client sends
//! bytes after the relay has forwarded a reply (or first on a connection). A pipelined batch
//! is one write and one flight; several requests' commands that leave before any reply came
//! back share one flight too, so under concurrency flights per request can only be fewer than
//! the round trips one request would cost alone. At c1 they are exactly that.
//!
//! It also counts the commands gatewayd sends, by name, by following the RESP arrays of the
//! client's stream ([`CommandCounter`]): Redis's own `INFO commandstats` counts the commands
//! scripts call too, and cannot tell them from the client's.
//!
//! The relay is in the path, so it adds two loopback hops to every round trip: the cluster
//! gatewayd's latency is measured with it unless `--no-redis-relay` (then no round trips are
//! counted).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Totals over every relayed connection since the relay started.
#[derive(Debug, Default)]
pub struct Counters {
    pub flights: AtomicU64,
    pub connections: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Commands sent by the client, by lower-case name.
    pub commands: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn count_command(&self, name: &str) {
        let mut commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        match commands.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                commands.insert(name.to_owned(), 1);
            }
        }
    }
}

/// A running relay; it stops with the process (its thread is detached).
pub struct Relay {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `upstream`.
    /// May be called from inside another runtime: the relay's is built on its own thread.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Relay> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the relay's runtime")?;
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("redis-relay".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept(listener, upstream, shared).await,
                        Err(err) => eprintln!("gateway-bench: redis relay: {err}"),
                    }
                });
            })
            .context("starting the relay's thread")?;
        Ok(Relay { addr, counters })
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, counters: Arc<Counters>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            if let Err(err) = relay(client, upstream, &counters).await {
                eprintln!("gateway-bench: redis relay: {err:#}");
            }
        });
    }
}

/// Relays one connection until either side closes it.
async fn relay(client: TcpStream, upstream: SocketAddr, counters: &Counters) -> anyhow::Result<()> {
    let server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connecting to Redis at {upstream}"))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // True when the client's next bytes begin a flight: at the start, and after each reply.
    let replied = AtomicBool::new(true);
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut parser = CommandCounter::default();
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                server_write.shutdown().await.ok();
                return anyhow::Ok(());
            }
            if replied.swap(false, Ordering::AcqRel) {
                counters.flights.fetch_add(1, Ordering::Relaxed);
            }
            counters.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
            server_write.write_all(&buf[..n]).await?;
            parser.feed(&buf[..n], |name| counters.count_command(name));
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                client_write.shutdown().await.ok();
                return anyhow::Ok(());
            }
            counters.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
            // Marked before the client can see the reply: its answer to it is a new flight.
            replied.store(true, Ordering::Release);
            client_write.write_all(&buf[..n]).await?;
        }
    };
    // Either side closing ends the connection (gatewayd reconnects if it wants to).
    tokio::select! {
        result = up => result,
        result = down => result,
    }
}

/// Follows a client's RESP stream (arrays of bulk strings, as clients send commands; an
/// inline command is a line) across reads, calling back with each command's name.
#[derive(Debug, Default)]
pub struct CommandCounter {
    state: State,
    /// A header line being read (`*N` or `$L`), across reads.
    line: Vec<u8>,
    /// Elements left in the current array.
    elements: u64,
    /// The first element (the command's name) so far.
    name: Vec<u8>,
    first: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a command's start: `*N\r\n` or an inline line.
    #[default]
    Start,
    /// Expecting `$L\r\n`.
    BulkHeader,
    /// Inside a bulk string: this many bytes left, its `\r\n` included.
    Bulk(u64),
}

/// Longest command name kept (longer ones are cut: they are not Redis's).
const NAME_MAX: usize = 32;

impl CommandCounter {
    pub fn feed(&mut self, mut bytes: &[u8], mut command: impl FnMut(&str)) {
        while !bytes.is_empty() {
            match self.state {
                State::Start | State::BulkHeader => {
                    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(bytes);
                        return;
                    };
                    self.line.extend_from_slice(&bytes[..=end]);
                    bytes = &bytes[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.header(&line, &mut command);
                }
                State::Bulk(left) => {
                    let take = (left as usize).min(bytes.len());
                    if self.first && self.name.len() < NAME_MAX {
                        // The name's bytes (the trailing \r\n is cut when the name ends).
                        let room = NAME_MAX - self.name.len();
                        self.name.extend_from_slice(&bytes[..take.min(room)]);
                    }
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    if left > 0 {
                        self.state = State::Bulk(left);
                        continue;
                    }
                    self.first = false;
                    self.elements = self.elements.saturating_sub(1);
                    if self.elements == 0 {
                        self.finish(&mut command);
                    } else {
                        self.state = State::BulkHeader;
                    }
                }
            }
        }
    }

    fn header(&mut self, line: &[u8], command: &mut impl FnMut(&str)) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        match (self.state, text.as_bytes().first()) {
            (State::Start, Some(b'*')) => {
                self.elements = text[1..].parse().unwrap_or(0);
                self.first = true;
                self.name.clear();
                self.state = if self.elements == 0 {
                    State::Start
                } else {
                    State::BulkHeader
                };
            }
            (State::Start, None) => {} // an empty line between commands
            (State::Start, Some(_)) => {
                self.name = text
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .as_bytes()
                    .to_vec();
                self.finish(command);
            }
            (State::BulkHeader, Some(b'$')) => {
                let len: u64 = text[1..].parse().unwrap_or(0);
                self.state = State::Bulk(len + 2);
            }
            // Not RESP as clients write it: start again at the next line.
            _ => self.state = State::Start,
        }
    }

    fn finish(&mut self, command: &mut impl FnMut(&str)) {
        let name = String::from_utf8_lossy(&self.name)
            .trim_end_matches(['\r', '\n'])
            .to_ascii_lowercase();
        command(&name);
        self.name.clear();
        self.state = State::Start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake server that answers every command; a client that sends one command, waits,
    /// a pipelined pair in one write, waits, one more: 3 flights, not 4 commands.
    #[test]
    fn counts_alternations_not_writes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let server_addr = server.local_addr().expect("addr");
            tokio::spawn(async move {
                let (mut stream, _) = server.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buf).await.expect("read");
                    if n == 0 {
                        return;
                    }
                    // One reply per command in what arrived.
                    let commands = buf[..n].iter().filter(|&&b| b == b'\n').count();
                    for _ in 0..commands {
                        stream.write_all(b"+OK\r\n").await.expect("write");
                    }
                }
            });
            let relay = Relay::start(server_addr).expect("relay");
            let mut client = TcpStream::connect(relay.addr).await.expect("connect");
            client.set_nodelay(true).expect("nodelay");
            let mut buf = [0u8; 64];
            let expect = |n: usize| n * 5;
            client.write_all(b"PING\r\n").await.expect("write");
            client
                .read_exact(&mut buf[..expect(1)])
                .await
                .expect("reply");
            client.write_all(b"PING\r\nPING\r\n").await.expect("write");
            client
                .read_exact(&mut buf[..expect(2)])
                .await
                .expect("replies");
            client.write_all(b"PING\r\n").await.expect("write");
            client
                .read_exact(&mut buf[..expect(1)])
                .await
                .expect("reply");
            assert_eq!(relay.counters.flights.load(Ordering::Relaxed), 3);
            let commands = relay.counters.commands.lock().expect("lock").clone();
            assert_eq!(commands.get("ping"), Some(&4));
        });
    }

    /// An EVALSHA and a ZINCRBY pipelined, fed one byte at a time and then whole.
    #[test]
    fn counts_commands_across_reads() {
        let stream = b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n0123456789012345678901234567890123456789\r\n$1\r\n1\r\n$4\r\nk{a}\r\n$0\r\n\r\n*4\r\n$7\r\nZINCRBY\r\n$3\r\nidx\r\n$2\r\n-1\r\n$1\r\na\r\nPING\r\n";
        for chunk in [1, stream.len()] {
            let mut counter = CommandCounter::default();
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                counter.feed(piece, |name| seen.push(name.to_owned()));
            }
            assert_eq!(seen, ["evalsha", "zincrby", "ping"], "chunks of {chunk}");
        }
    }
}
