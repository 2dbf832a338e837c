//! Blocks as IPFS names them: CIDv0 (dag-pb, sha2-256) or CIDv1 (raw or
//! dag-pb) over sha2-256 (IPFS's default) or blake3 (shoal's). One place
//! decides what such a CID is and whether bytes are the block it names:
//! the CAR import and the bitswap client and server all ask here.

use sha2::Digest;
use shoal_core::cid::{Cid, BLAKE3, DAG_PB, RAW};

use crate::{Error, Result};

/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// The digest of `data` under multihash `code` (blake3 or sha2-256).
fn digest(code: u64, data: &[u8]) -> Option<[u8; 32]> {
    match code {
        BLAKE3 => Some(*blake3::hash(data).as_bytes()),
        SHA2_256 => Some(sha2::Sha256::digest(data).into()),
        _ => None,
    }
}

/// Whether `c` is a CID of a UnixFS block this code can verify: raw or
/// dag-pb, blake3 or sha2-256 (32-byte digests), v0 or v1.
pub fn check(c: &Cid) -> Result<()> {
    if !matches!(c.codec(), RAW | DAG_PB) {
        return Err(Error::Invalid(format!(
            "{c}: codec {:#x} is neither raw nor dag-pb",
            c.codec()
        )));
    }
    let mh = c.hash();
    if !matches!(mh.code(), BLAKE3 | SHA2_256) || mh.size() != 32 {
        return Err(Error::Invalid(format!(
            "{c}: hash function {:#x} is neither blake3 nor sha2-256",
            mh.code()
        )));
    }
    Ok(())
}

/// Checks that `data` is the block `c` names.
pub fn verify(c: &Cid, data: &[u8]) -> Result<()> {
    check(c)?;
    match digest(c.hash().code(), data) {
        Some(d) if d[..] == c.hash().digest()[..] => Ok(()),
        _ => Err(Error::Invalid(format!(
            "{c}: its bytes do not hash to its CID (corrupt or tampered)"
        ))),
    }
}

/// The CID `data` has under a bitswap block prefix's version, codec and
/// hash function (`None` for an unverifiable hash or a bad combination;
/// any codec under v1, so shoal's DAG-CBOR blocks pass too):
/// what a block a peer sent really is, whatever it claims.
pub fn cid_for(version: u64, codec: u64, code: u64, data: &[u8]) -> Option<Cid> {
    let d = digest(code, data)?;
    let mh = multihash::Multihash::<64>::wrap(code, &d).ok()?;
    match version {
        0 if codec == DAG_PB && code == SHA2_256 => Cid::new_v0(mh).ok(),
        1 => Some(Cid::new_v1(codec, mh)),
        _ => None,
    }
}

/// Parses a CID given by a user or a peer and checks [`check`].
pub fn parse(s: &str) -> Result<Cid> {
    let c = Cid::try_from(s).map_err(|e| Error::Invalid(format!("{s:?} is not a CID: {e}")))?;
    check(&c)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_v0_v1_blake3_and_sha2() {
        let data = b"a block";
        for (v, codec, code) in [
            (0, DAG_PB, SHA2_256),
            (1, RAW, SHA2_256),
            (1, DAG_PB, BLAKE3),
            (1, RAW, BLAKE3),
        ] {
            let c = cid_for(v, codec, code, data).unwrap();
            verify(&c, data).unwrap();
            assert!(verify(&c, b"another block").is_err());
            assert_eq!(parse(&c.to_string()).unwrap(), c);
        }
        // v0 is dag-pb over sha2-256 only; other hashes are refused.
        assert!(cid_for(0, RAW, SHA2_256, data).is_none());
        assert!(cid_for(1, RAW, 0x13, data).is_none());
    }
}
