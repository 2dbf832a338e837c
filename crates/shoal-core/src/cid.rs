//! Content identifiers: CIDv1 + blake3 multihash.
//!
//! shoal only ever creates CIDs with the blake3 multihash (code 0x1e, 32-byte
//! digest), and only accepts those: a CID with any other hash function could
//! not be verified, so it is refused at parse time rather than trusted later.

use crate::error::{Error, Result};

pub use ::cid::Cid;

/// Multicodec `raw`: the codec of data blocks (chunk bytes as stored).
pub const RAW: u64 = 0x55;
/// Multicodec `dag-cbor`: the codec of manifest nodes.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec `dag-pb`: the codec of UnixFS view nodes (directories,
/// multi-block files, HAMT shards) that IPFS tools walk.
pub const DAG_PB: u64 = 0x70;
/// Multihash code of blake3 with a 32-byte digest.
pub const BLAKE3: u64 = 0x1e;

/// The CID of `data` under `codec` (RAW, DAG_CBOR or DAG_PB).
pub fn cid_of(codec: u64, data: &[u8]) -> Cid {
    cid_from_digest(codec, blake3::hash(data).as_bytes())
}

/// Builds a CID from an already computed blake3 digest.
pub fn cid_from_digest(codec: u64, digest: &[u8; 32]) -> Cid {
    // `wrap` only fails for digests longer than the 64-byte multihash
    // capacity; 32 bytes always fits.
    let mh = multihash::Multihash::<64>::wrap(BLAKE3, digest).expect("32-byte digest fits");
    Cid::new_v1(codec, mh)
}

/// Checks that `cid` is a CIDv1 with the blake3 multihash and a codec shoal
/// understands, so that it can be verified.
pub fn check_supported(cid: &Cid) -> Result<()> {
    let code = cid.hash().code();
    if cid.version() != ::cid::Version::V1 || code != BLAKE3 || cid.hash().size() != 32 {
        return Err(Error::UnsupportedHash { cid: *cid, code });
    }
    match cid.codec() {
        RAW | DAG_CBOR | DAG_PB => Ok(()),
        codec => Err(Error::UnexpectedCodec {
            cid: *cid,
            codec,
            expected: "raw (0x55), dag-cbor (0x71) or dag-pb (0x70)",
        }),
    }
}

/// Parses a CID string (any multibase) and checks it is one shoal can verify.
pub fn parse(s: &str) -> Result<Cid> {
    let cid = Cid::try_from(s).map_err(|e| Error::InvalidCid {
        input: s.to_string(),
        reason: e.to_string(),
    })?;
    check_supported(&cid)?;
    Ok(cid)
}

/// Verifies that `data` hashes to `cid`.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<()> {
    check_supported(cid)?;
    let actual = cid_of(cid.codec(), data);
    if actual.hash() != cid.hash() {
        return Err(Error::HashMismatch { cid: *cid, actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_cid_prints_as_bafkr4i() {
        let cid = cid_of(RAW, b"hello");
        let s = cid.to_string();
        assert!(s.starts_with("bafkr4i"), "{s}");
        assert_eq!(parse(&s).unwrap(), cid);
        // Known blake3("hello") digest, so the CID is stable across versions.
        assert_eq!(
            hex(cid.hash().digest()),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
    }

    #[test]
    fn verify_detects_a_flipped_byte() {
        let cid = cid_of(RAW, b"hello world");
        verify(&cid, b"hello world").unwrap();
        let err = verify(&cid, b"hello worle").unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    }

    #[test]
    fn sha256_cids_are_refused() {
        // bafkreib... is raw + sha2-256, the kubo default.
        let err = parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").unwrap_err();
        assert!(matches!(err, Error::UnsupportedHash { .. }), "{err}");
        assert!(parse("not-a-cid").is_err());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
