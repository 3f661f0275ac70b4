//! Spend: what a request costs (prices), what a key may still spend (ledger), and the
//! reservation that makes the cap hard under concurrency (SPEC §5).

pub mod ledger;
pub mod price;
