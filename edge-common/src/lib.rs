//! The contract between the XDP program and the edge daemon: every type that crosses the map
//! boundary, defined once. `#[repr(C)]` so both sides agree on the layout; the `user` feature adds
//! the `aya::Pod` impls that userspace needs to read and write the maps.
#![no_std]

/// Key buffer for a wire-format name: RFC 1035 §3.1 caps a name at 255 octets, root label included.
pub const NAME_KEY_LEN: usize = 256;

/// Names up to this many octets (most names) can live in the name table ([`NameSlot`]): a
/// smaller key hashes faster, and with its answer it fits two cache lines.
pub const SHORT_NAME_LEN: usize = 48;

/// Answer section bytes a [`NameSlot`] holds: four A records or two AAAA records (16 and 28
/// octets each with compressed owners). Larger answers go to the long-answer map.
pub const SLOT_DATA_LEN: usize = 64;

/// Slots the XDP program probes from a name's home slot (linear probing). Userspace places
/// every entry within this window, or in the long-answer map when the window is full.
pub const PROBES: usize = 16;

/// Most records one fast-path answer holds.
pub const MAX_ANSWER_RECORDS: usize = 8;

/// Answer section bytes one map entry holds: eight AAAA records with compressed owners
/// (8 × 28 octets) fit.
pub const ANSWER_DATA_LEN: usize = 256;

/// Pinned names, relative to the per-interface pin directory.
pub mod pin {
    /// The name table: names up to [`super::SHORT_NAME_LEN`] octets with their answers.
    pub const NAMES: &str = "names";
    /// Longer names, larger answers and names whose probe window is full.
    pub const LONG_ANSWERS: &str = "long_answers";
    /// The answer map before the name table: only removed (by `edge detach`).
    pub const FORMER_ANSWERS: &str = "answers";
    /// Per-CPU counters.
    pub const COUNTERS: &str = "counters";
    /// Service addresses and ports the program answers on, two copies.
    pub const SERVICES: &str = "services";
    /// Answers of steered names, two generations of them.
    pub const SELECTIONS: &str = "selections";
    /// The copy of `selections` and of `services` in use.
    pub const STATE: &str = "state";
    /// The XDP link that keeps the program attached while no daemon runs.
    pub const LINK: &str = "link";
}

/// Map names as the kernel (and `bpftool map show`) sees them.
pub mod map_name {
    pub const NAMES: &str = "edge_names";
    pub const LONG_ANSWERS: &str = "edge_long_names";
    pub const COUNTERS: &str = "edge_counters";
    pub const SERVICES: &str = "edge_services";
    pub const SELECTIONS: &str = "edge_selections";
    pub const STATE: &str = "edge_state";
    pub const RRL_SETTINGS: &str = "edge_rrl";
    pub const RRL_BUCKETS: &str = "edge_rrl_buckets";
    pub const RRL_EXEMPT: &str = "edge_rrl_exempt";
}

/// Program names in the object.
pub mod program_name {
    /// The DNS responder.
    pub const DNS: &str = "edge_dns";
    /// Passes every frame: for the far end of a veth pair, where XDP_TX frames are only received
    /// when an XDP program is attached.
    pub const PASS: &str = "edge_pass";
    /// Reflects every DNS query as a response without a lookup: the benchmark's ceiling.
    pub const REFLECT: &str = "edge_reflect";
}

/// Lookup key of an answer map: a name buffer of `N` bytes. Aligned to 8 so that the XDP program
/// can fold case a word at a time; `reserved` makes the tail explicit, since every byte of a key
/// is hashed.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameKey<const N: usize> {
    /// Lower-case wire-format name, zero-padded to the end of the buffer.
    pub name: [u8; N],
    /// Query type in network byte order, as on the wire.
    pub qtype: u16,
    /// Always zero.
    pub reserved: [u16; 3],
}

/// Key of the map for names up to [`SHORT_NAME_LEN`] octets.
pub type ShortNameKey = NameKey<SHORT_NAME_LEN>;
/// Key of the map for longer names, and the form userspace works with.
pub type LongNameKey = NameKey<NAME_KEY_LEN>;

impl<const N: usize> NameKey<N> {
    pub const fn zeroed() -> Self {
        Self {
            name: [0; N],
            qtype: 0,
            reserved: [0; 3],
        }
    }
}

/// Words of a [`ShortNameKey`]: the name's eight, then type and padding.
const SHORT_KEY_WORDS: usize = SHORT_NAME_LEN / 8 + 1;

impl ShortNameKey {
    #[inline(always)]
    fn words(&self) -> &[u64; SHORT_KEY_WORDS] {
        // SAFETY: `NameKey` is `repr(C, align(8))`, SHORT_NAME_LEN + 8 bytes without padding.
        unsafe { &*(self as *const Self as *const [u64; SHORT_KEY_WORDS]) }
    }

