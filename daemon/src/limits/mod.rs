//! Per-key request limits enforced on the request path (SPEC §4).

pub mod rate;
