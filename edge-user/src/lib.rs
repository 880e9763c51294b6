//! The edge daemon as a library: the binary (`edge`) is a thin CLI over these modules, and the
//! integration tests drive the same code.
//!
//! Data flows one way: [`config`] → [`zone`] → [`dns`] (answer bytes) → [`maps`] → kernel.
//! [`probe`] → [`health`] and [`steer`] (selections) rewrite the steered names' answers.
//! [`http`] serves static content from [`cache`], filled from the sites' origins.

pub mod agent;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod dns;
pub mod health;
pub mod http;
pub mod maps;
pub mod probe;
pub mod publish;
pub mod steer;
pub mod zone;

/// The XDP program (edge-ebpf), compiled by the build script and embedded so that the binary is
/// self-contained.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge-xdp"));
