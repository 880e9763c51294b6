//! The userspace query handler on arbitrary bytes: it must never panic, and whatever it sends
//! must parse as a response to the query's ID, fit the transport, and hold the question as
//! received.
#![no_main]

use std::{path::Path, sync::LazyLock};

use edge_config::Config;
use edge_dns::{
    Transport, message::CLASSIC_UDP_PAYLOAD, message::MAX_UDP_PAYLOAD, respond, zone::Zones,
};
use hickory_proto::{
    op::{Message, MessageType},
    serialize::binary::BinEncodable as _,
};
use libfuzzer_sys::fuzz_target;

/// Every kind of name the server answers: addresses, aliases, a delegation with glue, MX, TXT
/// (one too big for a classic UDP response) and a steered name.
const CONFIG: &str = r#"
[xdp]
interface = "eth0"
[[pools]]
name = "origins"
kind = "origin"
[[pools.members]]
name = "a"
address = "192.0.2.101"
[[pools.members]]
name = "b"
address = "2001:db8::101"
[[zones]]
apex = "example.com"
[[zones.nameservers]]
name = "ns1"
addresses = ["192.0.2.53", "2001:db8::53"]
[[zones.nameservers]]
name = "ns2.example.net."
[[zones.names]]
name = "@"
mx = [{ preference = 10, exchange = "mail" }]
txt = ["v=spf1 -all"]
[[zones.names]]
name = "www"
a = ["192.0.2.10", "192.0.2.11"]
aaaa = ["2001:db8::10"]
[[zones.names]]
name = "alias"
cname = "www"
[[zones.names]]
name = "out"
cname = "www.example.org."
[[zones.names]]
name = "shop"
pool = "origins"
[[zones.names]]
name = "sub"
ns = ["ns.sub", "ns.example.net."]
[[zones.names]]
name = "ns.sub"
a = ["192.0.2.54"]
[[zones.names]]
name = "mail"
a = ["192.0.2.25"]
[[zones.names]]
name = "big"
txt = ["0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789", "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789", "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"]
[[zones]]
apex = "example.net"
[[zones.names]]
name = "www"
cname = "www.example.com."
"#;

static ZONES: LazyLock<Zones> = LazyLock::new(|| {
    let path = Path::new("fuzz.toml");
    Zones::build(path, &Config::parse(path, CONFIG).unwrap()).unwrap()
});

fuzz_target!(|data: &[u8]| {
    for transport in [Transport::Udp, Transport::Tcp] {
        let Some(response) = respond(&ZONES, data, transport) else {
            continue;
        };
        let message = Message::from_vec(&response).expect("our response parses");
        assert_eq!(message.message_type, MessageType::Response);
        assert_eq!(&response[..2], &data[..2], "same ID");
        assert!(!message.recursion_available);
        if transport == Transport::Udp {
            let limit = if message.edns.is_some() {
                MAX_UDP_PAYLOAD
            } else {
                CLASSIC_UDP_PAYLOAD
            };
            assert!(
                response.len() <= usize::from(limit),
                "{} bytes over UDP",
                response.len()
            );
        }
        if let [question] = &message.queries[..] {
            let len = question.name().to_bytes().expect("a name").len() + 4;
            assert_eq!(
                &response[12..12 + len],
                &data[12..12 + len],
                "question echoed"
            );
        }
    }
});
