//! edge's answers against a real Knot DNS (started by the test in a namespace of its own) on one
//! zone file with every feature edge serves, loaded by both. A generated query matrix (names and
//! types, letter case, EDNS off/on/DO/NSID/EXPIRE/cookie/bad options/versions/payload sizes, UDP
//! and TCP, opcodes, classes, malformed messages) goes to Knot over the wire and to edge's
//! answer function (`edge_dns::respond`, what the userspace server sends). Replies are compared byte
//! for byte, then field by field; every difference must fall under one of [`EXCEPTIONS`], each
//! justified by an RFC, and the count of each is printed.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use edge_config::Config;
use edge_dns::{
    message::{Transport, respond},
    zone::Zones,
};
use edge_tests::{bench::peers::Daemon, topology::Lan};
use hickory_proto::op::Message;

const ZONE: &str = r#"$ORIGIN example.com.
$TTL 300
@ SOA ns1.example.com. hostmaster.example.com. ( 7 3600 600
        86400 60 )
@ NS ns1
@ NS ns2.example.net.
@ MX 10 mail
@ TXT "v=spf1 -all"
@ CAA 0 issue "letsencrypt.org"
ns1 A 192.0.2.53
ns1 AAAA 2001:db8::53
www 60 A 192.0.2.10
www 60 A 192.0.2.11
www 60 AAAA 2001:db8::10
MiXeD A 192.0.2.8
a\.b A 192.0.2.7
alias CNAME www
chain CNAME alias
out CNAME www.example.org.
cross CNAME www.example.net.
loop1 CNAME loop2
loop2 CNAME loop1
c0 CNAME c1
c1 CNAME c2
c2 CNAME c3
c3 CNAME c4
c4 CNAME c5
c5 CNAME c6
c6 CNAME c7
c7 A 192.0.2.77
mail A 192.0.2.25
txt TXT "one" "two words" "three \"quoted\" \065"
txt TXT "second record"
ttls 30 TXT "a"
ttls 90 TXT "b"
_sip._tcp SRV 10 60 5060 sip
sip A 192.0.2.60
4.2 PTR host.example.com.
naptr NAPTR 100 10 "u" "E2U+sip" "!^.*$!sip:info@example.com!" .
sshfp SSHFP 1 1 123456789abcdef67890123456789abcdef67890
_443._tcp TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
https HTTPS 1 . alpn=h2,h3
svc SVCB 1 svc.example.net. port=8443
svc2 SVCB 1 mail port=8443
https A 192.0.2.44
opaque TYPE65000 \# 3 010203
*.wild A 192.0.2.99
*.wild TXT "wild"
*.cwild CNAME www
a.b.ent A 192.0.2.5
sub NS ns.sub
ns.sub A 192.0.2.54
other NS ns.example.net.
big TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
big TXT "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
big TXT "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
"#;

const NET_ZONE: &str = "$ORIGIN example.net.\n$TTL 300\n@ SOA ns2 hostmaster 1 3600 600 86400 60\n@ NS ns2\nns2 A 192.0.2.153\nwww A 192.0.2.110\n";

/// Names asked: every owner, names below wildcards and empty non-terminals, names that do not
/// exist, below a delegation, outside our zones.
const NAMES: &[&str] = &[
    "example.com",
    "ns1.example.com",
    "www.example.com",
    "mixed.example.com",
    "a\\.b.example.com",
    "alias.example.com",
    "chain.example.com",
    "out.example.com",
    "cross.example.com",
    "loop1.example.com",
    "c0.example.com",
    "c2.example.com",
    "mail.example.com",
    "txt.example.com",
    "ttls.example.com",
    "_sip._tcp.example.com",
    "_tcp.example.com",
    "4.2.example.com",
    "naptr.example.com",
    "sshfp.example.com",
    "_443._tcp.example.com",
    "https.example.com",
    "svc.example.com",
    "svc2.example.com",
    "opaque.example.com",
    "x.wild.example.com",
    "y.x.wild.example.com",
    "*.wild.example.com",
    "wild.example.com",
    "z.cwild.example.com",
    "ent.example.com",
    "b.ent.example.com",
    "x.b.ent.example.com",
    "a.b.ent.example.com",
    "sub.example.com",
    "x.sub.example.com",
    "ns.sub.example.com",
    "other.example.com",
    "big.example.com",
    "nope.example.com",
    "www.example.net",
    "example.net",
    "www.example.org",
    "org",
];

