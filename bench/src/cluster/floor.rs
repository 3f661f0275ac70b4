//! The floor under cluster mode's added latency: what one Redis round trip costs on this
//! machine before any admission logic, measured in the same run.
//!
//! Why: an admission is one round trip to Redis (issue #17), so the p50 that cluster mode
//! adds over one server can never be below a round trip of the same shape. On a fast
//! machine that is ~0.03 ms on loopback; on a shared 2-core VM it was ~0.1 ms, most of the
//! 0.15 ms target by itself. Printing it beside the target tells the two apart: what our
//! admission costs beyond the floor is ours to cut, the floor is the machine's.
//!
//! Measured as gatewayd's own event loop makes its calls: the redis crate's multiplexed
//! connection on a single-threaded tokio runtime (a thread of its own), straight to Redis
//! (never through the relay), one call at a time, after gatewayd's cells, while it idles.
//! Two calls: `PING`, and `EVALSHA` of a script that only returns 1, sent with an
//! admission's shape (5 keys named as gatewayd names them, 13 arguments), so the floor
//! includes what sending and starting a script costs but nothing the script does.

use std::time::{Duration, Instant};

use anyhow::Context;

/// Calls timed per kind, after `WARMUP` untimed ones.
const CALLS: usize = 3000;
const WARMUP: usize = 300;

/// Median round trips (ms).
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    pub ping_ms: f64,
    pub script_ms: f64,
}

/// Measures the floor against the Redis at `url` (blocking: its own thread and runtime).
pub fn measure(url: &str) -> anyhow::Result<Floor> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a runtime for the Redis floor")?;
        runtime.block_on(measure_on_loop(&url))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the Redis floor's thread panicked"))?
}

async fn measure_on_loop(url: &str) -> anyhow::Result<Floor> {
    let client = redis::Client::open(url).context("the Redis URL")?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis for the floor")?;
    let script = redis::Script::new("return 1");
    // Keys as gatewayd names them: a prefix with the cluster id, the owner as a hash tag.
    let base = "gw:00000000-0000-4000-8000-000000000000:{key_0000000000000000000000}:";
    let mut invocation = script.prepare_invoke();
    for name in [
        "led",
        "rw",
        "h:0123456789abcdef",
        "hx",
        "d:0123456789abcdef",
    ] {
        invocation.key(format!("{base}{name}"));
    }
    invocation
        .arg(0)
        .arg("key_0000000000000000000000")
        .arg(3)
        .arg("0123456789abcdef")
        .arg(1_000_000)
        .arg(1)
        .arg(1_000_000_000_000_000_u64)
        .arg("m")
        .arg(5_000_000)
        .arg(-1)
        .arg(5_000_000)
        .arg(900_000)
        .arg("openai\tbench-model");
    let ping = time(|| {
        let mut connection = connection.clone();
        async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
        }
    })
    .await
    .context("PING")?;
    // Loads the script (EVALSHA, then EVAL after NOSCRIPT) before anything is timed.
    let _: i64 = invocation
        .invoke_async(&mut connection)
        .await
        .context("loading the floor's script")?;
    let scripted = time(|| {
        let mut connection = connection.clone();
        let invocation = &invocation;
        async move {
            invocation
                .invoke_async::<i64>(&mut connection)
                .await
                .map(drop)
        }
    })
    .await
    .context("EVALSHA")?;
    Ok(Floor {
        ping_ms: ping,
        script_ms: scripted,
    })
}

/// The median of `CALLS` calls of `call`, one at a time, in ms.
async fn time<F, Fut>(mut call: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<()>>,
{
    let mut times: Vec<Duration> = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let started = Instant::now();
        call().await?;
        if i >= WARMUP {
            times.push(started.elapsed());
        }
    }
    times.sort_unstable();
    Ok(times[times.len() / 2].as_secs_f64() * 1e3)
}
