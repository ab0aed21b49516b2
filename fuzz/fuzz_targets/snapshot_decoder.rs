//! The resolver node's snapshot decoder on hostile bytes: whole snapshots (magic, version,
//! checksum) and bare payloads past the checksum. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qorgan_blocklists::wire::fuzz_decode(data);
});
