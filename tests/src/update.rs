//! A dynamic update (RFC 2136, TSIG-signed) as a client sends one: the config that lets a key
//! change a zone, the signed message that replaces one name's A RRset, and the time until the
//! server answers the new address (of an update, or of any other change). Shared by
//! `dns_scale` and `cargo xtask bench dns`, which time the same change.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, ensure};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType, TSigner,
        rdata::{A, tsig::TsigAlgorithm},
    },
};

/// A TSIG key (HMAC-SHA256) allowed to update one zone.
pub struct UpdateKey {
    pub name: &'static str,
    pub secret: &'static [u8],
}

impl UpdateKey {
    /// The lines of `[dns]` that journal updates in `journal_dir` and let this key change
    /// `zone`; they end the `[dns]` table (an array of tables follows).
    pub fn dns_config(&self, zone: &str, journal_dir: &Path) -> String {
        let mut text = String::new();
        let _ = write!(
            text,
            "journal_dir = \"{}\"\n[[dns.update_keys]]\nname = \"{}\"\nalgorithm = \
             \"hmac-sha256\"\nsecret = \"{}\"\nzones = [\"{zone}\"]\n",
            journal_dir.display(),
            self.name,
            data_encoding::BASE64.encode(self.secret),
        );
        text
    }

    /// An UPDATE of `zone`, signed with this key: `name`'s A RRset replaced by `address`.
    pub fn replace_a(&self, zone: &Name, name: &Name, address: Ipv4Addr) -> Result<Vec<u8>> {
        let mut message = Message::new(0x4242, MessageType::Query, OpCode::Update);
        message.add_query(Query::query(zone.clone(), RecordType::SOA));
        let mut delete = Record::update0(name.clone(), 0, RecordType::A);
        delete.dns_class = DNSClass::ANY;
        message.add_authority(delete);
        message.add_authority(Record::from_rdata(name.clone(), 300, RData::A(A(address))));
        let signer = TSigner::new(
            self.secret.to_vec(),
            TsigAlgorithm::HmacSha256,
            Name::from_ascii(format!("{}.", self.name))?,
            300,
        )?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        message.finalize(&signer, now)?;
        Ok(message.to_vec()?)
    }
}

/// A signed update to send, and how long to wait for its response before sending it again.
/// Its own time, not the watching queries': the response waits for the journal's fsync, and a
/// DNS client waits about a second before it resends.
#[derive(Clone, Copy)]
pub struct Update<'a> {
    pub message: &'a [u8],
    pub resend: Duration,
}

/// How long a change took to become visible, and the queries asked meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// From the change (a SIGHUP, sending an update) to the first answer with the new address.
    pub visible: Duration,
    /// Queries for the name sent back to back meanwhile.
    pub asked: usize,
    /// Those of them that got no answer within `retry` (and were asked again).
    pub unanswered: usize,
    /// How many times the update was sent: more than once when no response came within its
    /// [`Update::resend`].
    pub update_sends: usize,
}

/// Asks `name`'s A record at `server` back to back until the answer is `address`, within
/// `bound` of `since`, with `update` (if any) sent first and again every [`Update::resend`]
/// until its NOERROR response comes (waited for after the address is seen); a query
/// unanswered within `retry` is asked again. Call it from inside the client's namespace. The caller
/// judges [`Timed::unanswered`]: a test on a quiet link wants none, a benchmark under load
/// reports them.
pub fn wait_for_address(
    server: SocketAddr,
    update: Option<Update>,
    name: &Name,
    address: Ipv4Addr,
    since: Instant,
    bound: Duration,
    retry: Duration,
) -> Result<Timed> {
    let mut updater = update
        .map(|update| Updater::new(server, update))
        .transpose()?;
    let asker = UdpSocket::bind("0.0.0.0:0")?;
    asker.set_read_timeout(Some(retry))?;
    let mut query = Message::new(1, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name.clone(), RecordType::A));
    let query = query.to_vec()?;
    let mut buffer = [0; 1500];
    let (mut asked, mut unanswered) = (0, 0);
    let visible = loop {
        ensure!(
            since.elapsed() < bound,
            "{name} not answered with {address} within {bound:?} ({asked} asked, \
             {unanswered} unanswered)"
        );
        if let Some(updater) = &mut updater {
            updater.poll()?;
        }
        asker.send_to(&query, server)?;
        asked += 1;
        let len = match asker.recv(&mut buffer) {
            Ok(len) => len,
            Err(error) if timed_out(&error) => {
                unanswered += 1;
                continue;
            }
            Err(error) => return Err(error).with_context(|| format!("asking {name}")),
        };
        let answer = Message::from_vec(&buffer[..len])?;
        if answer
            .answers
            .iter()
            .any(|record| record.data == RData::A(A(address)))
        {
            break since.elapsed();
        }
    };
    let mut update_sends = 0;
    if let Some(mut updater) = updater {
        updater.socket.set_nonblocking(false)?;
        updater
            .socket
            .set_read_timeout(Some(updater.update.resend))?;
        while !updater.poll()? {
            ensure!(
                since.elapsed() < bound,
                "no response to the update within {bound:?}"
            );
        }
        update_sends = updater.sends;
    }
    Ok(Timed {
        visible,
        asked,
        unanswered,
        update_sends,
    })
}

/// An update in flight: sent again every [`Update::resend`] until its response comes.
struct Updater<'a> {
    socket: UdpSocket,
    server: SocketAddr,
    update: Update<'a>,
    sent: Option<Instant>,
    sends: usize,
    responded: bool,
}

impl<'a> Updater<'a> {
    fn new(server: SocketAddr, update: Update<'a>) -> Result<Self> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            server,
            update,
            sent: None,
            sends: 0,
            responded: false,
        })
    }

    /// Sends the update if it is due, then takes its response if one came (waiting as the
    /// socket is set to); fails unless that response is NOERROR. Returns whether it came.
    fn poll(&mut self) -> Result<bool> {
        if self.responded {
            return Ok(true);
        }
        if self
            .sent
            .is_none_or(|sent| sent.elapsed() >= self.update.resend)
        {
            self.socket.send_to(self.update.message, self.server)?;
            self.sends += 1;
            self.sent = Some(Instant::now());
        }
        let mut buffer = [0; 1500];
        match self.socket.recv(&mut buffer) {
            Ok(len) => {
                let response = Message::from_vec(&buffer[..len])?;
                ensure!(
                    response.metadata.response_code == ResponseCode::NoError,
                    "the update was answered {response:?}"
                );
                self.responded = true;
                Ok(true)
            }
            Err(error) if timed_out(&error) => Ok(false),
            Err(error) => Err(error).context("the update's response"),
        }
    }
}

/// Whether a socket read ended for want of data (non-blocking, or its timeout).
fn timed_out(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
