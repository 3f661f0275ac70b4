//! Proxy keys inside the daemon: the record type, the in-memory table the proxy reads, and
//! the service that changes keys (validate → commit with an audit row → update the table).

pub mod cache;
pub mod policy;
pub mod record;
pub mod service;
pub mod stamp;
pub mod sync;

pub use cache::{KeyCache, KeyEntry};
pub use record::KeyRecord;
pub use service::{Actor, KeyService};
