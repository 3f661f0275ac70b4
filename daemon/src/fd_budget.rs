//! The open-files budget: every listener has a connection cap, and the caps together must fit
//! under `RLIMIT_NOFILE`, or a flood of one listener (each connection a descriptor) takes the
//! descriptors another needs to accept at all. Issue #20: unauthenticated connections to the
//! admin HTTPS port used every descriptor within seconds, the proxy's `accept` failed with
//! `Too many open files` and `/healthz` stopped answering.
//!
//! [`Budget::of`] counts the most descriptors each part can hold at once; [`apply`], at
//! start-up, raises the soft limit when the budget needs more (only as far as it needs:
//! the caps, not the limit, decide what is used), and refuses to start when even the hard
//! limit is too small, naming the numbers and the largest `proxy.max_connections` that fits.

use anyhow::bail;
use gateway_shared::Provider;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::config::Config;

/// Descriptors besides connections: stdio, the three listeners, the database and its WAL
/// and shared-memory files, the data directory lock, certificate and credential files while
/// read, DNS look-ups in flight, the runtimes' epoll and wake-up descriptors (four a loop,
/// added per loop).
const RESERVE: u64 = 256;
const RESERVE_PER_LOOP: u64 = 4;

/// The most descriptors each part of the daemon can hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Proxy connections, and the upstream connection each may be using.
    pub proxy: u64,
    /// Idle upstream connections the pools may keep: per provider and pool shard (one per
    /// event loop, and one for other threads), at most the pool's idle cap, and at most the
    /// connections one loop serves at once (the loop with the fewest open connections gets
    /// each new one, so no loop holds more than its share plus one).
    pub upstream_idle: u64,
    /// Connections beyond the proxy's cap being answered 503 (`server::refusal_slots`).
    pub proxy_refusals: u64,
    pub admin_https: u64,
    pub admin_socket: u64,
    pub reserve: u64,
}

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The soft limit already fit the budget.
    Fits,
    /// The soft limit was raised from the first number to the second.
    Raised(u64, u64),
}

impl Budget {
    pub fn of(config: &Config) -> Budget {
        Budget::for_caps(Caps {
            proxy_max_connections: config.proxy.max_connections,
            admin_https: config.admin.max_connections,
            admin_socket: config.admin.socket_max_connections,
            event_loops: config.event_loops(),
        })
    }

    fn for_caps(caps: Caps) -> Budget {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let loops = caps.event_loops.max(1);
        let per_loop = caps.proxy_max_connections.div_ceil(loops).saturating_add(1);
        let idle_per_pool = crate::proxy::upstream::POOL_MAX_IDLE.min(per_loop);
        let pools = Provider::ALL.len().saturating_mul(loops + 1);
        Budget {
            proxy: count(caps.proxy_max_connections).saturating_mul(2),
            upstream_idle: count(pools.saturating_mul(idle_per_pool)),
            proxy_refusals: count(crate::server::refusal_slots(caps.proxy_max_connections)),
            admin_https: count(caps.admin_https),
            admin_socket: count(caps.admin_socket),
            reserve: RESERVE.saturating_add(RESERVE_PER_LOOP.saturating_mul(count(loops))),
        }
    }

    pub fn total(&self) -> u64 {
        [
            self.proxy,
            self.upstream_idle,
            self.proxy_refusals,
            self.admin_https,
            self.admin_socket,
            self.reserve,
        ]
        .iter()
        .fold(0, |sum, n| sum.saturating_add(*n))
    }
}

/// The caps a budget is computed from.
#[derive(Clone, Copy, Debug)]
struct Caps {
    proxy_max_connections: usize,
    admin_https: usize,
    admin_socket: usize,
    event_loops: usize,
}

