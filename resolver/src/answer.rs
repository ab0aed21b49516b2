//! Synthesised answers: the block modes, the RFC 8914 Extended DNS Error, the response OPT.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The largest UDP answer we send, whatever the client offers (DNS Flag Day 2020, RFC 9715):
/// larger answers are truncated (TC=1) and the client retries over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// EDNS option code of an Extended DNS Error (RFC 8914 §2).
pub const EDE_OPTION_CODE: u16 = 15;

/// EDE INFO-CODE 15, "Blocked": the operator's policy blocked the name (RFC 8914 §4.16).
pub const EDE_BLOCKED: u16 = 15;

/// How a blocked name is answered (the account's `block_mode`, with its block page addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAnswer {
    /// NXDOMAIN.
    NxDomain,
    /// 0.0.0.0 for A, :: for AAAA, NODATA otherwise.
    NullIp,
    /// REFUSED.
    Refused,
    /// The block page's A/AAAA; NODATA for other types or a family without an address.
    CustomIp {
        /// The block page's IPv4 address, if any.
        v4: Option<Ipv4Addr>,
        /// The block page's IPv6 address, if any.
        v6: Option<Ipv6Addr>,
    },
}

/// A synthesised answer: rcode and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthesized {
    /// The response code.
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section (a SOA on negative answers, so downstream caches keep them `ttl` seconds).
    pub authorities: Vec<Record>,
}

/// Builds the answer to a blocked `qname`/`qtype` in `mode`, every record with TTL `ttl`.
pub fn blocked(mode: BlockAnswer, qname: &Name, qtype: RecordType, ttl: u32) -> Synthesized {
    let address = match (mode, qtype) {
        (BlockAnswer::NxDomain, _) => return negative(ResponseCode::NXDomain, qname, ttl),
        (BlockAnswer::Refused, _) => {
            return Synthesized {
                rcode: ResponseCode::Refused,
                answers: Vec::new(),
                authorities: Vec::new(),
            };
        }
        (BlockAnswer::NullIp, RecordType::A) => Some(RData::A(A(Ipv4Addr::UNSPECIFIED))),
        (BlockAnswer::NullIp, RecordType::AAAA) => Some(RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED))),
        (BlockAnswer::CustomIp { v4, .. }, RecordType::A) => v4.map(|ip| RData::A(A(ip))),
        (BlockAnswer::CustomIp { v6, .. }, RecordType::AAAA) => v6.map(|ip| RData::AAAA(AAAA(ip))),
        (BlockAnswer::NullIp | BlockAnswer::CustomIp { .. }, _) => None,
    };
    match address {
        Some(rdata) => Synthesized {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(qname.clone(), ttl, rdata)],
            authorities: Vec::new(),
        },
        None => negative(ResponseCode::NoError, qname, ttl),
    }
}

/// MNAME and RNAME of the synthesised SOA, parsed once. They name a zone that cannot exist
/// (RFC 6761 `.invalid`), so nobody mistakes them for the real zone's data; only the SOA's
/// timers matter to the cache that keeps the negative answer.
static SOA_NAMES: LazyLock<(Name, Name)> = LazyLock::new(|| {
    (
        Name::from_ascii("qorgan.invalid.").unwrap_or_else(|_| Name::root()),
        Name::from_ascii("blocked.qorgan.invalid.").unwrap_or_else(|_| Name::root()),
    )
});

/// NXDOMAIN or NODATA with a SOA whose MINIMUM and TTL are `ttl` (RFC 2308 §5).
fn negative(rcode: ResponseCode, qname: &Name, ttl: u32) -> Synthesized {
    let (mname, rname) = &*SOA_NAMES;
    let soa = SOA::new(mname.clone(), rname.clone(), 1, 1800, 900, 604_800, ttl);
    Synthesized {
        rcode,
        answers: Vec::new(),
        authorities: vec![Record::from_rdata(qname.clone(), ttl, RData::SOA(soa))],
    }
}

/// The OPT of our answer to a client that sent `request` EDNS: version 0, payload capped at
/// [`MAX_UDP_PAYLOAD`] (hickory-server encodes UDP answers to the response OPT's payload and sets
/// TC=1 above it; it echoes the client's value unless we lower it), and the DO bit copied from
/// the query (RFC 3225 §3).
pub fn response_edns(request: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_version(0);
    edns.set_max_payload(request.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    edns.set_dnssec_ok(request.flags().dnssec_ok);
    edns
}

/// Adds an Extended DNS Error "Blocked" with an optional extra text (UTF-8, not NUL-terminated).
/// hickory has no EDE type, so the option is raw: INFO-CODE as u16 big-endian, then the text.
pub fn add_blocked_ede(edns: &mut Edns, extra_text: &str) {
    let mut data = Vec::with_capacity(2 + extra_text.len());
    data.extend_from_slice(&EDE_BLOCKED.to_be_bytes());
    data.extend_from_slice(extra_text.as_bytes());
    edns.options_mut()
        .insert(EdnsOption::Unknown(EDE_OPTION_CODE, data));
}

/// Encodes hickory's answer into at most `max_size` bytes (TC=1 and fewer records above it):
/// what our UDP and TCP responders send (`MessageResponse::encode` is crate-private).
pub(crate) fn encode_response<'q, 'a, A, N, S, D>(
    response: hickory_server::zone_handler::MessageResponse<'q, 'a, A, N, S, D>,
    max_size: u16,
) -> Result<(Vec<u8>, hickory_server::server::ResponseInfo), hickory_net::NetError>
where
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = hickory_proto::serialize::binary::BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size);
    let info = response.destructive_emit(&mut encoder)?;
    // When the size cap truncated the answer, hickory leaves the bytes of the record that did
    // not fit after the ones the header counts: strict parsers reject such a message (and so
    // never see TC=1 and retry over TCP). Cut them off.
    if let Some(end) = counted_len(&bytes) {
        bytes.truncate(end);
    }
    Ok((bytes, info))
}

