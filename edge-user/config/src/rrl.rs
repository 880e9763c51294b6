//! The `[xdp.rrl]` table: response rate limiting in the XDP program, per source prefix (/24,
//! /56), as Knot DNS and NSD have it.
//!
//! Under `[xdp]`, not `[dns]`: the XDP program enforces it, on every UDP query to a service
//! address before either server sees it (the queries it passes to the userspace server count
//! too), and its table is a map sized at load like the other `[xdp]` sizes. A DNS server
//! without `[xdp]` has no RRL, and the config cannot say otherwise.

use std::{fmt, net::IpAddr, str::FromStr};

use edge_common::rrl::EXEMPT_MAX;
use serde::Deserialize;

/// Default slip: every second limited query gets a truncated reply, as Knot's `slip` and NSD's
/// `rrl-slip` default.
pub const DEFAULT_SLIP: u32 = 2;
/// Default source prefixes tracked at once.
pub const DEFAULT_TABLE_SIZE: u32 = 65_536;
/// Highest rate: its interval, 1 µs, is still far above the clock's resolution.
pub const MAX_RATE: u32 = 1_000_000;
/// Largest burst, so that a prefix's schedule never runs more than a few hours ahead.
pub const MAX_BURST: u32 = 1_000_000;
/// Knot's upper bound for `slip`.
pub const MAX_SLIP: u32 = 100;
pub const MAX_TABLE_SIZE: u32 = 16_777_216;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrlConfig {
    /// Replies per second one source prefix gets once its burst is spent.
    pub rate: u32,
    /// Replies a prefix may get at once, after a quiet spell; unset: `rate` (a second's worth).
    pub burst: Option<u32>,
    /// Every `slip`-th limited query of a prefix gets a truncated reply (TC set) instead of
    /// none; 0: none does.
    #[serde(default = "default_slip")]
    pub slip: u32,
    /// Source prefixes tracked at once; beyond that the least recently seen is forgotten.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Prefixes never limited (monitoring, resolvers one trusts): `192.0.2.0/24`,
    /// `2001:db8::/32`, or an address alone.
    #[serde(default)]
    pub exempt: Vec<Prefix>,
}

fn default_slip() -> u32 {
    DEFAULT_SLIP
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

impl RrlConfig {
    /// The burst in effect.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate)
    }

    /// The first field out of range and why, as (field under `xdp.rrl`, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_RATE).contains(&self.rate) {
            return Err(("rate", format!("must be from 1 to {MAX_RATE} per second")));
        }
        if !(1..=MAX_BURST).contains(&self.burst()) {
            return Err(("burst", format!("must be from 1 to {MAX_BURST}")));
        }
        if self.slip > MAX_SLIP {
            return Err(("slip", format!("must be from 0 to {MAX_SLIP}")));
        }
        if !(1..=MAX_TABLE_SIZE).contains(&self.table_size) {
            return Err(("table_size", format!("must be from 1 to {MAX_TABLE_SIZE}")));
        }
        if self.exempt.len() > EXEMPT_MAX as usize {
            return Err((
                "exempt",
                format!(
                    "{} prefixes; the program holds {EXEMPT_MAX}",
                    self.exempt.len()
                ),
            ));
        }
        Ok(())
    }
}

/// An address prefix: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: not an address or prefix like 192.0.2.0/24"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => bits,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        let prefix = Prefix { addr, len };
        if prefix.network() != addr {
            return Err(format!(
                "{text:?}: bits set past the prefix length; the prefix is {}",
                Prefix {
                    addr: prefix.network(),
                    len
                }
            ));
        }
        Ok(prefix)
    }
}

impl TryFrom<String> for Prefix {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl Prefix {
    /// The address with the bits past the prefix cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(addr) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4((u32::from(addr) & mask).into())
            }
            IpAddr::V6(addr) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(addr) & mask).into())
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_bad_ones_say_why() {
        let prefix: Prefix = "192.0.2.0/24".parse().unwrap();
        assert_eq!(
            (prefix.addr, prefix.len),
            ("192.0.2.0".parse().unwrap(), 24)
        );
        let prefix: Prefix = "2001:db8::1".parse().unwrap();
        assert_eq!(prefix.len, 128);
        let prefix: Prefix = "0.0.0.0/0".parse().unwrap();
        assert_eq!(prefix.len, 0);
        let error = "192.0.2.7/24".parse::<Prefix>().unwrap_err();
        assert!(error.contains("the prefix is 192.0.2.0/24"), "{error}");
        let error = "2001:db8::/129".parse::<Prefix>().unwrap_err();
        assert!(error.contains("0 to 128"), "{error}");
        let error = "example.org/24".parse::<Prefix>().unwrap_err();
        assert!(error.contains("not an address"), "{error}");
    }
}
