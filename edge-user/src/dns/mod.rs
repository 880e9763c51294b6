//! DNS: the answer bytes (one builder for the XDP maps and the userspace server) and the fast
//! path's view of the zones.

pub mod answer;
pub mod fast_path;
