//! The two protobuf messages IPFS tools walk, by hand (they are small): the
//! dag-pb node (`PBNode { Links = 2, Data = 1 }`, links written before data
//! as the dag-pb spec requires; `PBLink { Hash = 1, Name = 2, Tsize = 3 }`)
//! and the UnixFS `Data` message inside it (`Type = 1, Data = 2, filesize =
//! 3, blocksizes = 4 (repeated, unpacked), hashType = 5, fanout = 6`).
//! Decoding is for untrusted bytes: every length is checked, unknown fields
//! are skipped, counts are bounded by the input size.

use shoal_core::Cid;

use crate::{Error, Result};

/// UnixFS `Type` values used here.
pub const DIRECTORY: u64 = 1;
pub const FILE: u64 = 2;
pub const RAW: u64 = 0;
pub const HAMT_SHARD: u64 = 5;
/// Multihash code of murmur3-x64-64, the HAMT's `hashType`.
pub const MURMUR3_X64_64: u64 = 0x22;

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn put_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads a varint at `*at`.
pub fn read_varint(b: &[u8], at: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or_else(|| Error::Malformed("truncated varint".into()))?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(Error::Malformed("varint longer than 10 bytes".into()))
}

/// One field of a message: (number, varint value or bytes).
enum Field<'a> {
    Varint(u64, u64),
    Bytes(u64, &'a [u8]),
    /// A fixed-width field (wire types 1 and 5): skipped.
    Fixed,
}

fn fields(b: &[u8]) -> impl Iterator<Item = Result<Field<'_>>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= b.len() {
            return None;
        }
        let r = (|| {
            let k = read_varint(b, &mut at)?;
            let (field, wire) = (k >> 3, k & 7);
            let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
                let end = at
                    .checked_add(n)
                    .filter(|e| *e <= b.len())
                    .ok_or_else(|| Error::Malformed("field runs past the end".into()))?;
                let v = &b[*at..end];
                *at = end;
                Ok(v)
            };
            Ok(match wire {
                0 => Field::Varint(field, read_varint(b, &mut at)?),
                2 => {
                    let n = read_varint(b, &mut at)? as usize;
                    Field::Bytes(field, take(&mut at, n)?)
                }
                1 => take(&mut at, 8).map(|_| Field::Fixed)?,
                5 => take(&mut at, 4).map(|_| Field::Fixed)?,
                w => return Err(Error::Malformed(format!("unknown wire type {w}"))),
            })
        })();
        if r.is_err() {
            at = b.len();
        }
        Some(r)
    })
}

/// A dag-pb link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub cid: Cid,
    pub name: String,
    /// Bytes of the linked subtree (its blocks' sizes, summed).
    pub tsize: u64,
}

/// Encodes a dag-pb node.
pub fn encode_node(links: &[Link], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + links.len() * 64 + 8);
    for l in links {
        let mut lb = Vec::with_capacity(l.name.len() + 48);
        put_bytes(&mut lb, 1, &l.cid.to_bytes());
        put_bytes(&mut lb, 2, l.name.as_bytes());
        put_varint(&mut lb, 3, l.tsize);
        put_bytes(&mut out, 2, &lb);
    }
    put_bytes(&mut out, 1, data);
    out
}

/// A decoded dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub links: Vec<Link>,
    pub data: Vec<u8>,
}

/// Decodes a dag-pb node from untrusted bytes.
pub fn decode_node(b: &[u8]) -> Result<Node> {
    let mut n = Node::default();
    for f in fields(b) {
        match f? {
            Field::Bytes(2, lb) => {
                let (mut cid, mut name, mut tsize) = (None, String::new(), 0);
                for lf in fields(lb) {
                    match lf? {
                        Field::Bytes(1, c) => {
                            cid = Some(Cid::try_from(c).map_err(|e| Error::Malformed(format!("bad link CID: {e}")))?)
                        }
                        Field::Bytes(2, s) => {
                            name = String::from_utf8(s.to_vec())
                                .map_err(|_| Error::Malformed("a link name is not UTF-8".into()))?
                        }
                        Field::Varint(3, v) => tsize = v,
                        _ => {}
                    }
                }
                let cid = cid.ok_or_else(|| Error::Malformed("a link without a CID".into()))?;
                n.links.push(Link { cid, name, tsize });
            }
            Field::Bytes(1, d) => n.data = d.to_vec(),
            _ => {}
        }
    }
    Ok(n)
}

/// The UnixFS `Data` message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnixFs {
    pub kind: u64,
    pub data: Vec<u8>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
    pub hash_type: Option<u64>,
    pub fanout: Option<u64>,
}

impl UnixFs {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 16 + self.blocksizes.len() * 4);
        put_varint(&mut out, 1, self.kind);
        if !self.data.is_empty() {
            put_bytes(&mut out, 2, &self.data);
        }
        if let Some(s) = self.filesize {
            put_varint(&mut out, 3, s);
        }
        for s in &self.blocksizes {
            put_varint(&mut out, 4, *s);
        }
        if let Some(h) = self.hash_type {
            put_varint(&mut out, 5, h);
        }
        if let Some(f) = self.fanout {
            put_varint(&mut out, 6, f);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<UnixFs> {
        let mut u = UnixFs::default();
        let mut typed = false;
        for f in fields(b) {
            match f? {
                Field::Varint(1, v) => {
                    u.kind = v;
                    typed = true;
                }
                Field::Bytes(2, d) => u.data = d.to_vec(),
                Field::Varint(3, v) => u.filesize = Some(v),
                Field::Varint(4, v) => u.blocksizes.push(v),
                Field::Bytes(4, packed) => {
                    let mut at = 0;
                    while at < packed.len() {
                        u.blocksizes.push(read_varint(packed, &mut at)?);
                    }
                }
                Field::Varint(5, v) => u.hash_type = Some(v),
                Field::Varint(6, v) => u.fanout = Some(v),
                _ => {}
            }
        }
        if !typed {
            return Err(Error::Malformed("UnixFS data without a Type".into()));
        }
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_round_trip_and_garbage_is_refused() {
        let cid = shoal_core::cid::cid_of(shoal_core::cid::RAW, b"x");
        let links = vec![
            Link {
                cid,
                name: "a".into(),
                tsize: 1,
            },
            Link {
                cid,
                name: "b".into(),
                tsize: 300,
            },
        ];
        let dir = UnixFs {
            kind: DIRECTORY,
            ..Default::default()
        };
        let b = encode_node(&links, &dir.encode());
        let n = decode_node(&b).unwrap();
        assert_eq!(n.links, links);
        assert_eq!(UnixFs::decode(&n.data).unwrap(), dir);
        // A directory's Data is exactly 08 01, as every IPFS implementation writes it.
        assert_eq!(dir.encode(), [0x08, 0x01]);
        let f = UnixFs {
            kind: FILE,
            filesize: Some(5),
            blocksizes: vec![3, 2],
            ..Default::default()
        };
        assert_eq!(UnixFs::decode(&f.encode()).unwrap(), f);
        for cut in 1..b.len() {
            let _ = decode_node(&b[..cut]); // never panics
        }
        assert!(decode_node(&[0x12, 0xff, 0x01]).is_err());
    }
}
