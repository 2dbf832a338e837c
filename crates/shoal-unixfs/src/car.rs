//! CAR v1: a varint-prefixed DAG-CBOR header `{roots: [CID], version: 1}`,
//! then sections `varint(len(cid) + len(block)) || cid || block`.
//!
//! The header is written by hand (it is fixed: a map of two keys in
//! length-first order, CIDs as tag 42 with a 0x00 prefix) so this crate
//! needs no CBOR library; the reader accepts what `ipfs-car` and kubo
//! write (any key order, one or more roots) and bounds every length.

use shoal_core::Cid;

use crate::pb::{read_varint, varint};
use crate::{Error, Result};

/// Largest header accepted.
pub const MAX_HEADER: usize = 1 << 16;
/// Largest section accepted (a block of 2 MiB, as kubo and bitswap allow,
/// plus its CID).
pub const MAX_SECTION: usize = (2 << 20) + 128;

fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

/// The header of a CAR with `roots`.
pub fn header(roots: &[Cid]) -> Vec<u8> {
    let mut h = Vec::new();
    cbor_head(&mut h, 5, 2); // map of 2
    cbor_head(&mut h, 3, 5);
    h.extend_from_slice(b"roots");
    cbor_head(&mut h, 4, roots.len() as u64);
    for r in roots {
        let b = r.to_bytes();
        h.extend([0xd8, 42]); // tag 42
        cbor_head(&mut h, 2, b.len() as u64 + 1);
        h.push(0);
        h.extend_from_slice(&b);
    }
    cbor_head(&mut h, 3, 7);
    h.extend_from_slice(b"version");
    cbor_head(&mut h, 0, 1);
    let mut out = Vec::with_capacity(h.len() + 4);
    varint(&mut out, h.len() as u64);
    out.extend_from_slice(&h);
    out
}

/// One section.
pub fn section(cid: &Cid, data: &[u8]) -> Vec<u8> {
    let c = cid.to_bytes();
    let mut out = Vec::with_capacity(c.len() + data.len() + 10);
    varint(&mut out, (c.len() + data.len()) as u64);
    out.extend_from_slice(&c);
    out.extend_from_slice(data);
    out
}

/// Reads a CAR v1 from `r`: the roots, then each (CID, block) in order,
/// unverified (callers verify every block against its CID before use).
pub struct Reader<R> {
    r: R,
    pub roots: Vec<Cid>,
    /// Bytes read so far: the offset of the next section.
    pub offset: u64,
}

fn read_varint_io(r: &mut impl std::io::Read, count: &mut u64) -> Result<Option<u64>> {
    let mut v = 0u64;
    for (i, shift) in (0..64).step_by(7).enumerate() {
        *count += 1;
        let mut b = [0u8];
        match r.read(&mut b) {
            Ok(0) if i == 0 => {
                *count -= 1;
                return Ok(None);
            }
            Ok(0) => return Err(Error::Malformed("the CAR ends inside a length".into())),
            Ok(_) => {}
            Err(e) => return Err(Error::Invalid(format!("reading the CAR: {e}"))),
        }
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] < 0x80 {
            return Ok(Some(v));
        }
    }
    Err(Error::Malformed("varint longer than 10 bytes".into()))
}

/// The CIDs (tag 42) inside a CBOR header, found by scanning for the tag:
/// enough for the header's `roots`, and no CBOR library.
fn header_roots(h: &[u8]) -> Result<Vec<Cid>> {
    let mut roots = Vec::new();
    let mut at = 0;
    while at + 2 < h.len() {
        if h[at] == 0xd8 && h[at + 1] == 42 {
            at += 2;
            let major = h.get(at).copied().unwrap_or(0);
            if major >> 5 != 2 {
                return Err(Error::Malformed("a tag-42 CID that is not bytes".into()));
            }
            let (len, skip) = match major & 0x1f {
                n @ 0..=23 => (usize::from(n), 1),
                24 => (usize::from(*h.get(at + 1).unwrap_or(&0)), 2),
                _ => return Err(Error::Malformed("a CID longer than 255 bytes".into())),
            };
            let body = h
                .get(at + skip..at + skip + len)
                .ok_or_else(|| Error::Malformed("truncated root CID".into()))?;
            let cid = body
                .strip_prefix(&[0])
                .and_then(|c| Cid::try_from(c).ok())
                .ok_or_else(|| Error::Malformed("a root that is not a CID".into()))?;
            roots.push(cid);
            at += skip + len;
        } else {
            at += 1;
        }
    }
    if !h.windows(7).any(|w| w == b"version") {
        return Err(Error::Malformed("a CAR header without a version".into()));
    }
    Ok(roots)
}

impl<R: std::io::Read> Reader<R> {
    pub fn new(mut r: R) -> Result<Self> {
        let mut offset = 0;
        let n = read_varint_io(&mut r, &mut offset)?
            .ok_or_else(|| Error::Malformed("an empty file is not a CAR".into()))? as usize;
        if n == 0 || n > MAX_HEADER {
            return Err(Error::Malformed(format!("a CAR header of {n} bytes")));
        }
        let mut h = vec![0u8; n];
        r.read_exact(&mut h)
            .map_err(|_| Error::Malformed("the CAR ends inside its header".into()))?;
        // {version: 2} marks CAR v2, whose v1 payload follows a pragma.
        if h.windows(8).any(|w| w == b"version\x02") {
            return Err(Error::Invalid(
                "CAR v2 is not supported; convert it with `ipfs-car` or use v1".into(),
            ));
        }
        let roots = header_roots(&h)?;
        Ok(Reader {
            r,
            roots,
            offset: offset + n as u64,
        })
    }

    /// The next section, or None at the end. The block's bytes start at
    /// `self.offset - block.len()` once this returns.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>> {
        let Some(n) = read_varint_io(&mut self.r, &mut self.offset)? else {
            return Ok(None);
        };
        let n = n as usize;
        if n == 0 || n > MAX_SECTION {
            return Err(Error::Malformed(format!("a CAR section of {n} bytes")));
        }
        let mut buf = vec![0u8; n];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| Error::Malformed("the CAR is truncated inside a block".into()))?;
        self.offset += n as u64;
        let end = if buf.starts_with(&[0x12, 0x20]) {
            // CIDv0: a bare sha2-256 multihash of 32 bytes.
            34
        } else {
            // CIDv1: version, codec, multihash code, digest length, digest.
            let mut at = 0;
            for _ in 0..3 {
                read_varint(&buf, &mut at)?;
            }
            let len = read_varint(&buf, &mut at)? as usize;
            at + len
        };
        if end > buf.len() {
            return Err(Error::Malformed("a section's CID runs past it".into()));
        }
        let cid = Cid::try_from(&buf[..end]).map_err(|e| Error::Malformed(format!("a section's CID: {e}")))?;
        buf.drain(..end);
        Ok(Some((cid, buf)))
    }
}
