//! Failed admin logins on the HTTPS listener: who failed, how often, how long they wait for
//! the answer, and a warning an operator can act on.
//!
//! Issue #20 found 2,400 failed logins in 0.58 s, visible only as a counter, no address
//! anywhere. Now every failure is counted per client address (IPv6 per /64: one host
//! commonly holds a whole /64); after the first [`FREE_FAILURES`] (typos), an address's
//! refusals are answered later and later, doubling up to [`MAX_DELAY`]; and a warning names
//! the address and the reason, at most one line per address per [`LOG_EVERY`], with the
//! count of failures it held back. A valid token never waits: the delay is decided only for
//! a token already refused.
//!
//! Memory is bounded: at most [`MAX_CLIENTS`] addresses are remembered. When the table is
//! full, records idle for [`FORGET_AFTER`] make room; failures from any further new address
//! share one overflow record, so a flood from many addresses is slowed together instead of
//! growing the table or escaping the delay.
//!
//! The same clients (an IPv4 address, an IPv6 /64) are counted while their connections are
//! open ([`ClientConnections`]): one client may hold at most a quarter of the HTTPS
//! listener's connection cap. Without it one address could keep every slot busy (silent
//! connections re-opened as `auth_timeout` closes them, or failed logins waiting out their
//! delay) and lock the operators out of the listener for as long as it kept going.
//!
//! Hand-written (about a hundred lines): rate limiters such as `governor` admit or refuse
//! requests rather than count failures, and their keyed stores grow until pruned; the policy
//! here (free attempts, a doubling delay, an overflow record, held-back log counts) is all
//! there is. Time is the injected clock's monotonic time, so tests move it without sleeping.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admin_tokens::AuthFailure;
use crate::clock::Clock;

/// Failures an address may make before its answers are delayed.
pub const FREE_FAILURES: u32 = 3;
/// The delay of the first failure past the free ones; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_millis(125);
/// The longest a refusal is delayed.
pub const MAX_DELAY: Duration = Duration::from_secs(4);
/// An address that has not failed for this long starts again from zero.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// At most one warning per address per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// Addresses remembered on their own.
pub const MAX_CLIENTS: usize = 4096;

/// The most connections one client may hold open on the HTTPS listener: a quarter of the
/// listener's cap (at least one), so one address cannot fill it.
pub fn per_client_cap(max_connections: usize) -> usize {
    (max_connections / 4).max(1)
}

/// Open HTTPS connections per client; an entry exists only while its client has one open,
/// so the table is never larger than the listener's connection cap.
pub struct ClientConnections {
    cap: usize,
    // Std mutex: one update when a connection opens and one when it closes.
    open: Mutex<HashMap<Client, usize>>,
}

/// One open connection counted against its client; dropping it gives the slot back.
pub struct ClientSlot {
    table: Arc<ClientConnections>,
    client: Client,
}