const TYPES: &[u16] = &[
    1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 43, 44, 52, 64, 65, 99, 257, 65000, 255,
];

/// A difference the RFCs allow, where edge keeps its own answer: applied to Knot's reply given
/// edge's, it removes that difference (and only that one).
struct Exception {
    name: &'static str,
    normalise: fn(&mut Vec<u8>, &[u8]),
}

const EXCEPTIONS: &[Exception] = &[
    Exception {
        // RFC 4035 §3.1.6: "the name server side MUST copy the setting of the CD bit from a
        // query to the corresponding response". Knot leaves it clear for a zone without DNSSEC.
        name: "CD copied (RFC 4035 §3.1.6)",
        normalise: |knot, edge| knot[3] |= edge[3] & 0x10,
    },
    Exception {
        // RFC 4343 §3: letter case in names is not significant (the question, echoed
        // exactly, is compared as it is in every reply).
        name: "letter case of a name outside the question (RFC 4343)",
        normalise: |knot, edge| {
            if knot.len() == edge.len() && knot.eq_ignore_ascii_case(edge) {
                knot.copy_from_slice(edge);
            }
        },
    },
    Exception {
        // RFC 1035 §4.1.4: which earlier name a compression pointer points at, and whether to
        // compress at all, is the server's choice. Knot points names in RDATA at the owner's
        // suffix and owners into uncompressed RDATA names (SRV targets); edge at the longest
        // earlier match it wrote. Same records once decompressed.
        name: "compression pointers chosen differently (RFC 1035 §4.1.4)",
        normalise: |knot, edge| {
            if let (Ok(k), Ok(e)) = (Reply::parse(knot), Reply::parse(edge))
                && k == e
            {
                *knot = edge.to_vec();
            }
        },
    },
];

/// A reply as the fields compared: header flags and RCODE, the question as sent, each section's
/// records (owner, type, class, TTL, data) and the OPT record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    id: u16,
    flags: u16,
    question: Vec<u8>,
    sections: [Vec<String>; 3],
    edns: Option<String>,
}

impl Reply {
    fn parse(bytes: &[u8]) -> Result<Self> {
        let message = Message::from_vec(bytes).context("reply parses")?;
        let record = |r: &hickory_proto::rr::Record| {
            format!(
                "{} {} {} {} {:?}",
                r.name,
                r.record_type(),
                r.dns_class,
                r.ttl,
                r.data
            )
        };
        let question_end = bytes
            .get(12..)
            .and_then(|rest| rest.iter().position(|&b| b == 0))
            .map_or(12, |zero| 12 + zero + 5);
        Ok(Self {
            id: message.id,
            flags: u16::from_be_bytes([bytes[2], bytes[3]]),
            question: if message.queries.is_empty() {
                Vec::new()
            } else {
                bytes[12..question_end.min(bytes.len())].to_vec()
            },
            sections: [
                message.answers.iter().map(record).collect(),
                message.authorities.iter().map(record).collect(),
                message.additionals.iter().map(record).collect(),
            ],
            edns: message.edns.as_ref().map(|edns| format!("{edns:?}")),
        })
    }
}

/// One query of the matrix.
struct Case {
    label: String,
    bytes: Vec<u8>,
    transport: Transport,
}

fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut label = Vec::new();
    let mut chars = name.bytes().peekable();
    while let Some(c) = chars.next() {
        match c {
            b'\\' => label.push(chars.next().unwrap()),
            b'.' => {
                out.push(label.len() as u8);
                out.append(&mut label);
            }
            c => label.push(c),
        }
    }
    if !label.is_empty() {
        out.push(label.len() as u8);
        out.append(&mut label);
    }
    out.push(0);
    out
}

