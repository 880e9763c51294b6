//! Shared by the integration tests and the demo: network namespace topologies, the real `edge`
//! binary running inside them, and real DNS clients.

pub mod dig;
pub mod edge;
pub mod topology;
pub mod xdp;
