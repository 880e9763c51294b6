//! Who may change a zone: the TSIG keys of `dns.update_keys` (RFC 8945), each with the zones
//! it may change. The MACs are hickory-proto's; this module decides what a request gets when
//! they do not check out, as Knot DNS answers: a zone no key may change, or an unsigned
//! request, NOTAUTH; an unknown key or one the zone does not allow, NOTAUTH with an unsigned
//! BADKEY; a wrong MAC, NOTAUTH with an unsigned BADSIG; a time outside the fudge, NOTAUTH with
//! a signed BADTIME carrying our clock.

use edge_config::{TsigAlgorithm as AlgorithmConfig, UpdateKeyConfig};
use hickory_proto::{
    ProtoError,
    op::Message,
    rr::{
        Name, Record, TSigner,
        rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record, signed_bitmessage_to_buf},
    },
};

/// How far a request's signing time may be from our clock, in seconds: what Knot and BIND
/// clients sign with.
pub const FUDGE: u16 = 300;

/// The keys that may change zones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateKeys {
    keys: Vec<UpdateKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct UpdateKey {
    /// Absolute, lower-case.
    name: Name,
    algorithm: TsigAlgorithm,
    secret: Vec<u8>,
    /// The apexes it may change (absolute, lower-case).
    zones: Vec<Name>,
}

impl UpdateKeys {
    /// The keys of `dns.update_keys` (edge-config checked names, secrets and zones); a name
    /// that is not a domain name is refused with its field.
    pub fn new(config: &[UpdateKeyConfig]) -> Result<Self, (String, String)> {
        let absolute = |text: &str, field: String| {
            Name::from_ascii(text)
                .and_then(|name| name.append_domain(&Name::root()))
                .map(|name| name.to_lowercase())
                .map_err(|error| (field, error.to_string()))
        };
        let mut keys = Vec::with_capacity(config.len());
        for (k, key) in config.iter().enumerate() {
            let name = absolute(&key.name, format!("dns.update_keys[{k}].name"))?;
            let secret = data_encoding::BASE64
                .decode(key.secret.trim().as_bytes())
                .map_err(|error| (format!("dns.update_keys[{k}].secret"), error.to_string()))?;
            let zones = key
                .zones
                .iter()
                .enumerate()
                .map(|(z, zone)| absolute(zone, format!("dns.update_keys[{k}].zones[{z}]")))
                .collect::<Result<_, _>>()?;
            keys.push(UpdateKey {
                name,
                algorithm: match key.algorithm {
                    AlgorithmConfig::HmacSha256 => TsigAlgorithm::HmacSha256,
                    AlgorithmConfig::HmacSha384 => TsigAlgorithm::HmacSha384,
                    AlgorithmConfig::HmacSha512 => TsigAlgorithm::HmacSha512,
                },
                secret,
                zones,
            });
        }
        Ok(Self { keys })
    }

    /// Whether any key may change the zone at `apex`.
    pub fn any_for(&self, apex: &Name) -> bool {
        self.keys.iter().any(|key| key.zones.contains(apex))
    }
}

/// What a request's TSIG record makes of it.
pub enum Auth {
    /// Signed by a key that may change the zone: the response is signed with it.
    Signed(Signed),
    /// No TSIG record.
    Unsigned,
    /// NOTAUTH, with this TSIG record (RFC 8945 §5.2).
    Failed(Failure),
}

pub struct Signed {
    signer: TSigner,
    request_mac: Vec<u8>,
    /// The request's original ID.
    original_id: u16,
    /// Set for BADTIME: our clock, and the request's signing time the response echoes.
    bad_time: Option<(u64, u64)>,
}

pub enum Failure {
    /// BADTIME: signed, as a valid MAC allows.
    BadTime(Signed),
    /// BADKEY or BADSIG: the request's TSIG record without a MAC, with the error.
    Unsigned(Box<Record<TSIG>>),
}

impl Failure {
    pub fn error(&self) -> TsigError {
        match self {
            Self::BadTime(_) => TsigError::BadTime,
            Self::Unsigned(record) => record.data.error.unwrap_or(TsigError::BadKey),
        }
    }
}

/// Checks the TSIG record of `message` (read from `bytes`) for a change of the zone at `apex`,
/// at `now` (seconds since the epoch).
pub fn authenticate(
    keys: &UpdateKeys,
    apex: &Name,
    message: &Message,
    bytes: &[u8],
    now: u64,
) -> Auth {
    let Some(tsig) = message.signature() else {
        return Auth::Unsigned;
    };
    let failed = |error| {
        let mut record = tsig.clone();
        record.data.mac = Vec::new();
        record.data.other = Vec::new();
        record.data.error = Some(error);
        Auth::Failed(Failure::Unsigned(Box::new(record)))
    };
    let name = tsig.name.to_lowercase();
    let Some(key) = keys.keys.iter().find(|key| {
        key.name == name && key.algorithm == tsig.data.algorithm && key.zones.contains(apex)
    }) else {
        return failed(TsigError::BadKey);
    };
    let Ok(signer) = TSigner::new(
        key.secret.clone(),
        key.algorithm.clone(),
        key.name.clone(),
        FUDGE,
    ) else {
        return failed(TsigError::BadKey);
    };
    // hickory's verify_message_byte computes the time window without bounds: a time below the
    // fudge would overflow. The same steps, with the window computed here.
    let verified = signed_bitmessage_to_buf(bytes, None, true)
        .ok()
        .filter(|(tbv, record)| signer.verify(tbv, &record.data.mac).is_ok());
    if verified.is_none() {
        return failed(TsigError::BadSig);
    }
    let signed_at = tsig.data.time;
    let fudge = u64::from(tsig.data.fudge);
    let mut signed = Signed {
        signer,
        request_mac: tsig.data.mac.clone(),
        original_id: tsig.data.oid,
        bad_time: None,
    };
    if now.abs_diff(signed_at) > fudge {
        signed.bad_time = Some((now, signed_at));
        return Auth::Failed(Failure::BadTime(signed));
    }
    Auth::Signed(signed)
}

