//! Test-suite package: holds the cross-crate end-to-end tests in `tests/`, the criterion
//! benchmarks in `benches/`, and the in-memory media network they share ([`netsim`]).

pub mod fuzz_harness;
pub mod netsim;
pub mod pair;
