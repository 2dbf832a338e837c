//! Fuzzing of what peers send (issue 24): the block and compute wire
//! codecs, name records and popularity reports, each fed arbitrary bytes
//! and mutations of valid messages. None may panic, allocate past its
//! bound or accept what its checks refuse. proptest runs them in CI
//! (`cargo test`) with a bounded case count; `SHOAL_FUZZ_CASES` raises it
//! for a longer local run.

#[path = "../../shoal-unixfs/tests/support/fuzzing.rs"]
mod fuzzing;

use futures::executor::block_on;
use futures::io::Cursor;
use fuzzing::{cases, mutate};
use libp2p::request_response::Codec;
use proptest::prelude::*;
use shoal_net::codec::{Answer, BlockCodec, BlockRequest, BlockResponse, ComputeCodec, PROTOCOL};
use shoal_net::{gossip, names};

fn cid(i: u8) -> shoal_core::Cid {
    shoal_core::cid::cid_of(shoal_core::cid::RAW, &[i])
}

/// A valid block request and response on the wire.
fn valid_block_messages() -> (Vec<u8>, Vec<u8>) {
    let mut c = BlockCodec;
    let mut req = Cursor::new(Vec::new());
    let r = BlockRequest {
        root: Some(cid(0)),
        cids: (1..5).map(cid).collect(),
    };
    block_on(c.write_request(&PROTOCOL, &mut req, r)).unwrap();
    let mut resp = Cursor::new(Vec::new());
    let answers = vec![
        (cid(1), Answer::Data(bytes::Bytes::from_static(&[1]))),
        (cid(2), Answer::DontHave),
        (cid(3), Answer::Skipped),
    ];
    block_on(c.write_response(&PROTOCOL, &mut resp, BlockResponse { answers })).unwrap();
    (req.into_inner(), resp.into_inner())
}

fn valid_record() -> Vec<u8> {
    let kp = libp2p::identity::Keypair::generate_ed25519();
    let root = shoal_core::cid::cid_of(shoal_core::cid::DAG_CBOR, b"root");
    names::NameRecord::new(kp.public().to_peer_id(), "sst", root, 7, 1000)
        .sign(&kp)
        .unwrap()
}

fn valid_report() -> Vec<u8> {
    gossip::Report {
        version: 1,
        every: 15,
        window: 600,
        spare: 1 << 30,
        counts: vec![(cid(1), 3, 1, 0)],
        targets: vec![(cid(2), 3, 100)],
        fetching: vec![cid(3)],
    }
    .encode()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn block_codec_reads_arbitrary_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut c = BlockCodec;
        let _ = block_on(c.read_request(&PROTOCOL, &mut Cursor::new(bytes.clone())));
        if let Ok(r) = block_on(c.read_response(&PROTOCOL, &mut Cursor::new(bytes))) {
            prop_assert!(r.answers.len() <= shoal_net::codec::MAX_CIDS_PER_REQUEST);
        }
    }

    #[test]
    fn block_codec_reads_mutated_messages_within_bounds(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let (req, resp) = valid_block_messages();
        let mut c = BlockCodec;
        if let Ok(r) = block_on(c.read_request(&PROTOCOL, &mut Cursor::new(mutate(req, &edits)))) {
            prop_assert!(r.cids.len() <= shoal_net::codec::MAX_CIDS_PER_REQUEST);
        }
        let _ = block_on(c.read_response(&PROTOCOL, &mut Cursor::new(mutate(resp, &edits))));
    }

    #[test]
    fn compute_codec_refuses_lengths_past_its_bound(len in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = len.to_be_bytes().to_vec();
        b.extend_from_slice(&tail);
        let mut c = ComputeCodec;
        if let Ok(body) = block_on(c.read_request(&shoal_net::codec::COMPUTE_PROTOCOL, &mut Cursor::new(b.clone()))) {
            prop_assert_eq!(body.len(), len as usize);
        }
        let _ = block_on(c.read_response(&shoal_net::codec::COMPUTE_PROTOCOL, &mut Cursor::new(b)));
    }

    #[test]
    fn name_records_from_arbitrary_or_mutated_bytes_never_verify_falsely(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let _ = names::verify(&bytes);
        let good = valid_record();
        let bad = mutate(good.clone(), &edits);
        if bad != good {
            if let Ok(r) = names::verify(&bad) {
                // A mutation that still verifies changed only encoding
                // details outside the signed record.
                prop_assert_eq!(r, names::verify(&good).unwrap());
            }
        }
    }

    #[test]
    fn gossip_reports_decode_within_bounds(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        for b in [bytes, mutate(valid_report(), &edits)] {
            if let Ok(r) = gossip::decode(&b) {
                prop_assert!(r.counts.len() <= gossip::MAX_COUNTS);
                prop_assert!(r.targets.len() <= gossip::MAX_TARGETS);
                prop_assert!(r.fetching.len() <= gossip::MAX_FETCHING);
                prop_assert!(r.targets.iter().all(|t| t.1 <= gossip::MAX_REPLICAS));
            }
        }
    }
}