impl Signed {
    /// The TSIG record that signs `response` (its bytes without it), at `now`.
    pub fn sign(&self, response: &[u8], now: u64) -> Result<Box<Record<TSIG>>, ProtoError> {
        let (time, error, other) = match self.bad_time {
            // Our clock in Other Data (48 bits), the request's time echoed, as Knot does.
            Some((clock, signed_at)) => (
                signed_at,
                Some(TsigError::BadTime),
                clock.to_be_bytes()[2..].to_vec(),
            ),
            None => (now, None, Vec::new()),
        };
        let stub = TSIG::new(
            self.signer.algorithm().clone(),
            time,
            FUDGE,
            Vec::new(),
            self.original_id,
            error,
            other,
        );
        let tbs = self
            .signer
            .encode_response_tbs(&self.request_mac, response, &stub)?;
        let mac = self
            .signer
            .sign(&tbs)
            .map_err(|error| ProtoError::from(error.to_string()))?;
        Ok(Box::new(make_tsig_record(
            self.signer.signer_name().clone(),
            stub.set_mac(mac),
        )))
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{MessageType, OpCode, Query},
        rr::RecordType,
    };

    use super::*;

    const SECRET: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";

    fn keys() -> UpdateKeys {
        UpdateKeys::new(&[UpdateKeyConfig {
            name: "ddns-key".into(),
            algorithm: AlgorithmConfig::HmacSha256,
            secret: SECRET.into(),
            zones: vec!["example.com".into()],
        }])
        .unwrap()
    }

    /// An update of example.com signed by `key` with `secret` at `time`, as bytes.
    fn signed(key: &str, secret: &str, time: u64) -> Vec<u8> {
        let mut message = Message::new(9, MessageType::Query, OpCode::Update);
        message.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::SOA,
        ));
        let signer = TSigner::new(
            data_encoding::BASE64.decode(secret.as_bytes()).unwrap(),
            TsigAlgorithm::HmacSha256,
            Name::from_ascii(key).unwrap(),
            FUDGE,
        )
        .unwrap();
        message.finalize(&signer, time).unwrap();
        message.to_vec().unwrap()
    }

    fn check(bytes: &[u8], apex: &str, now: u64) -> Result<(), TsigError> {
        let message = Message::from_vec(bytes).unwrap();
        match authenticate(
            &keys(),
            &Name::from_ascii(apex).unwrap(),
            &message,
            bytes,
            now,
        ) {
            Auth::Signed(_) => Ok(()),
            Auth::Unsigned => panic!("signed"),
            Auth::Failed(failure) => Err(failure.error()),
        }
    }

    #[test]
    fn tsig_errors_are_those_rfc_8945_names() {
        let now = 1_800_000_000;
        assert_eq!(
            check(&signed("ddns-key.", SECRET, now), "example.com.", now),
            Ok(())
        );
        assert_eq!(
            check(&signed("DDNS-Key.", SECRET, now - 200), "example.com.", now),
            Ok(())
        );
        let other = "b3RoZXJvdGhlcm90aGVyb3RoZXJvdGhlcm90aGVyMTI=";
        assert_eq!(
            check(&signed("ddns-key.", other, now), "example.com.", now),
            Err(TsigError::BadSig)
        );
        assert_eq!(
            check(&signed("nokey.", SECRET, now), "example.com.", now),
            Err(TsigError::BadKey)
        );
        // A key that may not change the zone is, for that zone, unknown.
        assert_eq!(
            check(&signed("ddns-key.", SECRET, now), "example.org.", now),
            Err(TsigError::BadKey)
        );
        assert_eq!(
            check(&signed("ddns-key.", SECRET, now - 301), "example.com.", now),
            Err(TsigError::BadTime)
        );
        // A signing time below the fudge (near the epoch) is only late, not a crash.
        assert_eq!(
            check(&signed("ddns-key.", SECRET, 5), "example.com.", now),
            Err(TsigError::BadTime)
        );
        let mut unsigned = Message::new(9, MessageType::Query, OpCode::Update);
        unsigned.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::SOA,
        ));
        let bytes = unsigned.to_vec().unwrap();
        assert!(matches!(
            authenticate(
                &keys(),
                &Name::from_ascii("example.com.").unwrap(),
                &unsigned,
                &bytes,
                now
            ),
            Auth::Unsigned
        ));
    }
}
