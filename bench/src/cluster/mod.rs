//! Cluster mode: gatewayd with a `[cluster]` section, a PostgreSQL database and a Redis of
//! its own for the run, measured beside the single-server gatewayd (issue #17).
//!
//! What it adds to the measurements, over each cell's window: Redis round trips ("flights",
//! counted by [`relay`]), Redis commands (`INFO commandstats` deltas) and Redis CPU
//! (`INFO cpu`: `used_cpu_sys + used_cpu_user` deltas), each per request. On a Redis other
//! processes use too, the commands and CPU include theirs; `--private-redis` gives the run a
//! `redis-server` of its own. The flights are only gatewayd's.
//!
//! Modules: [`backends`] makes and removes the database and the Redis keys, [`relay`]
//! counts, [`floor`] times a bare Redis round trip (the least an admission can cost),
//! [`report`] renders the section.

pub mod backends;
pub mod floor;
pub mod relay;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

use crate::gatewayd::{Gateway, Home, Launcher};
use backends::{Database, Redis};
use relay::{Counters, Relay};

/// Where the cluster's backends are (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    pub postgres_url: String,
    pub redis_url: String,
    /// Start a `redis-server` of the run's own instead of using `redis_url`.
    pub private_redis: bool,
    /// Put the counting relay between gatewayd and Redis.
    pub relay: bool,
}

/// The running cluster gatewayd and its backends. Dropped in field order: the daemon stops
/// first, then its Redis keys and its database are removed.
pub struct Cluster {
    pub gateway: Gateway,
    home: Home,
    redis: Redis,
    relay: Option<Relay>,
    database: Database,
}

impl Cluster {
    pub async fn start(
        launcher: &Launcher,
        home: Home,
        settings: &Settings,
    ) -> anyhow::Result<Cluster> {
        let redis = if settings.private_redis {
            Redis::private()?
        } else {
            Redis::shared(&settings.redis_url)?
        };
        let database = Database::create(&settings.postgres_url).await?;
        let relay = settings
            .relay
            .then(|| Relay::start(redis.addr))
            .transpose()?;
        let daemon_redis_url = match &relay {
            Some(relay) => backends::with_addr(&redis.url, relay.addr),
            None => redis.url.clone(),
        };
        let postgres_file = home.dir.join("postgres.url");
        let redis_file = home.dir.join("redis.url");
        backends::write_url_file(&postgres_file, &database.url)?;
        backends::write_url_file(&redis_file, &daemon_redis_url)?;
        let section = format!(
            "\n[cluster]\npostgres_url_file = {:?}\nredis_url_file = {:?}\n",
            postgres_file.display().to_string(),
            redis_file.display().to_string()
        );
        launcher.write_config_with(&home, &section)?;
        let gateway = launcher
            .start(&home)
            .context("starting the cluster gatewayd")?;
        Ok(Cluster {
            gateway,
            home,
            redis,
            relay,
            database,
        })
    }

    /// Who watches Redis over each window.
    pub async fn observer(&self) -> anyhow::Result<Observer> {
        let client = redis::Client::open(self.redis.url.as_str())?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to Redis at {}", self.redis.addr))?;
        Ok(Observer {
            connection,
            flights: self.relay.as_ref().map(|r| Arc::clone(&r.counters)),
        })
    }

    /// A bare Redis round trip on this machine, straight to Redis (see [`floor`]).
    pub fn floor(&self) -> anyhow::Result<floor::Floor> {
        floor::measure(&self.redis.url)
    }

