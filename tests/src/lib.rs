//! The end-to-end harness: actors that start the real `gatewayd`, talk to its management
//! API over the Unix socket, and run the real `gwctl`.
//!
//! Tests build their world from these (`Gateway::start()`, `gateway.admin()`,
//! `gateway.gwctl(..)`) so that a change of wire format or flag touches one file here, not a
//! hundred tests. No fixed ports and no sleeps: readiness is the daemon's `ready` log line.

pub mod admin;
pub mod backends;
pub mod binaries;
pub mod cluster;
pub mod gateway;
pub mod gwctl;
pub mod https;
pub mod in_process;
pub mod mock;
pub mod requests;

pub use admin::{Admin, ApiResponse};
pub use backends::{
    PgDatabase, PrivatePostgres, PrivateRedis, RedisPrefix, shared_postgres_database,
    shared_redis_prefix,
};
pub use cluster::Cluster;
pub use gateway::{Gateway, GatewayOptions};
pub use gwctl::GwctlOutput;
pub use mock::MockProvider;

/// Installs `ring` as the process's rustls provider (reqwest is built without one, so that
/// the workspace has a single provider). Called by every actor that starts; idempotent.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
