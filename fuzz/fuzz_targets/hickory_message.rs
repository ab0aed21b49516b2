//! hickory-proto's message codec, as the resolver uses it: whatever parses must re-encode
//! to bytes that parse again (parse → encode → parse), and nothing may panic (RELIABILITY F1).
//! Equality of the two parses is not asserted: some records do not round-trip byte for byte.
#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(original) = Message::from_vec(data) else {
        return;
    };
    // An encode error is an answer the server does not send (it is handled), not a crash.
    let Ok(encoded) = original.to_vec() else {
        return;
    };
    let reparsed = match Message::from_vec(&encoded) {
        Ok(m) => m,
        Err(e) => panic!("re-encoded message does not parse: {e}\noriginal: {original:?}"),
    };
    assert_eq!(
        reparsed.metadata.id, original.metadata.id,
        "the id survives"
    );
    assert_eq!(
        reparsed.queries.len(),
        original.queries.len(),
        "the questions survive"
    );
});