impl ClientConnections {
    pub fn new(cap: usize) -> Arc<ClientConnections> {
        Arc::new(ClientConnections {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when its client holds its cap already.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let client = Client::of(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: Arc::clone(self),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

pub struct FailedLogins {
    clock: Arc<dyn Clock>,
    max_clients: usize,
    // Std mutex: one map update per failed login, never held across `.await`.
    table: Mutex<Table>,
}

/// What to do about one failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The address's failures so far, this one included.
    pub failures: u32,
    /// How long to wait before answering.
    pub delay: Duration,
    /// `Some(n)`: write a warning now, saying `n` failures were held back since the last.
    pub log: Option<u64>,
    /// The address is counted in the shared overflow record (the table was full).
    pub shared: bool,
}

#[derive(Default)]
struct Table {
    by_client: HashMap<Client, Record>,
    overflow: Record,
}

/// Whom failures are counted against: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Client {
    V4(Ipv4Addr),
    V6Net(u64),
}

#[derive(Clone, Copy, Debug, Default)]
struct Record {
    failures: u32,
    /// Monotonic time of the latest failure.
    last_failure: Duration,
    /// When the latest warning for this record was written.
    logged_at: Option<Duration>,
    /// Failures since that warning that wrote no line of their own.
    held_back: u64,
}

impl FailedLogins {
    pub fn new(clock: Arc<dyn Clock>) -> FailedLogins {
        Self::with_capacity(clock, MAX_CLIENTS)
    }

    fn with_capacity(clock: Arc<dyn Clock>, max_clients: usize) -> FailedLogins {
        FailedLogins {
            clock,
            max_clients,
            table: Mutex::new(Table::default()),
        }
    }

    /// Counts a failed authentication from `client`, writes the warning when one is due,
    /// and returns how long to wait before answering.
    pub fn failed(&self, client: SocketAddr, reason: AuthFailure) -> Duration {
        let verdict = self.judge(client.ip());
        if let Some(held_back) = verdict.log {
            tracing::warn!(
                %client,
                reason = reason.as_str(),
                failures = verdict.failures,
                delay_ms = u64::try_from(verdict.delay.as_millis()).unwrap_or(u64::MAX),
                held_back,
                shared = verdict.shared,
                "admin authentication failed"
            );
        }
        verdict.delay
    }

    /// Counts a failure from `ip` and decides its delay and warning.
    pub fn judge(&self, ip: IpAddr) -> Verdict {
        let now = self.clock.monotonic();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let (record, shared) = table.record_for(Client::of(ip), now, self.max_clients);
        if now.saturating_sub(record.last_failure) >= FORGET_AFTER {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        let log = match record.logged_at {
            Some(at) if now.saturating_sub(at) < LOG_EVERY => {
                record.held_back += 1;
                None
            }
            _ => {
                record.logged_at = Some(now);
                Some(std::mem::take(&mut record.held_back))
            }
        };
        Verdict {
            failures: record.failures,
            delay: delay_after(record.failures),
            log,
            shared,
        }
    }
}

impl Table {
    /// The record `client` is counted in: its own, or the overflow record when the table is
    /// full even after forgetting idle records.
    fn record_for(
        &mut self,
        client: Client,
        now: Duration,
        max_clients: usize,
    ) -> (&mut Record, bool) {
        let known = self.by_client.contains_key(&client);
        if !known && self.by_client.len() >= max_clients {
            self.by_client
                .retain(|_, record| now.saturating_sub(record.last_failure) < FORGET_AFTER);
        }
        if known || self.by_client.len() < max_clients {
            (self.by_client.entry(client).or_default(), false)
        } else {
            (&mut self.overflow, true)
        }
    }
}

impl Client {
    fn of(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Client::V4(v4),
            IpAddr::V6(v6) => Client::V6Net(u64::try_from(u128::from(v6) >> 64).unwrap_or(0)),
        }
    }
}

/// No delay for the free failures, then [`FIRST_DELAY`] doubling up to [`MAX_DELAY`].
fn delay_after(failures: u32) -> Duration {
    let Some(past_free) = failures.checked_sub(FREE_FAILURES + 1) else {
        return Duration::ZERO;
    };
    FIRST_DELAY
        .saturating_mul(1u32 << past_free.min(16))
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use jiff::SignedDuration;

    fn guard(max_clients: usize) -> (FailedLogins, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(
            "2026-01-01T00:00:00Z".parse().expect("timestamp"),
        ));
        let guard = FailedLogins::with_capacity(Arc::clone(&clock) as Arc<dyn Clock>, max_clients);
        (guard, clock)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn advance(clock: &ManualClock, by: Duration) {
        clock.advance(SignedDuration::try_from(by).expect("duration"));
    }

    #[test]
    fn one_client_holds_at_most_its_share_of_the_connections() {
        assert_eq!(per_client_cap(64), 16);
        assert_eq!(per_client_cap(2), 1);
        let table = ClientConnections::new(2);
        let first = table.try_open(ip("192.0.2.1")).expect("first");
        let second = table.try_open(ip("192.0.2.1")).expect("second");
        assert!(
            table.try_open(ip("192.0.2.1")).is_none(),
            "beyond its share"
        );
        let _v6 = table
            .try_open(ip("2001:db8:1:2::1"))
            .expect("another client has its own");
        let _v6_too = table.try_open(ip("2001:db8:1:2::2")).expect("same /64");
        assert!(
            table.try_open(ip("2001:db8:1:2::3")).is_none(),
            "the /64's share"
        );
        drop(first);
        let again = table
            .try_open(ip("192.0.2.1"))
            .expect("a closed one gives it back");
        drop((second, again));
        let open = table.open.lock().expect("lock");
        assert_eq!(open.len(), 1, "clients with nothing open are forgotten");
    }

    #[test]
    fn the_first_failures_are_free_then_the_delay_doubles_to_its_cap() {
        let (guard, _) = guard(16);
        let delays: Vec<u64> = (0..12)
            .map(|_| u64::try_from(guard.judge(ip("192.0.2.1")).delay.as_millis()).expect("ms"))
            .collect();
        assert_eq!(
            delays,
            [0, 0, 0, 125, 250, 500, 1000, 2000, 4000, 4000, 4000, 4000]
        );
        assert_eq!(
            guard.judge(ip("192.0.2.2")).delay,
            Duration::ZERO,
            "per address"
        );
    }

    #[test]
    fn one_warning_per_address_per_window_with_the_count_held_back() {
        let (guard, clock) = guard(16);
        let logs =
            |n| -> Vec<Option<u64>> { (0..n).map(|_| guard.judge(ip("192.0.2.1")).log).collect() };
        assert_eq!(logs(5), [Some(0), None, None, None, None]);
        assert_eq!(
            guard.judge(ip("192.0.2.9")).log,
            Some(0),
            "another address logs"
        );
        advance(&clock, LOG_EVERY);
        assert_eq!(logs(2), [Some(4), None]);
    }

    #[test]
    fn an_address_quiet_for_a_while_starts_again() {
        let (guard, clock) = guard(16);
        for _ in 0..10 {
            guard.judge(ip("192.0.2.1"));
        }
        advance(&clock, FORGET_AFTER - Duration::from_secs(1));
        assert_eq!(
            guard.judge(ip("192.0.2.1")).failures,
            11,
            "not yet forgotten"
        );
        advance(&clock, FORGET_AFTER);
        let verdict = guard.judge(ip("192.0.2.1"));
        assert_eq!((verdict.failures, verdict.delay), (1, Duration::ZERO));
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let (guard, _) = guard(16);
        guard.judge(ip("2001:db8:1:2::1"));
        assert_eq!(
            guard.judge(ip("2001:db8:1:2:ffff::9")).failures,
            2,
            "same /64"
        );
        assert_eq!(
            guard.judge(ip("2001:db8:1:3::1")).failures,
            1,
            "another /64"
        );
        guard.judge(ip("192.0.2.1"));
        assert_eq!(guard.judge(ip("::ffff:192.0.2.1")).failures, 2);
    }

    #[test]
    fn a_flood_of_new_addresses_shares_one_record_and_idle_ones_make_room() {
        let (guard, clock) = guard(4);
        for i in 0..4 {
            assert!(!guard.judge(ip(&format!("192.0.2.{i}"))).shared);
        }
        let flood: Vec<Verdict> = (10..20)
            .map(|i| guard.judge(ip(&format!("198.51.100.{i}"))))
            .collect();
        assert!(flood.iter().all(|v| v.shared), "the table did not grow");
        assert_eq!(
            flood[9].failures, 10,
            "counted together, so slowed together"
        );
        assert_eq!(flood[9].delay, MAX_DELAY);
        assert_eq!(
            guard.judge(ip("192.0.2.0")).failures,
            2,
            "a known address keeps its own record"
        );

        advance(&clock, FORGET_AFTER);
        let verdict = guard.judge(ip("203.0.113.1"));
        assert!(!verdict.shared, "idle records were forgotten to make room");
        assert_eq!(verdict.failures, 1);
    }
}
