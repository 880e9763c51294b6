//! The parts of `cargo xtask bench`: the generated zone and query set, the peer servers, the
//! load generators and who runs on which core. `tests/examples/bench_dns.rs` and
//! `tests/examples/bench_http.rs` put them together. Benchmarks print and record numbers;
//! nothing here asserts a timing.

pub mod cpus;
pub mod load;
pub mod peers;
pub mod report;
pub mod web;
pub mod wrk;
pub mod zone;
