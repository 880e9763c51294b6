//! edge-dns: the zones ([`zone`], from TOML or RFC 1035 files: [`zone_file`]), what to answer ([`authority`]), the bytes of the answer
//! ([`message`], [`answer`]: one builder for the XDP maps and the userspace server), the fast
//! path's view of the zones ([`fast_path`]), the userspace server ([`server`]) with the
//! limits on its TCP clients ([`connections`]), how the server names itself ([`identity`]), and
//! dynamic updates (RFC 2136): who may send them ([`tsig`]), what they change ([`update`]), how
//! the server takes them ([`updates`]) and what keeps them across restarts ([`journal`]).
//!
//! Owns every DNS byte edge sends. Reads edge-config's zone schema and edge-steer's
//! [`Selections`](edge_steer::Selections) (the steered names' addresses); must not touch the
//! XDP maps (edge-dataplane writes the [`fast_path`] entries built here), HTTP, or probing.

pub mod answer;
pub mod authority;
pub mod connections;
pub mod fast_path;
pub mod identity;
pub mod journal;
pub mod message;
pub mod server;
pub mod tsig;
pub mod update;
pub mod updates;
pub mod zone;
pub mod zone_file;

pub use message::{Transport, respond};