    /// The name table's hash of this name and type: it picks the home slot ([`home_slot`]) and,
    /// as the slot's tag ([`slot_tag`]), lets a probe skip other names with one comparison; the
    /// slot carries the whole key, which the program checks with [`Self::same_name`].
    /// xxHash64's steps for 8-byte lanes and
    /// its final avalanche (simpler multiply-and-rotate steps collide on names that differ in a
    /// few digits); the same code runs in the XDP program and in userspace.
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        const P1: u64 = 0x9e37_79b1_85eb_ca87;
        const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;
        const P3: u64 = 0x1656_67b1_9e37_79f9;
        const P4: u64 = 0x85eb_ca77_c2b2_ae63;
        const P5: u64 = 0x27d4_eb2f_1656_67c5;
        let step = |hash: u64, word: u64| {
            let lane = word.wrapping_mul(P2).rotate_left(31).wrapping_mul(P1);
            (hash ^ lane)
                .rotate_left(27)
                .wrapping_mul(P1)
                .wrapping_add(P4)
        };
        let (name, qtype) = self.words().split_at(SHORT_KEY_WORDS - 1);
        let mut hash = P5.wrapping_add((SHORT_KEY_WORDS * 8) as u64);
        // The name's words up to the zero padding (a word of eight zero octets inside a name
        // is possible but rare: it only shortens what is hashed), then the type's.
        for &word in name {
            if word == 0 {
                break;
            }
            hash = step(hash, word);
        }
        hash = step(hash, qtype[0]);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(P2);
        hash ^= hash >> 29;
        hash = hash.wrapping_mul(P3);
        hash ^ (hash >> 32)
    }

    /// Whether `slot` holds this key, compared a word at a time (a derived comparison would
    /// become a byte loop in BPF).
    #[inline(always)]
    pub fn same_name(&self, slot: &NameSlot) -> bool {
        let mut differ = u64::from(self.qtype ^ slot.qtype);
        for (a, b) in self.words()[..SHORT_NAME_LEN / 8]
            .iter()
            .zip(slot.name_words())
        {
            differ |= a ^ b;
        }
        differ == 0
    }
}

/// The tag of an empty slot: a probe ends there.
pub const SLOT_EMPTY: u64 = 0;
/// The tag of a slot whose entry was removed: a probe goes on past it.
pub const SLOT_REMOVED: u64 = 1;

/// The tag a slot holding the key of `hash` carries: the hash, kept clear of the two reserved
/// tags.
#[inline(always)]
pub const fn slot_tag(hash: u64) -> u64 {
    hash | 2
}

/// The first slot probed for `hash` in a table of `slots` home slots (the map holds
/// [`PROBES`] more, so a window never wraps): Lemire's multiply-shift, which needs no division
/// and no power-of-two size.
#[inline(always)]
pub const fn home_slot(hash: u64, slots: u32) -> u32 {
    (((hash >> 32) * slots as u64) >> 32) as u32
}

/// One slot of the name table (`edge_names`, an array the daemon writes through a memory
/// mapping): a name of up to [`SHORT_NAME_LEN`] octets, its type and its answer, in two cache
/// lines, so that the common lookup reads one slot and nothing else. `tag` is written last and
/// cleared first (see docs/ARCHITECTURE.md, "The name table").
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameSlot {
    /// [`SLOT_EMPTY`], [`SLOT_REMOVED`] or [`slot_tag`] of the key's hash.
    pub tag: u64,
    /// Lower-case wire-format name, zero-padded.
    pub name: [u8; SHORT_NAME_LEN],
    /// Query type in network byte order, as in [`NameKey`].
    pub qtype: u16,
    /// Response header flags, as [`Answer::flags`].
    pub flags: u16,
    /// Records in the answer section.
    pub ancount: u8,
    /// Bytes of `data` in use.
    pub len: u8,
    /// As [`Answer::selection`]: non-zero for a steered name, whose answer is in the selection
    /// map (then `len` is 0).
    pub selection: u16,
    /// Answer section, owners compressed to the question name (offset 12).
    pub data: [u8; SLOT_DATA_LEN],
}

impl NameSlot {
    pub const fn empty() -> Self {
        Self {
            tag: SLOT_EMPTY,
            name: [0; SHORT_NAME_LEN],
            qtype: 0,
            flags: 0,
            ancount: 0,
            len: 0,
            selection: 0,
            data: [0; SLOT_DATA_LEN],
        }
    }

    #[inline(always)]
    fn name_words(&self) -> &[u64; SHORT_NAME_LEN / 8] {
        // SAFETY: `name` starts at offset 8 of an 8-aligned struct and is SHORT_NAME_LEN bytes,
        // a multiple of 8.
        unsafe { &*(self.name.as_ptr() as *const [u64; SHORT_NAME_LEN / 8]) }
    }
}

