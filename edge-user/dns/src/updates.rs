//! The server's side of dynamic updates: an UPDATE message is read, its zone found and its
//! TSIG checked ([`tsig`]), and an authenticated one handed to the daemon, which applies it
//! ([`crate::update`]) to the zones, the journal and the maps, one at a time, and answers with
//! the response code; the response is then framed and signed here.

use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::{
    op::{Edns, Message, Metadata, OpCode, ResponseCode},
    rr::{DNSClass, Name, RecordType},
    serialize::binary::{BinDecodable as _, BinDecoder},
};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::{
    message::MAX_UDP_PAYLOAD,
    tsig::{self, Auth, Failure},
    zone::Zones,
};

/// An authenticated update for the daemon: the zone it changes, the message, and where the
/// response code goes.
pub struct Request {
    pub apex: Name,
    pub message: Message,
    /// The key that signed it, for the log.
    pub key: Name,
    pub reply: oneshot::Sender<ResponseCode>,
}

/// Where the server sends updates.
pub type Requests = mpsc::Sender<Request>;

/// Whether `query` is an UPDATE request (opcode 5, QR clear).
pub fn is_update(query: &[u8]) -> bool {
    query.len() > 2 && query[2] & 0x80 == 0 && (query[2] >> 3) & 0x0f == 5
}

/// The response to the UPDATE request `bytes`, or `None` if it gets none (too short for a
/// header).
pub async fn respond(zones: &Zones, bytes: &[u8], requests: Option<&Requests>) -> Option<Vec<u8>> {
    let header = hickory_proto::op::Header::read(&mut BinDecoder::new(bytes)).ok()?;
    let error = |rcode| {
        let mut response = Message::error_msg(header.metadata.id, OpCode::Update, rcode);
        response.metadata = Metadata::response_from_request(&header.metadata);
        response.metadata.response_code = rcode;
        response.to_vec().ok()
    };
    let Ok(message) = Message::from_vec(bytes) else {
        return error(ResponseCode::FormErr);
    };
    let zone = match &message.queries[..] {
        [zone] if zone.query_type() == RecordType::SOA && zone.query_class() == DNSClass::IN => {
            zone
        }
        _ => return error(ResponseCode::FormErr),
    };
    let apex = zone.name().to_lowercase();
    let mut response = Message::new(
        header.metadata.id,
        hickory_proto::op::MessageType::Response,
        OpCode::Update,
    );
    response.metadata = Metadata::response_from_request(&header.metadata);
    response.add_query(zone.clone());
    if let Some(edns) = &message.edns {
        // Our OPT, as for queries: payload 1232, version 0, DO echoed.
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD)
            .set_dnssec_ok(edns.flags().dnssec_ok);
        response.set_edns(ours);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if !zones.zones.iter().any(|known| known.apex == apex) {
        response.metadata.response_code = ResponseCode::NotAuth;
        return response.to_vec().ok();
    }
    let signed = match tsig::authenticate(&zones.update_keys, &apex, &message, bytes, now) {
        Auth::Signed(signed) => signed,
        Auth::Unsigned => {
            info!(zone = %apex, "unsigned update refused (NOTAUTH): updates need a key of dns.update_keys");
            response.metadata.response_code = ResponseCode::NotAuth;
            return response.to_vec().ok();
        }
        Auth::Failed(failure) => {
            let key = message
                .signature()
                .map(|tsig| tsig.name.to_string())
                .unwrap_or_default();
            info!(zone = %apex, %key, error = ?failure.error(), "update refused (NOTAUTH): TSIG does not check out");
            response.metadata.response_code = ResponseCode::NotAuth;
            let record = match failure {
                Failure::Unsigned(record) => record,
                Failure::BadTime(signed) => signed.sign(&response.to_vec().ok()?, now).ok()?,
            };
            response.set_signature(record);
            return response.to_vec().ok();
        }
    };
    let key = message
        .signature()
        .map(|tsig| tsig.name.clone())
        .unwrap_or_default();
    let rcode = match requests {
        Some(requests) => {
            let (reply, code) = oneshot::channel();
            let request = Request {
                apex,
                message,
                key,
                reply,
            };
            match requests.send(request).await {
                Ok(()) => code.await.unwrap_or(ResponseCode::ServFail),
                Err(_) => ResponseCode::ServFail,
            }
        }
        None => ResponseCode::Refused,
    };
    response.metadata.response_code = rcode;
    let record = signed.sign(&response.to_vec().ok()?, now).ok()?;
    response.set_signature(record);
    response.to_vec().ok()
}
