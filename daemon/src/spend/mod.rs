//! Spend: what a request costs (prices), what a key may still spend (ledger), the
//! reservation that makes the cap hard under concurrency (SPEC §5), and the open holds the
//! usage writer journals so that a crash cannot forget them (holds).

pub mod holds;
pub mod ledger;
pub mod price;
pub mod state;
