//! The load generator: wrk-style closed-loop load over keep-alive HTTP/1 connections.
//!
//! Each of C connections sends its next request as soon as the previous response has been
//! read to the end, so throughput and latency are the server's, not an arrival schedule's.
//! A cell is a warm-up (connections open, pools and caches fill, nothing recorded) followed
//! by a fixed measuring window; a request counts when it starts and ends inside the window.
//! Latencies are kept exactly (nanoseconds, sorted at the end): a few hundred thousand `u64`s
//! per cell is cheaper and more exact than a histogram. The watched server's CPU time is read
//! from `/proc` at both edges of the window.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant as TokioInstant;

use crate::mock::SPLIT_HEADER;

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Request path, e.g. `/openai/v1/chat/completions`.
    pub path: String,
    /// `Authorization: Bearer` value, if any.
    pub bearer: Option<String>,
}

/// What is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A non-streaming chat completion.
    Json,
    /// A 7-event SSE stream, all events written back to back by the mock.
    Sse,
    /// The same stream, each event in a write of its own.
    SseSplit,
}

impl Mode {
    pub fn parse(text: &str) -> anyhow::Result<Mode> {
        match text {
            "json" => Ok(Mode::Json),
            "sse" => Ok(Mode::Sse),
            "sse-split" => Ok(Mode::SseSplit),
            other => anyhow::bail!("unknown mode {other:?}: use json, sse or sse-split"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Json => "json",
            Mode::Sse => "sse",
            Mode::SseSplit => "sse-split",
        }
    }

    fn body(self) -> Bytes {
        let stream = self != Mode::Json;
        let body = serde_json::json!({
            "model": "bench-model",
            "max_tokens": 20,
            "stream": stream,
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "Say hello in five words."}
            ]
        });
        Bytes::from(body.to_string())
    }
}

/// One cell's shape.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// One cell's measurements.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Completed, valid responses inside the window.
    pub requests: u64,
    /// Failed requests and invalid responses (whole cell, warm-up included).
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    /// Sorted, nanoseconds.
    latencies: Vec<u64>,
    /// The watched process's CPU time over the window.
    pub cpu: Option<Duration>,
    /// What the window cost Redis (cluster mode only).
    pub redis: Option<crate::cluster::Delta>,
}

impl Sample {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// A latency percentile (`q` in 0..=1), in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies.len() as f64) * q).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index] as f64 / 1e6
    }

    /// Adds another round of the same cell: counts, windows and CPU add up, latencies pool.
    pub fn merge(&mut self, other: Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.window += other.window;
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.cpu = self.cpu.zip(other.cpu).map(|(a, b)| a + b);
        self.redis = match (self.redis.take(), other.redis) {
            (Some(mut ours), Some(theirs)) => {
                ours.merge(&theirs);
                Some(ours)
            }
            _ => None,
        };
    }

    /// Pools `round` into `slot` (the first round fills it).
    pub fn pool(slot: &mut Option<Sample>, round: Sample) {
        match slot {
            Some(merged) => merged.merge(round),
            None => *slot = Some(round),
        }
    }

    /// `count` per request in the window.
    pub fn per_request(&self, count: f64) -> Option<f64> {
        (self.requests > 0).then(|| count / self.requests as f64)
    }

    /// CPU microseconds per request of the watched process.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.requests > 0).then(|| cpu.as_secs_f64() * 1e6 / self.requests as f64)
    }
}

#[derive(Default)]
struct ConnStats {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u64>,
}