/// Most service addresses per family the fast path answers on.
pub const SERVICES_MAX: usize = 16;

/// An IPv4 address and UDP port the fast path answers on; address 0 is the wildcard, as with a
/// socket bound to `0.0.0.0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceV4 {
    /// Network byte order, as read from the IP header.
    pub addr: u32,
    /// Network byte order.
    pub port: u16,
    pub reserved: u16,
}

/// An IPv6 address and UDP port the fast path answers on; `::` is the wildcard.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceV6 {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub reserved: u16,
}

/// Every service the fast path answers on, one value of an array that the program scans: with
/// a handful of services that is cheaper than a hash lookup (two, for the wildcard), and it
/// keeps key building (byte-wise zeroing in BPF) out of the per-query path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Services {
    /// Entries in use at the start of `v4` and of `v6`.
    pub v4_len: u32,
    pub v6_len: u32,
    pub v4: [ServiceV4; SERVICES_MAX],
    pub v6: [ServiceV6; SERVICES_MAX],
}

/// Entries of the state map. Each names which of two copies of a double-buffered map the program
/// reads: userspace writes the other copy, then flips the entry.
pub mod state_slot {
    /// Generation of the selection map.
    pub const SELECTIONS: u32 = 0;
    /// Copy of the service array.
    pub const SERVICES: u32 = 1;
    /// Not a copy: the name table's home slots ([`super::home_slot`]), set when it is created.
    pub const NAME_SLOTS: u32 = 2;
    pub const COUNT: usize = 3;
}

/// The EDNS payload size we advertise (RFC 9715 / DNS flag day 2020 default).
pub const EDNS_PAYLOAD_SIZE: u16 = 1232;

/// A prebuilt answer: the header fields the fast path writes and the answer section it appends
/// after the echoed question. Userspace builds it with the same code that answers in userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Response header flags (QR, AA, RCODE), host order. RD and CD are copied from the query.
    pub flags: u16,
    /// Records in the answer section.
    pub ancount: u16,
    /// Bytes of `data` in use.
    pub len: u16,
    /// Zero: this entry is the answer. Otherwise (a steered name) the answer is the entry
    /// `selection_key(generation, selection)` of the selection map, in the generation the state
    /// map names, so that a steering round becomes visible to every CPU at once.
    pub selection: u16,
    /// Answer section, owners compressed to the question name (offset 12).
    pub data: [u8; ANSWER_DATA_LEN],
}

impl Answer {
    /// The answer-map entry of a steered name: a reference to its slot in the selection map.
    pub const fn selected(selection: u16) -> Self {
        Self {
            flags: 0,
            ancount: 0,
            len: 0,
            selection,
            data: [0; ANSWER_DATA_LEN],
        }
    }
}

/// Which of two copies the fast path reads (see [`state_slot`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// 0 or 1 (for [`state_slot::NAME_SLOTS`], the count).
    pub generation: u32,
}

/// Key of a steered answer in the selection map.
pub const fn selection_key(generation: u32, selection: u16) -> u32 {
    (generation << 16) | selection as u32
}

/// Response rate limiting (RRL) in the XDP program: a token bucket per source prefix, kept as
/// the time its next reply is due (the generic cell rate algorithm, GCRA: one word per prefix,
/// no division per query). A prefix may run `burst` replies ahead of its rate; beyond that its
/// queries are dropped, and every `slip`-th of them gets a truncated reply (TC set, the question
/// only) so that a real client behind the prefix retries over TCP, which a spoofed one cannot.
pub mod rrl {
    /// IPv4 sources share a bucket per /24, IPv6 sources per /56, as in Knot and NSD.
    pub const V4_PREFIX: u32 = 24;
    pub const V6_PREFIX: u32 = 56;

    /// The bucket key of an IPv4 source: its /24, then zeroes, then 4, as bytes in memory
    /// order (the key's byte 7 tells the families apart).
    #[inline(always)]
    pub const fn key_v4(addr: [u8; 4]) -> u64 {
        u64::from_ne_bytes([addr[0], addr[1], addr[2], 0, 0, 0, 0, 4])
    }

    /// The bucket key of an IPv6 source: its /56, then 6.
    #[inline(always)]
    pub const fn key_v6(addr: &[u8; 16]) -> u64 {
        u64::from_ne_bytes([
            addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], 6,
        ])
    }

    /// An IPv4 address as the exempt trie holds it: IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so
    /// one trie holds both families.
    #[inline(always)]
    pub const fn mapped_v4(addr: [u8; 4]) -> [u8; 16] {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
        ]
    }

    /// Most exempt prefixes.
    pub const EXEMPT_MAX: u32 = 1024;
}

