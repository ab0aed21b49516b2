//! The snapshot wire format: roundtrips, and rejection of every kind of damaged input; the
//! catalog's byte form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use crate::parse::{parse_text, FormatHint};
use crate::wire::{decode, encode, fuzz_decode, read_header, FORMAT_VERSION, HEADER_LEN};
use crate::{
    compile_dir, load_cached_catalog, store_catalog, AccountId, AccountWire, BlockMode,
    BlocklistError, Catalog, DomainSet, SnapshotWire,
};

const LABELS: &[&str] = &["a", "b", "ads", "x-y", "_t", "xn--p1ai", "0", "tracker"];
const CATEGORIES: &[&str] = &["ads", "adult", "gambling", "malware", "phishing", "x_1"];
const PATTERNS: &[&str] = &["||ads*.example^", "/^track[0-9]+\\./", "||cdn-*.b^"];
const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn own_list() -> impl Strategy<Value = DomainSet> {
    let rule = (
        prop::collection::vec(prop::sample::select(LABELS), 1..=4),
        prop::sample::select(vec!["||", "|", "||*.", ""]),
    )
        .prop_map(|(labels, prefix)| {
            let name = labels.join(".");
            match prefix {
                "" => name,
                p => format!("{p}{name}^"),
            }
        });
    (
        prop::collection::vec(rule, 0..30),
        prop::option::weighted(0.1, prop::sample::select(PATTERNS)),
    )
        .prop_map(|(rules, pattern)| {
            let mut text = rules.join("\n");
            if let Some(p) = pattern {
                text.push('\n');
                text.push_str(p);
            }
            let list = parse_text(&text, "own", FormatHint::Auto);
            DomainSet::from_rules(&list.rules, &list.patterns).unwrap()
        })
}

fn network() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(
            IpAddr::V4(Ipv4Addr::from(a)),
            p
        )
        .unwrap()),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, p)| IpNet::new(
            IpAddr::V6(Ipv6Addr::from(a)),
            p
        )
        .unwrap()),
    ]
}

fn block_mode() -> impl Strategy<Value = BlockMode> {
    prop_oneof![
        Just(BlockMode::Nxdomain),
        Just(BlockMode::NullIp),
        Just(BlockMode::Refused),
        (
            prop::option::of(any::<[u8; 4]>()),
            prop::option::of(any::<[u8; 16]>())
        )
            .prop_map(|(v4, v6)| BlockMode::CustomIp {
                v4: v4.map(Ipv4Addr::from),
                v6: v6.map(Ipv6Addr::from),
            }),
    ]
}

fn account() -> impl Strategy<Value = AccountWire> {
    (
        any::<bool>(),
        prop::collection::vec(network(), 0..4),
        prop::collection::vec(prop::sample::select(CATEGORIES), 0..4),
        block_mode(),
        own_list(),
        own_list(),
        any::<u32>(),
    )
        .prop_map(
            |(enabled, networks, categories, block_mode, own_block, own_allow, qps_limit)| {
                AccountWire {
                    id: AccountId(0),
                    enabled,
                    networks,
                    categories: categories.into_iter().map(str::to_owned).collect(),
                    block_mode,
                    own_block,
                    own_allow,
                    qps_limit,
                }
            },
        )
}

fn snapshot() -> impl Strategy<Value = SnapshotWire> {
    (
        any::<u64>(),
        any::<bool>(),
        prop::collection::vec((any::<u64>(), account()), 0..6),
    )
        .prop_map(|(generation, with_hash, accounts)| {
            let mut seen = std::collections::HashSet::new();
            SnapshotWire {
                generation,
                catalog_hash: if with_hash {
                    HASH.into()
                } else {
                    String::new()
                },
                accounts: accounts
                    .into_iter()
                    .filter(|(id, _)| seen.insert(*id))
                    .map(|(id, mut a)| {
                        a.id = AccountId(id);
                        a
                    })
                    .collect(),
            }
        })
}

