//! gwctl end to end (SPEC §7). Filled in once gwctl lands.
