//! Test-suite package: holds the cross-crate end-to-end tests in `tests/` and the
//! criterion benchmarks in `benches/`. It has no code of its own.