/// A fixed snapshot with every feature: both families, custom_ip, patterns, both lists.
fn sample() -> SnapshotWire {
    let block = parse_text(
        "||ads.example^\n|exact.example^\n||*.sub.example^\n||ads*.example^\n@@||ok.ads.example^\n",
        "block",
        FormatHint::Auto,
    );
    let allow = parse_text("||fine.example^\n", "allow", FormatHint::Auto);
    let (own_block, own_allow) = crate::build_own_sets(
        (&block.rules, &block.patterns),
        (&allow.rules, &allow.patterns),
    )
    .unwrap();
    SnapshotWire {
        generation: 42,
        catalog_hash: HASH.into(),
        accounts: vec![
            AccountWire {
                id: AccountId(1),
                enabled: true,
                networks: vec![
                    "127.0.0.0/8".parse().unwrap(),
                    "2001:db8::/32".parse().unwrap(),
                ],
                categories: vec!["ads".into(), "malware".into()],
                block_mode: BlockMode::CustomIp {
                    v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
                    v6: None,
                },
                own_block,
                own_allow,
                qps_limit: 500,
            },
            AccountWire {
                id: AccountId(2),
                enabled: false,
                networks: vec!["10.1.0.0/16".parse().unwrap()],
                categories: vec![],
                block_mode: BlockMode::Refused,
                own_block: DomainSet::default(),
                own_allow: DomainSet::default(),
                qps_limit: 0,
            },
        ],
    }
}

/// Wraps `payload` in a valid header with a correct checksum: reaches the payload parser.
fn seal(generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"QORGSNAP");
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut h = Sha256::new();
    h.update(&out[..32]);
    h.update(payload);
    out.extend_from_slice(&h.finalize());
    out.extend_from_slice(payload);
    out
}

fn reason(e: BlocklistError) -> String {
    match e {
        BlocklistError::Wire { reason, .. } => reason,
        other => panic!("not a wire error: {other}"),
    }
}

