//! The zone-file loader on arbitrary text: it must never panic, and a zone it accepts must
//! answer every one of its names without panicking.
#![no_main]

use std::path::Path;

use edge_dns::{authority::lookup, zone::Zones, zone_file};
use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &[u8]| {
    let apex = Name::from_ascii("example.com.").unwrap();
    // `$INCLUDE`s resolve below a directory that does not exist: the input is the whole zone.
    let Ok(zone) = zone_file::parse(Path::new("/nonexistent/fuzz.zone"), text, &apex) else {
        return;
    };
    let names: Vec<Name> = zone.names.keys().cloned().collect();
    let zones = Zones {
        zones: vec![zone],
        ..Zones::default()
    };
    for name in names {
        for qtype in [
            RecordType::A,
            RecordType::CNAME,
            RecordType::ANY,
            RecordType::MX,
        ] {
            lookup(&zones, &name, qtype);
        }
    }
});