impl ConnStats {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// Drives one cell against `target`; `watched` is the pid whose CPU time is charged, and
/// `redis` (cluster mode) reads Redis's counters at the window's edges too.
pub async fn run(
    target: &Target,
    mode: Mode,
    shape: Shape,
    watched: Option<u32>,
    redis: Option<&crate::cluster::Observer>,
) -> anyhow::Result<Sample> {
    let body = mode.body();
    let begin = TokioInstant::now();
    let measure_from = begin + shape.warmup;
    let until = measure_from + shape.duration;
    let mut tasks = Vec::with_capacity(shape.concurrency);
    for _ in 0..shape.concurrency {
        let target = target.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(connection(
            target,
            mode,
            body,
            measure_from.into_std(),
            until.into_std(),
        )));
    }
    tokio::time::sleep_until(measure_from).await;
    let cpu_before = watched.map(crate::process::cpu_time).transpose()?;
    let redis_before = match redis {
        Some(observer) => Some(observer.snapshot().await?),
        None => None,
    };
    tokio::time::sleep_until(until).await;
    let cpu_after = watched.map(crate::process::cpu_time).transpose()?;
    let redis_after = match redis {
        Some(observer) => Some(observer.snapshot().await?),
        None => None,
    };
    let mut sample = Sample {
        window: shape.duration,
        cpu: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| after.saturating_sub(before)),
        redis: redis_before
            .zip(redis_after)
            .map(|(before, after)| crate::cluster::Delta::between(&before, &after)),
        ..Sample::default()
    };
    for task in tasks {
        let stats = task.await.context("load connection task panicked")?;
        sample.requests += stats.ok;
        sample.errors += stats.errors;
        if sample.first_error.is_none() {
            sample.first_error = stats.first_error;
        }
        sample.latencies.extend_from_slice(&stats.latencies);
    }
    sample.latencies.sort_unstable();
    Ok(sample)
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn connection(
    target: Target,
    mode: Mode,
    body: Bytes,
    measure_from: Instant,
    until: Instant,
) -> ConnStats {
    let mut stats = ConnStats {
        latencies: Vec::with_capacity(64 * 1024),
        ..ConnStats::default()
    };
    let host = target.addr.to_string();
    let mut sender: Option<Sender> = None;
    loop {
        let started = Instant::now();
        if started >= until {
            break;
        }
        let ready = match sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            match connect(target.addr).await {
                Ok(fresh) => sender = Some(fresh),
                Err(err) => {
                    stats.error(format!("{err:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let request = match build_request(&target, &host, mode, body.clone()) {
            Ok(request) => request,
            Err(err) => {
                stats.error(format!("{err:#}"));
                break;
            }
        };
        let started = Instant::now();
        let outcome = exchange(s, request, mode).await;
        let ended = Instant::now();
        match outcome {
            Ok(()) => {
                if started >= measure_from && ended <= until {
                    stats.ok += 1;
                    let nanos = u64::try_from(ended.duration_since(started).as_nanos());
                    stats.latencies.push(nanos.unwrap_or(u64::MAX));
                }
            }
            Err(err) => {
                sender = None;
                stats.error(format!("{err:#}"));
            }
        }
    }
    stats
}

fn build_request(
    target: &Target,
    host: &str,
    mode: Mode,
    body: Bytes,
) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(target.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(bearer) = &target.bearer {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    if mode == Mode::SseSplit {
        request = request.header(SPLIT_HEADER, "1");
    }
    Ok(request.body(Full::new(body))?)
}

/// One request and its whole response; an error unless it is a complete 200.
async fn exchange(
    sender: &mut Sender,
    request: http::Request<Full<Bytes>>,
    mode: Mode,
) -> anyhow::Result<()> {
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        anyhow::bail!(
            "status {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
    }
    if mode != Mode::Json && !bytes.ends_with(b"data: [DONE]\n\n") {
        anyhow::bail!("stream did not end with [DONE] ({} bytes)", bytes.len());
    }
    Ok(())
}

/// `count` requests one after another on one connection (the callgrind mode's fixed
/// input); an error at the first that fails.
pub async fn sequential(target: &Target, mode: Mode, count: usize) -> anyhow::Result<()> {
    let mut sender = connect(target.addr).await?;
    let host = target.addr.to_string();
    let body = mode.body();
    for i in 0..count {
        sender
            .ready()
            .await
            .with_context(|| format!("the connection to {} closed", target.addr))?;
        let request = build_request(target, &host, mode, body.clone())?;
        exchange(&mut sender, request, mode)
            .await
            .with_context(|| format!("request {} of {count} to {}", i + 1, target.addr))?;
    }
    Ok(())
}

/// One request outside any cell, to check a target answers before load is put on it.
pub async fn probe(target: &Target, mode: Mode) -> anyhow::Result<()> {
    let mut sender = connect(target.addr).await?;
    let host = target.addr.to_string();
    let request = build_request(target, &host, mode, mode.body())?;
    exchange(&mut sender, request, mode)
        .await
        .with_context(|| format!("probe of {} {}", target.addr, target.path))
}