#[test]
fn sample_roundtrips_and_decoded_lists_match_the_same_names() {
    let s = sample();
    let bytes = encode(&s);
    let back = decode(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(encode(&back), bytes, "encoding is deterministic");
    let a = &back.accounts[0];
    for (name, blocked) in [
        ("ads.example", true),
        ("x.ads.example", true),
        ("exact.example", true),
        ("a.exact.example", false),
        ("sub.example", false),
        ("a.sub.example", true),
        ("ads42.example", true),
        ("other.example", false),
    ] {
        assert_eq!(
            a.own_block.covers_dotted(name.as_bytes()),
            blocked,
            "{name}"
        );
    }
    assert!(a.own_allow.covers_dotted(b"ok.ads.example"));
    assert!(a.own_allow.covers_dotted(b"x.fine.example"));
    assert_eq!(a.own_block.patterns(), s.accounts[0].own_block.patterns());
    assert_eq!(read_header(&bytes).unwrap().generation, 42);
}

#[test]
fn every_truncation_is_rejected() {
    let bytes = encode(&sample());
    for len in 0..bytes.len() {
        assert!(
            decode(&bytes[..len]).is_err(),
            "accepted {len} of {} bytes",
            bytes.len()
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(reason(decode(&longer).unwrap_err()).contains("after the"));
    assert!(reason(decode(&bytes[..HEADER_LEN + 3]).unwrap_err()).contains("truncated payload"));
    assert!(reason(decode(&bytes[..10]).unwrap_err()).contains("truncated header"));
}

#[test]
fn wrong_magic_version_and_reserved_bytes_are_named() {
    let bytes = encode(&sample());
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(reason(decode(&bad).unwrap_err()).contains("magic"));
    let mut bad = bytes.clone();
    bad[8] = 9;
    assert!(reason(decode(&bad).unwrap_err()).contains("format version 9"));
    let mut bad = bytes;
    bad[13] = 1;
    assert!(reason(decode(&bad).unwrap_err()).contains("reserved"));
}

#[test]
fn a_flipped_generation_fails_the_checksum() {
    let mut bytes = encode(&sample());
    bytes[16] ^= 1;
    assert!(reason(decode(&bytes).unwrap_err()).contains("checksum"));
}

#[test]
fn oversized_counts_are_rejected_before_allocating() {
    // A valid checksum around an account count of 4 billion in a tiny payload.
    let mut payload = vec![0u8]; // empty catalog hash
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    let e = reason(decode(&seal(1, &payload)).unwrap_err());
    assert!(e.contains("cannot fit"), "{e}");
    // The same inside an own list: one account whose block list claims 4 billion names.
    let mut payload = vec![0u8];
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&7u64.to_le_bytes()); // id
    payload.push(1); // enabled
    payload.extend_from_slice(&0u32.to_le_bytes()); // networks
    payload.extend_from_slice(&0u32.to_le_bytes()); // categories
    payload.push(0); // nxdomain
    payload.extend_from_slice(&u32::MAX.to_le_bytes()); // own block names
    payload.extend_from_slice(&[0u8; 12]);
    let e = reason(decode(&seal(1, &payload)).unwrap_err());
    assert!(e.contains("cannot fit"), "{e}");
}

#[test]
fn bad_payload_values_are_rejected_with_their_reason() {
    let good = encode(&sample());
    let payload = &good[HEADER_LEN..];
    // A duplicate account: the same account twice.
    let mut s = sample();
    s.accounts[1].id = AccountId(1);
    let e = reason(decode(&encode(&s)).unwrap_err());
    assert!(e.contains("account 1 appears twice"), "{e}");
    // A category name that is none.
    let mut s = sample();
    s.accounts[0].categories = vec!["Not/A/Name".into()];
    assert!(reason(decode(&encode(&s)).unwrap_err()).contains("not a category name"));
    // A catalog hash that could be a path.
    let mut s = sample();
    s.catalog_hash = "../../etc/passwd".into();
    assert!(reason(decode(&encode(&s)).unwrap_err()).contains("catalog hash"));
    // Trailing bytes inside a correctly sealed payload.
    let mut p = payload.to_vec();
    p.push(0);
    assert!(reason(decode(&seal(42, &p)).unwrap_err()).contains("trailing"));
}

#[test]
fn catalog_bytes_roundtrip_and_store_for_a_restart() {
    let lists = tempfile::tempdir().unwrap();
    let p = lists.path().join("ads");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("l.txt"), "||ads.example^\n||track*.example^\n").unwrap();
    let (catalog, _) = compile_dir(lists.path()).unwrap();
    let bytes = catalog.to_bytes();
    let back = Catalog::from_bytes(bytes.clone()).unwrap();
    assert_eq!(back.hash(), catalog.hash());
    assert_eq!(back.len(), catalog.len());
    assert_eq!(back.patterns(), catalog.patterns());
    assert_eq!(back.categories(), catalog.categories());

    let cache = tempfile::tempdir().unwrap();
    let stored = store_catalog(cache.path(), &bytes).unwrap();
    assert!(stored.is_mapped());
    let again = load_cached_catalog(cache.path(), catalog.hash()).unwrap();
    assert_eq!(again.len(), catalog.len());
    assert!(load_cached_catalog(cache.path(), "../x").is_err());

    for i in [0, 20, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(Catalog::from_bytes(bad).is_err(), "flip at {i} accepted");
    }
    assert!(Catalog::from_bytes(bytes[..bytes.len() - 1].to_vec()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_tables_roundtrip(s in snapshot()) {
        let bytes = encode(&s);
        let back = decode(&bytes).unwrap();
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(encode(&back), bytes);
    }

    #[test]
    fn single_byte_flips_are_rejected(s in snapshot(), at in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut bytes = encode(&s);
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        prop_assert!(decode(&bytes).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzz_decode(&data);
        // Behind a valid header and checksum, so the payload parser sees them too.
        let _ = decode(&seal(1, &data));
    }

    #[test]
    fn resealed_mutations_of_a_valid_payload_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let good = encode(&sample());
        let mut payload = good[HEADER_LEN..].to_vec();
        for (at, b) in edits {
            let i = at.index(payload.len());
            payload[i] = b;
        }
        payload.truncate(cut.index(payload.len() + 1));
        if let Ok(s) = decode(&seal(9, &payload)) {
            // Whatever was accepted is a valid snapshot: it encodes back to the same bytes.
            prop_assert_eq!(encode(&s), seal(9, &payload));
        }
    }
}

/// Rewrites the snapshot decoder's fuzz seeds from [`sample`] (run by hand after a format
/// change: `cargo test -p qorgan-blocklists --lib write_fuzz_seeds -- --ignored`).
#[test]
#[ignore = "writes fuzz/corpus/snapshot_decoder"]
fn write_fuzz_seeds() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/snapshot_decoder");
    let bytes = encode(&sample());
    std::fs::write(dir.join("two_accounts.qsnap"), &bytes).unwrap();
    std::fs::write(dir.join("two_accounts.payload"), &bytes[HEADER_LEN..]).unwrap();
    assert_eq!(decode(&bytes).unwrap(), sample());
}