/// The length of `message` up to the end of the last record its header counts; `None` when
/// it does not parse that far.
fn counted_len(message: &[u8]) -> Option<usize> {
    let count =
        |i: usize| usize::from(u16::from_be_bytes([message[4 + 2 * i], message[5 + 2 * i]]));
    if message.len() < 12 {
        return None;
    }
    let mut pos = 12;
    for _ in 0..count(0) {
        pos = skip_name(message, pos)? + 4;
    }
    for _ in 0..count(1) + count(2) + count(3) {
        pos = skip_name(message, pos)?;
        let fixed = message.get(pos..pos + 10)?;
        pos += 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    }
    (pos <= message.len()).then_some(pos)
}

/// The offset just past the (possibly compressed) name at `pos`.
fn skip_name(message: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *message.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l if l & 0xc0 == 0 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::opt::EdnsCode;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    #[test]
    fn the_response_opt_copies_the_do_bit_and_caps_the_payload() {
        let mut request = Edns::new();
        request.set_max_payload(65_535);
        request.set_dnssec_ok(true);
        let edns = response_edns(&request);
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), MAX_UDP_PAYLOAD);
        request.set_dnssec_ok(false);
        assert!(!response_edns(&request).flags().dnssec_ok);
    }

    #[test]
    fn bytes_after_the_counted_records_are_found() {
        // id, QR TC, 1 question, 1 answer; `a.` A IN; answer: pointer, A IN, ttl, 4 bytes.
        let mut m = vec![0, 1, 0x82, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        let whole = m.len();
        // The start of a record that did not fit.
        m.extend_from_slice(&[
            2, b'n', b's', 7, b'i', b'n', b'v', b'a', b'l', b'i', b'd', 0, 0, 1,
        ]);
        assert_eq!(counted_len(&m), Some(whole));
        // A header that counts more than there is does not parse.
        m[7] = 2;
        assert_eq!(counted_len(&m[..whole]), None);
    }

    #[test]
    fn nxdomain_mode_answers_nxdomain_with_a_soa_carrying_the_block_ttl() {
        let s = blocked(
            BlockAnswer::NxDomain,
            &name("ads.example."),
            RecordType::A,
            300,
        );
        assert_eq!(s.rcode, ResponseCode::NXDomain);
        assert!(s.answers.is_empty());
        let RData::SOA(soa) = &s.authorities[0].data else {
            panic!("no soa")
        };
        assert_eq!((soa.minimum, s.authorities[0].ttl), (300, 300));
    }

    #[test]
    fn null_ip_mode_gives_unspecified_addresses_and_nodata_for_other_types() {
        let a = blocked(BlockAnswer::NullIp, &name("x.test."), RecordType::A, 60);
        assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(a.answers[0].ttl, 60);
        let aaaa = blocked(BlockAnswer::NullIp, &name("x.test."), RecordType::AAAA, 60);
        assert_eq!(
            aaaa.answers[0].data,
            RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED))
        );
        let mx = blocked(BlockAnswer::NullIp, &name("x.test."), RecordType::MX, 60);
        assert_eq!((mx.rcode, mx.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(mx.authorities.len(), 1);
    }

    #[test]
    fn custom_ip_mode_answers_the_configured_family_only() {
        let v4 = Ipv4Addr::new(192, 0, 2, 80);
        let mode = BlockAnswer::CustomIp {
            v4: Some(v4),
            v6: None,
        };
        let a = blocked(mode, &name("x.test."), RecordType::A, 60);
        assert_eq!(a.answers[0].data, RData::A(A(v4)));
        let aaaa = blocked(mode, &name("x.test."), RecordType::AAAA, 60);
        assert_eq!((aaaa.rcode, aaaa.answers.len()), (ResponseCode::NoError, 0));
    }

    #[test]
    fn refused_mode_answers_refused_without_records() {
        let s = blocked(BlockAnswer::Refused, &name("x.test."), RecordType::A, 60);
        assert_eq!(s.rcode, ResponseCode::Refused);
        assert!(s.answers.is_empty() && s.authorities.is_empty());
    }

    #[test]
    fn response_payload_is_capped_at_1232_and_never_below_512() {
        let mut req = Edns::new();
        req.set_max_payload(65_535);
        assert_eq!(response_edns(&req).max_payload(), MAX_UDP_PAYLOAD);
        req.set_max_payload(1000);
        assert_eq!(response_edns(&req).max_payload(), 1000);
        req.set_max_payload(100);
        assert_eq!(response_edns(&req).max_payload(), 512);
    }

    #[test]
    fn ede_option_is_code_15_with_info_code_15_and_the_text() {
        let mut edns = Edns::new();
        add_blocked_ede(&mut edns, "ads");
        let Some(EdnsOption::Unknown(code, data)) = edns.option(EdnsCode::from(EDE_OPTION_CODE))
        else {
            panic!("no ede option")
        };
        assert_eq!(*code, 15);
        assert_eq!(data.as_slice(), b"\x00\x0fads");
    }
}
