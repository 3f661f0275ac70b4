//! The end-to-end harness: actors that start the real `gatewayd`, talk to its management
//! API over the Unix socket, and run the real `gwctl`.
//!
//! Tests build their world from these (`Gateway::start()`, `gateway.admin()`,
//! `gateway.gwctl(..)`) so that a change of wire format or flag touches one file here, not a
//! hundred tests. No fixed ports and no sleeps: readiness is the daemon's `ready` log line.

pub mod admin;
pub mod binaries;
pub mod gateway;
pub mod gwctl;
pub mod in_process;
pub mod mock;

pub use admin::{Admin, ApiResponse};
pub use gateway::{Gateway, GatewayOptions};
pub use gwctl::GwctlOutput;
pub use mock::MockProvider;
