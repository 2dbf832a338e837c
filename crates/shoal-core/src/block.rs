//! Verified blocks.
//!
//! Invariant: a [`Block`]'s bytes hash to its CID. The constructors either
//! hash the bytes ([`Block::raw`], [`Block::dag_cbor`]) or check them against
//! a claimed CID ([`Block::verified`]); there is no other way to build one.

use bytes::Bytes;

use crate::cid::{self, Cid};
use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    cid: Cid,
    data: Bytes,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("cid", &self.cid.to_string())
            .field("len", &self.data.len())
            .finish()
    }
}

impl Block {
    /// A raw data block; its CID is computed from the bytes.
    pub fn raw(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            cid: cid::cid_of(cid::RAW, &data),
            data,
        }
    }

    /// A DAG-CBOR block (manifest node); its CID is computed from the bytes.
    pub fn dag_cbor(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            cid: cid::cid_of(cid::DAG_CBOR, &data),
            data,
        }
    }

    /// Builds a block from a raw digest computed elsewhere (for example by a
    /// hashing thread pool). The caller vouches that `digest` is the blake3
    /// hash of `data`; only ingest code that just hashed the bytes uses this.
    pub fn from_digest(codec: u64, digest: &[u8; 32], data: Bytes) -> Self {
        Self {
            cid: cid::cid_from_digest(codec, digest),
            data,
        }
    }

    /// Accepts `data` as the block named `cid` only if it hashes to it and is
    /// within [`crate::MAX_BLOCK_SIZE`]. Use for every byte that comes from a
    /// disk or a peer.
    pub fn verified(cid: Cid, data: Bytes) -> Result<Self> {
        let max = crate::MAX_BLOCK_SIZE as usize;
        if data.len() > max {
            return Err(Error::BlockTooLarge {
                cid,
                len: data.len(),
                max,
            });
        }
        cid::verify(&cid, &data)?;
        Ok(Self { cid, data })
    }

    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn into_data(self) -> Bytes {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_accepts_only_matching_bytes() {
        let b = Block::raw(&b"abc"[..]);
        assert!(Block::verified(*b.cid(), Bytes::from_static(b"abc")).is_ok());
        assert!(Block::verified(*b.cid(), Bytes::from_static(b"abd")).is_err());
        // Same digest, other codec: still verifies the bytes (codec is not
        // part of the hash) but keeps the claimed codec.
        let d = Block::dag_cbor(&b"abc"[..]);
        assert_eq!(d.cid().hash(), b.cid().hash());
        assert_ne!(d.cid(), b.cid());
    }
}