fn opt(payload: u16, version: u8, dnssec_ok: bool, options: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 41];
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0]);
    out.extend_from_slice(&(options.len() as u16).to_be_bytes());
    out.extend_from_slice(options);
    out
}

fn message(
    id: u16,
    flags: u16,
    name: &str,
    qtype: u16,
    qclass: u16,
    opt: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for count in [1, 0, 0, u16::from(opt.is_some())] {
        out.extend_from_slice(&u16::to_be_bytes(count));
    }
    out.extend_from_slice(&wire_name(name));
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    if let Some(opt) = opt {
        out.extend_from_slice(opt);
    }
    out
}

fn cased(name: &str, variant: usize) -> String {
    match variant % 3 {
        0 => name.to_string(),
        1 => name.to_uppercase(),
        _ => name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
    }
}

/// EDNS variants: none, plain, DO, NSID, EXPIRE, a cookie, a malformed client subnet (ignored),
/// an option running past the record, version 1, payload 512 and 4096.
fn edns(variant: usize) -> Option<Vec<u8>> {
    Some(match variant % 11 {
        0 => return None,
        1 => opt(1232, 0, false, &[]),
        2 => opt(1232, 0, true, &[]),
        3 => opt(1232, 0, false, &[0, 3, 0, 0]),
        4 => opt(1232, 0, true, &[0, 9, 0, 0]),
        5 => opt(1232, 0, false, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
        6 => opt(1232, 0, false, &[0, 8, 0, 5, 0, 9, 24, 0, 10]),
        7 => opt(1232, 0, false, &[0, 10, 0, 9, 1, 2, 3, 4]),
        8 => opt(1232, 1, false, &[]),
        9 => opt(512, 0, false, &[]),
        _ => opt(4096, 0, true, &[0, 3, 0, 0, 0, 9, 0, 0]),
    })
}

fn matrix() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut id = 0_u16;
    let mut push = |label: String, bytes: Vec<u8>, transport| {
        cases.push(Case {
            label,
            bytes,
            transport,
        })
    };
    let transports = [Transport::Udp, Transport::Tcp];
    // Every name and type, in rotating letter case, EDNS mode, transport and RD/CD flags.
    for (n, name) in NAMES.iter().enumerate() {
        for (t, &qtype) in TYPES.iter().enumerate() {
            let variant = n * 7 + t * 3;
            let transport = transports[variant % 2];
            let flags = [0, 0x0100, 0x0010, 0x0110][variant % 4];
            id = id.wrapping_add(1);
            let opt = edns(variant);
            let bytes = message(id, flags, &cased(name, variant), qtype, 1, opt.as_deref());
            push(
                format!("{name} {qtype} v{variant} {transport:?}"),
                bytes,
                transport,
            );
        }
    }
    // Every EDNS mode and letter case on a few names.
    for name in [
        "www.example.com",
        "nope.example.com",
        "www.example.org",
        "big.example.com",
        "x.wild.example.com",
    ] {
        for variant in 0..33 {
            for transport in transports {
                id = id.wrapping_add(1);
                let qtype = if name.starts_with("big") { 16 } else { 1 };
                let opt = edns(variant);
                let bytes = message(id, 0, &cased(name, variant / 11), qtype, 1, opt.as_deref());
                push(
                    format!("{name} edns v{variant} {transport:?}"),
                    bytes,
                    transport,
                );
            }
        }
    }
    // Special types, opcodes and classes.
    let plain = opt(1232, 0, false, &[]);
    for (label, flags, name, qtype, qclass) in [
        ("qtype 0", 0, "www.example.com", 0, 1),
        ("qtype OPT", 0, "www.example.com", 41, 1),
        ("MAILB", 0, "www.example.com", 253, 1),
        ("MAILA", 0, "www.example.com", 254, 1),
        ("AXFR", 0, "example.com", 252, 1),
        ("IXFR", 0, "example.com", 251, 1),
        ("IQUERY", 0x0800, "www.example.com", 1, 1),
        ("STATUS", 0x1000, "www.example.com", 1, 1),
        ("opcode 3", 0x1800, "www.example.com", 1, 1),
        ("NOTIFY", 0x2000, "example.com", 6, 1),
        ("UPDATE", 0x2800, "example.com", 6, 1),
        ("opcode 15", 0x7800, "www.example.com", 1, 1),
        ("class CH", 0, "www.example.com", 1, 3),
        ("class NONE", 0, "www.example.com", 1, 254),
        ("class ANY", 0, "www.example.com", 1, 255),
        ("class HS", 0, "www.example.com", 1, 4),
        ("id.server", 0, "id.server", 16, 3),
        ("hostname.bind", 0, "HOSTNAME.bind", 16, 3),
        ("version.bind", 0, "version.bind", 16, 3),
        ("version.server", 0, "version.server", 16, 3),
        ("id.server A", 0, "id.server", 1, 3),
        ("authors.bind", 0, "authors.bind", 16, 3),
        ("id.server IN", 0, "id.server", 16, 1),
        ("TC in query", 0x0200, "www.example.com", 1, 1),
        ("AA, AD in query", 0x0420, "www.example.com", 1, 1),
    ] {
        for (with_opt, transport) in [
            (false, Transport::Udp),
            (true, Transport::Udp),
            (true, Transport::Tcp),
        ] {
            id = id.wrapping_add(1);
            let opt = with_opt.then_some(&plain[..]);
            let bytes = message(id, flags, name, qtype, qclass, opt);
            push(
                format!("{label} opt={with_opt} {transport:?}"),
                bytes,
                transport,
            );
        }
    }
    // Malformed messages.
    let good = message(0x4242, 0x0100, "www.example.com", 1, 1, Some(&plain));
    let mut malformed: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut trailing = good.clone();
    trailing.push(0);
    malformed.push(("trailing byte", trailing));
    let mut no_question = good[..12].to_vec();
    no_question[5] = 0;
    no_question[11] = 1;
    no_question.extend_from_slice(&plain);
    malformed.push(("no question", no_question));
    let mut two_questions = message(0x4242, 0, "www.example.com", 1, 1, None);
    two_questions[5] = 2;
    two_questions.extend_from_within(12..);
    malformed.push(("two questions", two_questions));
    malformed.push(("cut question", good[..20].to_vec()));
    let mut two_opts = good.clone();
    two_opts[11] = 2;
    two_opts.extend_from_slice(&plain);
    malformed.push(("two OPTs", two_opts));
    let mut opt_in_answer = good.clone();
    (opt_in_answer[7], opt_in_answer[11]) = (1, 0);
    malformed.push(("OPT in answer section", opt_in_answer));
    let mut pointer = message(0x4242, 0, "www.example.com", 1, 1, None);
    pointer.truncate(12);
    pointer.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12, 0, 1, 0, 1]);
    malformed.push(("pointer in question", pointer));
    let mut opt_name = good.clone();
    let at = opt_name.len() - 11;
    opt_name.splice(at..at + 1, [1, b'x', 0]);
    malformed.push(("OPT owner not root", opt_name));
    for (label, bytes) in malformed {
        for transport in transports {
            push(format!("{label} {transport:?}"), bytes.clone(), transport);
        }
    }
    cases
}