    /// A line for the report's header: where everything is (host and port, never a URL).
    pub fn describe(&self) -> String {
        format!(
            "gatewayd-cluster: pid {}, PostgreSQL database {} at {}, {} Redis at {}{}.",
            self.gateway.proc.pid(),
            self.database.name,
            backends::authority(&self.database.url),
            if self.redis.private.is_some() {
                "a private"
            } else {
                "the shared"
            },
            self.redis.addr,
            match &self.relay {
                Some(relay) => format!(" through the counting relay at {}", relay.addr),
                None => ", no relay (round trips not counted)".to_owned(),
            }
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(err) = self.gateway.proc.stop(Duration::from_secs(30)) {
            eprintln!("gateway-bench: stopping the cluster gatewayd: {err:#}");
        }
        if let Some(relay) = &self.relay {
            let c = &relay.counters;
            eprintln!(
                "gateway-bench: the Redis relay saw {} connection(s), {} flights, {} bytes up, {} down",
                c.connections.load(Ordering::Relaxed),
                c.flights.load(Ordering::Relaxed),
                c.bytes_up.load(Ordering::Relaxed),
                c.bytes_down.load(Ordering::Relaxed)
            );
        }
        if self.redis.private.is_some() {
            return; // its keys go with it
        }
        let id_file = self.home.data().join("cluster-id");
        let id = match std::fs::read_to_string(&id_file) {
            Ok(id) => id.trim().to_owned(),
            Err(err) => {
                eprintln!(
                    "gateway-bench: no cluster id to delete Redis keys by ({}: {err})",
                    id_file.display()
                );
                return;
            }
        };
        let pattern = format!("gw:{}*", backends::glob_escape(&id));
        let redis = Redis {
            url: self.redis.url.clone(),
            addr: self.redis.addr,
            private: None,
        };
        match backends::blocking(async move { redis.delete_matching(&pattern).await }) {
            Ok(n) => eprintln!("gateway-bench: deleted {n} Redis keys under gw:{id}"),
            Err(err) => eprintln!("gateway-bench: deleting Redis keys under gw:{id}: {err:#}"),
        }
    }
}

/// Reads Redis's counters at a window's edges.
#[derive(Clone)]
pub struct Observer {
    connection: redis::aio::MultiplexedConnection,
    flights: Option<Arc<Counters>>,
}

/// Counters at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    relay: Option<RelayCounts>,
    cpu: Duration,
    commands: BTreeMap<String, CommandStat>,
}

/// What gatewayd sent, as the relay saw it.
#[derive(Clone, Debug, Default)]
pub struct RelayCounts {
    /// Round trips (see [`relay`]).
    pub flights: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Commands gatewayd sent, by name.
    pub commands: BTreeMap<String, u64>,
}

/// One line of `INFO commandstats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandStat {
    pub calls: u64,
    /// Microseconds Redis spent in them (a script's include the commands it called).
    pub usec: u64,
}

/// What one window (or several, pooled) cost Redis.
#[derive(Clone, Debug, Default)]
pub struct Delta {
    /// Through the relay; `None` without one.
    pub relay: Option<RelayCounts>,
    /// Redis's CPU time (user + system).
    pub cpu: Duration,
    /// Every command Redis ran, those scripts call included; ours (`INFO`) left out.
    pub commands: BTreeMap<String, CommandStat>,
}

impl Observer {
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let relay = self.flights.as_ref().map(|c| RelayCounts {
            flights: c.flights.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            commands: c.commands.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        });
        let mut connection = self.connection.clone();
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .context("INFO cpu commandstats")?;
        let (cpu, commands) = parse_info(&info)?;
        Ok(Snapshot {
            relay,
            cpu,
            commands,
        })
    }
}

impl Delta {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Delta {
        let commands = after
            .commands
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .filter_map(|(name, now)| {
                let was = before.commands.get(name).copied().unwrap_or_default();
                (now.calls > was.calls).then(|| {
                    let stat = CommandStat {
                        calls: now.calls - was.calls,
                        usec: now.usec.saturating_sub(was.usec),
                    };
                    (name.clone(), stat)
                })
            })
            .collect();
        let relay = before
            .relay
            .as_ref()
            .zip(after.relay.as_ref())
            .map(|(a, b)| RelayCounts {
                flights: b.flights.saturating_sub(a.flights),
                bytes_up: b.bytes_up.saturating_sub(a.bytes_up),
                bytes_down: b.bytes_down.saturating_sub(a.bytes_down),
                commands: subtract(&b.commands, &a.commands),
            });
        Delta {
            relay,
            cpu: after.cpu.saturating_sub(before.cpu),
            commands,
        }
    }

    pub fn merge(&mut self, other: &Delta) {
        self.relay = match (self.relay.take(), &other.relay) {
            (Some(mut ours), Some(theirs)) => {
                ours.flights += theirs.flights;
                ours.bytes_up += theirs.bytes_up;
                ours.bytes_down += theirs.bytes_down;
                for (name, n) in &theirs.commands {
                    *ours.commands.entry(name.clone()).or_default() += n;
                }
                Some(ours)
            }
            _ => None,
        };
        self.cpu += other.cpu;
        for (name, stat) in &other.commands {
            let ours = self.commands.entry(name.clone()).or_default();
            ours.calls += stat.calls;
            ours.usec += stat.usec;
        }
    }

