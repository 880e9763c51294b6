//! Shared by the integration tests and the demo: network namespace topologies, the real `edge`
//! binary running inside them, real DNS clients, and the benchmarks' parts.

pub mod bench;
pub mod dig;
pub mod edge;
pub mod topology;
