//! The audit log's records as both backends take them: who changed what, when. Each backend
//! writes an audit row in the transaction of the change it records.

use jiff::Timestamp;

/// An audit row about to be written.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    pub at: Timestamp,
    pub actor: String,
    pub action: &'static str,
    pub key_id: Option<String>,
    pub details: serde_json::Value,
}

/// A page of the audit log, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub key_id: Option<String>,
    /// Only entries with an id below this one.
    pub before_id: Option<i64>,
    pub limit: usize,
}