/// Checks the budget against `RLIMIT_NOFILE` at start-up and raises the soft limit if it
/// must; an error (with the numbers) when the budget cannot fit.
pub fn apply(config: &Config) -> anyhow::Result<Applied> {
    let budget = Budget::of(config);
    let need = budget.total();
    let limit = getrlimit(Resource::Nofile);
    match plan(need, limit) {
        Plan::Fits => Ok(Applied::Fits),
        Plan::Raise(from) => {
            let raised = Rlimit {
                current: Some(need),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::info!(
                        from,
                        to = need,
                        hard = limit
                            .maximum
                            .map_or("unlimited".to_owned(), |n| n.to_string()),
                        "raised the open-files limit to fit the connection caps"
                    );
                    Ok(Applied::Raised(from, need))
                }
                Err(err) => bail!(
                    "{}; raising the soft limit from {from} failed: {err}",
                    too_small(config, &budget, from)
                ),
            }
        }
        Plan::TooSmall(hard) => bail!("{}", too_small(config, &budget, hard)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Fits,
    /// Raise the soft limit (now this) to the need.
    Raise(u64),
    /// The hard limit (this) is below the need.
    TooSmall(u64),
}

fn plan(need: u64, limit: Rlimit) -> Plan {
    // `None` is RLIM_INFINITY.
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if need <= soft {
        Plan::Fits
    } else if need <= hard {
        Plan::Raise(soft)
    } else {
        Plan::TooSmall(hard)
    }
}

/// The refusal: what the caps need, what there is, and the two ways out.
fn too_small(config: &Config, budget: &Budget, limit: u64) -> String {
    let fit = largest_proxy_cap_within(config, limit);
    let lower = match fit {
        Some(fit) => format!("lower proxy.max_connections to {fit} or less"),
        None => "lower admin.max_connections and admin.socket_max_connections".to_owned(),
    };
    format!(
        "the connection caps need {need} open files but the limit is {limit}: proxy.max_connections \
         = {proxy_cap} takes {proxy} (a client and an upstream connection each) and {idle} idle \
         upstream connections, {refusals} more answer 503 beyond it, admin.max_connections = \
         {https}, admin.socket_max_connections = {socket}, and {reserve} are kept for the \
         database, logs and runtime; raise the limit (LimitNOFILE= in the systemd unit, \
         ulimit -n) or {lower}",
        need = budget.total(),
        proxy_cap = config.proxy.max_connections,
        proxy = budget.proxy,
        idle = budget.upstream_idle,
        refusals = budget.proxy_refusals,
        https = budget.admin_https,
        socket = budget.admin_socket,
        reserve = budget.reserve,
    )
}

/// The largest `proxy.max_connections` whose budget fits under `limit`, other caps kept.
fn largest_proxy_cap_within(config: &Config, limit: u64) -> Option<usize> {
    let fits = |proxy_max_connections: usize| {
        let caps = Caps {
            proxy_max_connections,
            admin_https: config.admin.max_connections,
            admin_socket: config.admin.socket_max_connections,
            event_loops: config.event_loops(),
        };
        Budget::for_caps(caps).total() <= limit
    };
    if !fits(1) {
        return None;
    }
    // The budget grows with the cap: the largest that fits, by bisection.
    let (mut fitting, mut too_many) = (1, config.proxy.max_connections);
    while too_many - fitting > 1 {
        let middle = fitting + (too_many - fitting) / 2;
        if fits(middle) {
            fitting = middle;
        } else {
            too_many = middle;
        }
    }
    Some(fitting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(proxy_max_connections: usize, event_loops: usize) -> Caps {
        Caps {
            proxy_max_connections,
            admin_https: 64,
            admin_socket: 64,
            event_loops,
        }
    }

    #[test]
    fn the_budget_counts_every_listener_and_the_idle_upstream_pools() {
        let budget = Budget::for_caps(caps(4096, 2));
        assert_eq!(
            budget,
            Budget {
                proxy: 8192,
                // 3 providers × 3 shards × the pool's idle cap (256).
                upstream_idle: 2304,
                proxy_refusals: 256,
                admin_https: 64,
                admin_socket: 64,
                reserve: 264,
            }
        );
        assert_eq!(budget.total(), 11_144);
        // Many loops: each pool keeps at most what its loop serves at once.
        let wide = Budget::for_caps(caps(4096, 128));
        assert_eq!(wide.upstream_idle, 3 * 129 * 33);
        assert!(wide.total() < 65_536, "fits the systemd unit's LimitNOFILE");
    }

    #[test]
    fn the_soft_limit_is_raised_when_the_hard_one_allows() {
        let limit = |soft, hard| Rlimit {
            current: soft,
            maximum: hard,
        };
        assert_eq!(plan(1000, limit(Some(1024), Some(4096))), Plan::Fits);
        assert_eq!(plan(2000, limit(Some(1024), Some(4096))), Plan::Raise(1024));
        assert_eq!(plan(2000, limit(Some(1024), None)), Plan::Raise(1024));
        assert_eq!(
            plan(5000, limit(Some(1024), Some(4096))),
            Plan::TooSmall(4096)
        );
        assert_eq!(plan(u64::MAX - 1, limit(None, None)), Plan::Fits);
    }

    #[test]
    fn a_refusal_names_the_numbers_and_the_cap_that_would_fit() {
        let config = Config::from_text("worker_threads = 2").expect("config");
        let message = too_small(&config, &Budget::of(&config), 1024);
        for needle in [
            "need 11144 open files but the limit is 1024",
            "proxy.max_connections = 4096 takes 8192",
            "admin.max_connections = 64",
            "LimitNOFILE=",
        ] {
            assert!(message.contains(needle), "{needle}: {message}");
        }
        let fit = largest_proxy_cap_within(&config, 1024).expect("some cap fits");
        assert!(message.contains(&format!("lower proxy.max_connections to {fit} or less")));
        let total = |n| Budget::for_caps(caps(n, 2)).total();
        assert!(total(fit) <= 1024 && total(fit + 1) > 1024, "{fit}");
        assert_eq!(largest_proxy_cap_within(&config, 100), None);
    }
}
