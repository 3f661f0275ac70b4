//! The one end-to-end test binary: real `gatewayd` and `gwctl` processes.
//!
//! Modules:
//! - `backends`: the test PostgreSQL and Redis: shared databases and key prefixes, private
//!   servers stopped, killed and started again.
//! - `cluster_limits`: limits across three replicas on one Redis (issue #17): exactly N per
//!   rolling minute, edits and revocations enforced by the next request anywhere, new keys
//!   usable at once, self-service alike on every replica (numbers, state and totals), the
//!   cluster's own Redis prefix.
//! - `cluster_limits_spend`: one spend cap for streams spread over replicas: never passed,
//!   clamped on another replica, runaway streams cut with the provider's error event.
//! - `cluster_limits_crash`: `kill -9` of a replica with open requests: their holds charged
//!   after the lease by a live replica, nothing left held, every view agreeing.
//! - `cluster_limits_redis`: Redis stopped (limited keys 503, the rest served, health and
//!   metrics say so), back empty, or flushed: caps rebuilt from PostgreSQL.
//! - `cluster_limits_rolling`: a rolling restart under load: no failed request, one record
//!   per answer.
//! - `cluster_config`: `[cluster]` settings refused at start-up, naming their line, with no
//!   password from the URLs in stderr (SPEC §9).
//! - `clock`: expiry and reset instants with an injected clock (in-process daemon).
//! - `cluster`: replicas on one PostgreSQL store: changes reach every replica (lag printed),
//!   audit shows the whole cluster, replicas started together migrate once (SPEC §9).
//! - `crash`: after `kill -9`, requests in flight are charged their holds and answered ones
//!   are on disk; a graceful stop leaves no hold to charge.
//! - `keys`: the management API's key lifecycle and errors over the Unix socket (SPEC §1, §6).
//! - `persistence`: restarts keep keys, states and audit rows; secrets never touch the disk.
//! - `providers`: configured providers (SPEC §10): OpenAI-, Anthropic-compatible, Azure.
//! - `proxy`: the data plane's checks and forwarding (SPEC §3).
//! - `rate`: the exact rolling window, its headers, Retry-After; self-service (SPEC §4, §5).
//! - `sdk`: the official Python and Node SDKs through the gateway, unchanged but for base URL and key.
//! - `shutdown`: SIGTERM drains open streams and refuses new requests.
//! - `streaming`: byte-exact, unbuffered streams; idle timeout, not a total deadline.
//! - `spend`: hard caps, clamping, per-provider costs, settlement on every ending (SPEC §5).
//! - `metering`: usage rows for hard endings: trailers, compressed bodies, `stream_options:
//!   null`, requests the provider got but never answered (SPEC §5).
//! - `startup`: config errors, the socket's mode, a live or stale socket (SPEC §8).
//! - `edge`: header-read timeout and connection cap on the proxy listener.
//! - `hardening`: bodies at any depth, keys where they do not belong, control characters,
//!   over-reported usage, and spend = settled usage + open holds whatever fails where.
//! - `hardening_review`: what the review of that hardening found: members given twice, keys
//!   in forwarded headers.
//! - `gwctl`: the CLI end to end (SPEC §7).
//! - `cluster_surface`: secrets written in the wrong setting never echoed; key views across
//!   replicas (review of issue #16).
//! - `cluster_restore`: the shared store restored from a backup under running replicas: every
//!   replica serves the restored keys, not the history it had followed (issue #16).
//! - `cluster_status`: `gwctl cluster status` and `GET /v1/cluster`: this replica, its id kept
//!   across restarts, the requests it served (SPEC §9, issue #16).
//! - `migrate_store`: `gatewayd migrate-store` copies a stopped server's keys, rotations,
//!   admin tokens, audit and usage into an empty PostgreSQL store; refused while the daemon
//!   runs or into a store that is not empty; never prints the database password (issue #16).
//! - `gwctl_store`: gwctl against what a store holds: control characters escaped, never sent
//!   raw to the terminal; 100k keys listed in flat memory (issue #20).
//! - `tui`: `gwctl tui` in a real pseudo-terminal (tmux): list, create, revoke, quit, by key
//!   and by mouse click; a stored control character shown escaped (issue #20).
//! - `admin_plane`: the management plane under attack: connection floods against the
//!   open-files limit, settings that let others in, failed admin logins (issue #20).
//! - `https`: admin tokens, the HTTPS listener, certificate reload, rotation, metrics.
//! - `remote`: gwctl over HTTPS (`--url --token-file --ca-cert`, env, profiles), admin tokens
//!   on the socket only, and clear exit codes for a bad token, certificate or address.
//! - `install`: install.sh into a temporary prefix, twice.
//! - `operator`: `gatewayd --check-config` (every error with its line, nothing bound), gwctl's
//!   bash completions, the manual pages install.sh installs rendered by `man`, and install.sh
//!   stopping on an invalid kept config before changing anything (issue #18).
//! - `systemd`: the daemon in its systemd unit's environment: user, runtime directory,
//!   readiness notification, gwctl finding the socket.
//! - `tidy`: source-tree rules (module docs, no stray prints).

mod admin_plane;
mod backends;
mod clock;
mod cluster;
mod cluster_config;
mod cluster_limits;
mod cluster_limits_crash;
mod cluster_limits_redis;
mod cluster_limits_rolling;
mod cluster_limits_spend;
mod cluster_readme;
mod cluster_restore;
mod cluster_status;
mod cluster_surface;
mod crash;
mod edge;
mod gwctl;
mod gwctl_store;
mod hardening;
mod hardening_review;
mod https;
mod install;
mod keys;
mod metering;
mod migrate_store;
mod operator;
mod persistence;
mod providers;
mod proxy;
mod proxy_key_rules;
mod rate;
mod remote;
mod sdk;
mod shutdown;
mod spend;
mod spend_periods;
mod spend_settlement;
mod startup;
mod streaming;
mod systemd;
mod tidy;
mod tui;