/// Asks Knot at `server`: the reply's bytes, or `None` if it sends nothing within a second.
fn ask_knot(server: SocketAddr, query: &[u8], transport: Transport) -> Result<Option<Vec<u8>>> {
    let timeout = Duration::from_millis(700);
    match transport {
        Transport::Udp => {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send_to(query, server)?;
            let mut buffer = vec![0; 65535];
            match socket.recv(&mut buffer) {
                Ok(len) => Ok(Some(buffer[..len].to_vec())),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(error) => Err(error.into()),
            }
        }
        Transport::Tcp => {
            let mut stream = TcpStream::connect_timeout(&server, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            stream.write_all(&framed)?;
            let mut len = [0; 2];
            if stream.read_exact(&mut len).is_err() {
                return Ok(None);
            }
            let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply)?;
            Ok(Some(reply))
        }
    }
}

#[test]
fn edge_answers_as_knot_does_but_for_rfc_justified_exceptions() -> Result<()> {
    let lan = Lan::new("knotdiff", &["knot"])?;
    let host = lan.host("knot");
    let dir = lan.work_dir();
    let zone_file = lan.write_file("example.com.zone", ZONE)?;
    lan.write_file("example.net.zone", NET_ZONE)?;
    let knot_conf = lan.write_file(
        "knot.conf",
        &format!(
            "server:\n    rundir: {dir}\n    listen: {v4}@53\n    identity: pop-test\n    version: edge-test\n    nsid: pop-test\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\ndatabase:\n    storage: {dir}\ntemplate:\n  - id: default\n    storage: {dir}\n    semantic-checks: off\n    journal-content: none\nlog:\n  - target: stderr\n    any: notice\nzone:\n  - domain: example.com\n    file: example.com.zone\n  - domain: example.net\n    file: example.net.zone\n",
            dir = dir.display(),
            v4 = host.v4,
        ),
    )?;
    let mut command = host.netns.command("knotd");
    command.arg("-c").arg(&knot_conf);
    let mut knot = Daemon::spawn("knotd", command, &dir.join("knot.log"))?;

    let edge_config = lan.write_file(
        "edge.toml",
        "[xdp]\ninterface = \"eth0\"\n[dns]\nidentity = \"pop-test\"\nversion = \"edge-test\"\n[[zones]]\napex = \"example.com\"\nfile = \"example.com.zone\"\n[[zones]]\napex = \"example.net\"\nfile = \"example.net.zone\"\n",
    )?;
    let zones = Zones::build(&edge_config, &Config::load(&edge_config)?)?;
    assert!(zone_file.exists());

    let server = SocketAddr::from((host.v4, 53));
    let cases = matrix();
    let knot_replies = host.netns.run_inside(|| -> Result<Vec<Option<Vec<u8>>>> {
        // Knot is up once it answers the SOA.
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = message(1, 0, "example.com", 6, 1, None);
        while ask_knot(server, &probe, Transport::Udp)
            .ok()
            .flatten()
            .is_none_or(|reply| reply[3] & 0x0f != 0)
        {
            if Instant::now() > deadline {
                bail!("Knot did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cases
            .iter()
            .map(|case| ask_knot(server, &case.bytes, case.transport))
            .collect()
    })??;
    knot.check_running()?;

    let (mut identical, mut counts) = (0, BTreeMap::<&str, usize>::new());
    let mut unexplained = Vec::new();
    for (case, knot) in cases.iter().zip(&knot_replies) {
        let edge = respond(&zones, &case.bytes, case.transport);
        if *knot == edge {
            identical += 1;
            continue;
        }
        let (Some(knot), Some(edge)) = (knot, &edge) else {
            unexplained.push(format!(
                "{}: Knot {} edge {}",
                case.label,
                knot.as_ref().map_or("drops it".into(), |r| hex(r)),
                edge.as_ref().map_or("drops it".into(), |r| hex(r))
            ));
            continue;
        };
        let mut normalised = knot.clone();
        let mut applied = Vec::new();
        for exception in EXCEPTIONS {
            let before = normalised.clone();
            (exception.normalise)(&mut normalised, edge);
            if normalised != before {
                applied.push(exception.name);
            }
        }
        if normalised == *edge {
            for name in applied {
                *counts.entry(name).or_default() += 1;
            }
            continue;
        }
        // Field by field, to say what differs.
        let (knot_reply, edge_reply) = (Reply::parse(knot)?, Reply::parse(edge)?);
        unexplained.push(format!(
            "{}:\n  Knot {knot_reply:?}\n  edge {edge_reply:?}\n  Knot {}\n  edge {}",
            case.label,
            hex(knot),
            hex(edge)
        ));
    }
    eprintln!(
        "{} queries: {identical} identical replies, {} differing only by {counts:?}, {} unexplained",
        cases.len(),
        cases.len() - identical - unexplained.len(),
        unexplained.len()
    );
    assert!(
        unexplained.is_empty(),
        "{} differences from Knot without an RFC reason:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    assert!(
        identical > cases.len() / 2,
        "the matrix should mostly agree"
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
