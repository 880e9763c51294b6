//! DNS: what to answer ([`authority`]), the bytes of the answer ([`message`], [`answer`]: one
//! builder for the XDP maps and the userspace server), the fast path's view of the zones, and the
//! userspace server with the limits on its TCP clients ([`connections`]).

pub mod answer;
pub mod authority;
pub mod connections;
pub mod fast_path;
pub mod message;
pub mod server;

pub use message::{Transport, respond};
