//! The contract between `gatewayd` and `gwctl`.
//!
//! Everything both programs must agree on lives here and nowhere else: the proxy key format
//! (SPEC §1), the lifecycle state function (§2), the error codes and their one JSON shape
//! (§3, §6), the management API's wire types and the validation that names the offending
//! field. **Invariant:** this crate does no I/O beyond the OS random source and knows nothing
//! of tokio, hyper, SQLite or terminals, so its rules can be tested as pure functions.

pub mod api;
pub mod error;
pub mod key;
pub mod money;
pub mod paths;
pub mod period;
pub mod provider;
pub mod state;
pub mod validate;

pub use error::{ErrorBody, ErrorCode};
pub use key::{KeyHash, ProxyKey};
pub use money::Nanodollars;
pub use period::SpendReset;
pub use provider::Provider;
pub use state::KeyState;