    /// Commands Redis ran, those scripts called included.
    pub fn commands_run(&self) -> u64 {
        self.commands.values().map(|s| s.calls).sum()
    }

    /// Microseconds Redis spent in scripts (`EVAL*`/`EVALSHA*`, their commands included).
    pub fn script_usec(&self) -> u64 {
        self.commands
            .iter()
            .filter(|(name, _)| name.starts_with("eval"))
            .map(|(_, s)| s.usec)
            .sum()
    }
}

fn subtract(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(name, &n)| {
            let was = before.get(name).copied().unwrap_or(0);
            (n > was).then(|| (name.clone(), n - was))
        })
        .collect()
}

/// `used_cpu_sys + used_cpu_user` and `cmdstat_<name>:calls=N,usec=U,…` from `INFO`'s text.
fn parse_info(info: &str) -> anyhow::Result<(Duration, BTreeMap<String, CommandStat>)> {
    let mut cpu = 0.0;
    let mut seen = 0;
    let mut commands = BTreeMap::new();
    for line in info.lines() {
        let Some((field, value)) = line.trim().split_once(':') else {
            continue;
        };
        match field {
            "used_cpu_sys" | "used_cpu_user" => {
                cpu += value
                    .parse::<f64>()
                    .with_context(|| format!("INFO {field}: {value:?}"))?;
                seen += 1;
            }
            _ => {
                if let Some(name) = field.strip_prefix("cmdstat_") {
                    let number = |key: &str| {
                        value
                            .split(',')
                            .find_map(|kv| kv.strip_prefix(key))
                            .and_then(|n| n.parse::<u64>().ok())
                    };
                    if let Some(calls) = number("calls=") {
                        let usec = number("usec=").unwrap_or(0);
                        commands.insert(name.to_owned(), CommandStat { calls, usec });
                    }
                }
            }
        }
    }
    anyhow::ensure!(seen == 2, "INFO cpu has no used_cpu_sys and used_cpu_user");
    Ok((Duration::from_secs_f64(cpu.max(0.0)), commands))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_read_and_windows_subtract() {
        let before = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n\
            used_cpu_sys_children:9.0\r\n# Commandstats\r\n\
            cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00\r\n\
            cmdstat_info:calls=3,usec=9\r\n";
        let after = "used_cpu_sys:1.600000\r\nused_cpu_user:2.350000\r\n\
            cmdstat_evalsha:calls=30,usec=300\r\ncmdstat_zincrby:calls=20,usec=20\r\n\
            cmdstat_info:calls=4,usec=12\r\n";
        let snapshot = |text: &str, flights| {
            let (cpu, commands) = parse_info(text).expect("parse");
            Snapshot {
                relay: Some(RelayCounts {
                    flights,
                    bytes_up: flights * 100,
                    bytes_down: flights * 10,
                    commands: BTreeMap::from([("evalsha".to_owned(), flights)]),
                }),
                cpu,
                commands,
            }
        };
        let delta = Delta::between(&snapshot(before, 5), &snapshot(after, 25));
        let relay = delta.relay.as_ref().expect("relay counts");
        assert_eq!(
            (relay.flights, relay.bytes_up, relay.bytes_down),
            (20, 2000, 200)
        );
        assert_eq!(relay.commands.get("evalsha"), Some(&20));
        assert_eq!(delta.cpu.as_millis(), 200);
        let evalsha = CommandStat {
            calls: 20,
            usec: 200,
        };
        assert_eq!(delta.commands.get("evalsha"), Some(&evalsha));
        assert_eq!(delta.commands.get("zincrby").map(|s| s.calls), Some(20));
        assert!(!delta.commands.contains_key("info"));
        assert_eq!((delta.commands_run(), delta.script_usec()), (40, 200));
        let mut pooled = delta.clone();
        pooled.merge(&delta);
        let flights = pooled.relay.as_ref().map(|r| r.flights);
        assert_eq!((flights, pooled.commands_run()), (Some(40), 80));
        assert!(parse_info("cmdstat_get:calls=1").is_err());
    }
}
