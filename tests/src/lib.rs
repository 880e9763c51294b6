//! Shared by the integration tests and the demo: network namespace topologies, the real `edge`
//! binary running inside them, real DNS and HTTP clients, a real HTTP origin and one that records
//! the raw bytes it receives, and the benchmarks' parts; the test zone they share, the XDP
//! program's cases as data, and the lock that runs timing-sensitive tests one at a time.

pub mod agent;
pub mod bench;
pub mod certs;
pub mod curl;
pub mod dig;
pub mod edge;
pub mod ftp;
pub mod interrupt;
pub mod mesh;
pub mod origin;
pub mod pop;
pub mod raw_origin;
pub mod resolver;
pub mod serial;
pub mod test_zone;
pub mod topology;
pub mod update;
pub mod xdp;
pub mod xdp_cases;
