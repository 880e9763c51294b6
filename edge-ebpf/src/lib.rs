#![no_std]
// Empty: the library target only exists so that edge-dataplane can name this crate as a build
// dependency (for cache invalidation); the program is the `edge-xdp` binary.
