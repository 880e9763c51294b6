//! edge: the PoP daemon and its command line ([`cli`]), the one admin server ([`admin`]), its
//! Prometheus metrics ([`metrics`]) and status page ([`status_page`], with the last hour kept by
//! [`history`] and drawn by [`plot`]); what systemd is told ([`service`]); dynamic updates
//! applied one at a time ([`updates`]).
//!
//! The top of the crate graph: it wires the crates below (config, DNS, steering, HTTP cache, data
//! plane) together: the selections edge-steer publishes go to edge-dns's zones, and from there to
//! the userspace server and, through edge-dataplane, to the maps; edge-http follows the same
//! selections. It owns the daemon loop (signals, reload) and the admin address, and nothing the
//! crates below own: no answer bytes, no cache policy, no map layout.

pub mod admin;
pub mod cli;
pub mod history;
pub mod listeners;
pub mod metrics;
pub mod plot;
pub mod service;
pub mod status_page;
pub mod updates;