/// The RRL settings the XDP program reads: one array entry, written whole by userspace. All
/// zero: RRL is off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrlSettings {
    /// Nanoseconds of a prefix's schedule one reply takes (1 s / rate); 0: off.
    pub interval_ns: u64,
    /// How far past now a prefix's schedule may run and its queries still be answered:
    /// (burst - 1) intervals.
    pub tolerance_ns: u64,
    /// Every `slip`-th limited query of a prefix gets a truncated reply, the others are
    /// dropped; 0: all are dropped.
    pub slip: u32,
    pub reserved: u32,
}

/// A source prefix's bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrlBucket {
    /// When (`bpf_ktime_get_ns`) the prefix's schedule allows its next reply; up to
    /// `tolerance_ns` in the future while it uses its burst.
    pub due_ns: u64,
    /// The prefix's queries that were limited, for the slip.
    pub limited: u64,
}

/// Header flag bits (RFC 1035 §4.1.1), host order.
pub mod flags {
    pub const QR: u16 = 0x8000;
    pub const OPCODE: u16 = 0x7800;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const AD: u16 = 0x0020;
    pub const CD: u16 = 0x0010;
    pub const RCODE: u16 = 0x000f;
}

/// What the XDP program did with a frame: index into the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Answered from the map (XDP_TX).
    Answered = 0,
    /// Passed: not IPv4 or IPv6 (after at most one VLAN tag).
    NotIp,
    /// Passed: IPv4 with options or fragmented, or IPv6 with extension headers.
    IpUnsupported,
    /// Passed: not UDP.
    NotUdp,
    /// Passed: UDP, but not to a service address and port.
    NotService,
    /// Passed: shorter than its headers or lengths claim, or bytes after the question.
    Malformed,
    /// Passed: a response, or an opcode other than QUERY.
    NotQuery,
    /// Passed: QDCOUNT is not 1.
    QuestionCount,
    /// Passed: answer or authority records, or additional records other than one OPT.
    ExtraRecords,
    /// Passed: EDNS version other than 0 (userspace answers BADVERS).
    EdnsVersion,
    /// Passed: the question name does not fit the key.
    NameTooLong,
    /// Passed: a compression pointer or reserved label type in the question name.
    BadName,
    /// Passed: class other than IN.
    NotInClass,
    /// Passed: no answer for this name and type in the map.
    UnknownName,
    /// Passed: the frame could not be grown for the reply.
    ReplyFailed,
    /// Passed: an EDNS option the userspace server answers ([`USERSPACE_EDNS_OPTIONS`]), or
    /// more options than the program walks.
    EdnsOption,
    /// Dropped (XDP_DROP): the source prefix is over its rate ([`rrl`]).
    RateLimited,
    /// Sent a truncated reply (XDP_TX): the source prefix is over its rate and it was its turn
    /// to slip ([`rrl`]).
    Slipped,
}

/// EDNS option codes whose answer depends on more than the answer map: NSID (RFC 5001) and
/// EXPIRE (RFC 7314). The XDP program passes queries carrying them to the userspace server.
pub const USERSPACE_EDNS_OPTIONS: [u16; 2] = [3, 9];

/// Most EDNS options the XDP program walks; a query with more goes to the userspace server.
pub const EDNS_OPTIONS_MAX: usize = 16;

impl Counter {
    pub const ALL: [Self; 18] = [
        Self::Answered,
        Self::NotIp,
        Self::IpUnsupported,
        Self::NotUdp,
        Self::NotService,
        Self::Malformed,
        Self::NotQuery,
        Self::QuestionCount,
        Self::ExtraRecords,
        Self::EdnsVersion,
        Self::NameTooLong,
        Self::BadName,
        Self::NotInClass,
        Self::UnknownName,
        Self::ReplyFailed,
        Self::EdnsOption,
        Self::RateLimited,
        Self::Slipped,
    ];

    /// Entries in the counter array.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable name for logs, `edge stats` and tests.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NotIp => "not_ip",
            Self::IpUnsupported => "ip_unsupported",
            Self::NotUdp => "not_udp",
            Self::NotService => "not_service",
            Self::Malformed => "malformed",
            Self::NotQuery => "not_query",
            Self::QuestionCount => "question_count",
            Self::ExtraRecords => "extra_records",
            Self::EdnsVersion => "edns_version",
            Self::NameTooLong => "name_too_long",
            Self::BadName => "bad_name",
            Self::NotInClass => "not_in_class",
            Self::UnknownName => "unknown_name",
            Self::ReplyFailed => "reply_failed",
            Self::EdnsOption => "edns_option",
            Self::RateLimited => "rate_limited",
            Self::Slipped => "slipped",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data: every bit pattern is valid, and no padding is read as a value.
    unsafe impl<const N: usize> aya::Pod for super::NameKey<N> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Answer {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NameSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Services {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::State {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RrlSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RrlBucket {}
}
