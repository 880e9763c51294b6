//! The test zone: one `example.com`, with a name of every kind the DNS tests ask about, shared
//! by the XDP program's cases, the namespace tests and the examples. A test writes its own
//! `[xdp]` and `[dns]` tables, then [`ZONE`]; a test that needs a variation derives it from this
//! text (a replaced record, names appended to the zone) instead of keeping a copy of its own.

/// The names under `example.com`, apart from the longest one, which [`longest_name`] gives.
///
/// - `@`: A 192.0.2.1, MX 10 `mail`, TXT `v=spf1 -all`; the default TTL (300) and SOA timers
///   3600/600/86400/60; name servers `ns1` (in zone, with glue) and `ns2.example.net.`.
/// - `www`: TTL 60, A 192.0.2.10 and 192.0.2.11, AAAA 2001:db8::10.
/// - `alias` → `www` and `chain` → `alias`: CNAMEs.
/// - `shop`: TTL 20, steered over the pool `shop-origins` (192.0.2.101, 2001:db8::101,
///   192.0.2.102, in that order).
/// - `sub`: delegated to `ns.sub` (A 192.0.2.54).
/// - `mail`: A 192.0.2.25, no AAAA.
/// - `big`: three TXT strings of about 200 octets: more than 512 octets, less than 1232.
/// - the longest name: TTL 5, A 192.0.2.12.
///
/// The zone's names come last, so a test may append `[[zones.names]]` tables to it.
pub fn zone() -> String {
    format!(
        r#"
[[pools]]
name = "shop-origins"
kind = "origin"
[[pools.members]]
name = "o1"
address = "192.0.2.101"
[[pools.members]]
name = "o2"
address = "2001:db8::101"
[[pools.members]]
name = "o3"
address = "192.0.2.102"

[[zones]]
apex = "example.com"
[zones.soa]
refresh = 3600
retry = 600
expire = 86400
minimum = 60
[[zones.nameservers]]
name = "ns1"
addresses = ["192.0.2.53", "2001:db8::53"]
[[zones.nameservers]]
name = "ns2.example.net."

[[zones.names]]
name = "@"
a = ["192.0.2.1"]
mx = [{{ preference = 10, exchange = "mail" }}]
txt = ["{SPF}"]
[[zones.names]]
name = "www"
ttl = 60
{WWW_A}
aaaa = ["2001:db8::10"]
[[zones.names]]
name = "alias"
cname = "www"
[[zones.names]]
name = "chain"
cname = "alias"
[[zones.names]]
name = "shop"
ttl = 20
pool = "shop-origins"
[[zones.names]]
name = "sub"
ns = ["ns.sub"]
[[zones.names]]
name = "ns.sub"
a = ["192.0.2.54"]
[[zones.names]]
name = "mail"
a = ["192.0.2.25"]
[[zones.names]]
name = "big"
txt = ["{a}", "{b}", "{c}"]
[[zones.names]]
name = "{longest}"
ttl = 5
a = ["192.0.2.12"]
"#,
        a = "a".repeat(203),
        b = "b".repeat(203),
        c = "c".repeat(204),
        longest = longest_name(),
    )
}

/// The apex TXT record's text, for a test that changes it.
pub const SPF: &str = "v=spf1 -all";

/// `www`'s A records as the zone writes them, for a test that replaces them.
pub const WWW_A: &str = r#"a = ["192.0.2.10", "192.0.2.11"]"#;

/// A 255-octet name (the RFC 1035 maximum) in the zone.
pub fn longest_name() -> String {
    format!(
        "{}.{}.{}.{}.example.com.",
        "a".repeat(63),
        "a".repeat(63),
        "a".repeat(63),
        "b".repeat(49)
    )
}

#[cfg(test)]
mod tests {
    use super::{SPF, WWW_A, longest_name, zone};
    use crate::xdp::wire;

    #[test]
    fn the_longest_name_is_the_longest_a_name_may_be() {
        assert_eq!(wire(&longest_name()).len(), 255);
    }

    /// Tests derive variations by replacing these texts: each must stand in the zone once.
    #[test]
    fn the_replaceable_texts_stand_once() {
        let zone = zone();
        assert_eq!(zone.matches(SPF).count(), 1);
        assert_eq!(zone.matches(WWW_A).count(), 1);
    }
}
