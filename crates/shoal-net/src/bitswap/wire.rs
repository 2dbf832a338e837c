//! The bitswap message (boxo's `message.proto`), hand-encoded: unsigned
//! varint length-prefixed protobuf frames of at most [`MAX_MESSAGE`] bytes.
//!
//! ```text
//! Message { Wantlist wantlist = 1; repeated bytes blocks = 2 (1.0.0);
//!           repeated Block payload = 3; repeated BlockPresence blockPresences = 4;
//!           int32 pendingBytes = 5; }
//! Wantlist { repeated Entry entries = 1; bool full = 2; }
//! Entry { bytes block = 1; int32 priority = 2; bool cancel = 3;
//!         WantType wantType = 4 (Block = 0, Have = 1); bool sendDontHave = 5; }
//! Block { bytes prefix = 1; bytes data = 2; }
//! BlockPresence { bytes cid = 1; BlockPresenceType type = 2 (Have = 0, DontHave = 1); }
//! ```
//!
//! Decoding is bounded: a frame longer than the limit, a field running
//! past its message, a varint over ten bytes or more wantlist entries than
//! [`MAX_WANTS`] are errors, never allocations. Unknown fields are skipped.

use bytes::Bytes;
use shoal_core::cid::DAG_PB;
use shoal_core::Cid;

pub use shoal_unixfs::ipfs::{cid_for, SHA2_256};

/// Largest frame read or written (helia and boxo use 4 MiB).
pub const MAX_MESSAGE: usize = 4 << 20;
/// Most wantlist entries one message may carry (helia sends at most 1,024).
pub const MAX_WANTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantType {
    Block,
    Have,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The wanted CID's bytes (decoded by the server: a bad one is skipped).
    pub cid: Vec<u8>,
    pub cancel: bool,
    pub kind: WantType,
    pub send_dont_have: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Have,
    DontHave,
}

/// A message as received or to send.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message {
    pub wants: Vec<Want>,
    pub full: bool,
    /// Blocks: the CID they were asked by and their bytes.
    pub blocks: Vec<(Cid, Bytes)>,
    pub presences: Vec<(Cid, Presence)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("bitswap message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("malformed bitswap message: {0}")]
    Malformed(&'static str),
    #[error("bitswap wantlist of over {MAX_WANTS} entries")]
    TooManyWants,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*at`; `None` past the end or over ten bytes.
pub fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn field(out: &mut Vec<u8>, num: u64, data: &[u8]) {
    put_varint(out, num << 3 | 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn field_varint(out: &mut Vec<u8>, num: u64, v: u64) {
    put_varint(out, num << 3);
    put_varint(out, v);
}

/// The CID prefix of bitswap 1.1+: version, codec, hash code and length.
fn prefix(cid: &Cid) -> Vec<u8> {
    let mut p = Vec::with_capacity(8);
    put_varint(&mut p, cid.version() as u64);
    put_varint(&mut p, cid.codec());
    put_varint(&mut p, cid.hash().code());
    put_varint(&mut p, u64::from(cid.hash().size()));
    p
}

/// Bytes of a block entry in an encoded message (for splitting replies).
pub fn block_cost(cid: &Cid, data: &[u8]) -> usize {
    data.len() + cid.encoded_len() + 32
}

impl Message {
    /// The protobuf body (no length prefix). `v100`: blocks in the 1.0.0
    /// field, without prefixes, and no presences (1.0.0 has none).
    pub fn encode(&self, v100: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.wants.is_empty() || self.full {
            let mut wl = Vec::new();
            for w in &self.wants {
                let mut e = Vec::new();
                field(&mut e, 1, &w.cid);
                field_varint(&mut e, 2, 1);
                if w.cancel {
                    field_varint(&mut e, 3, 1);
                }
                if w.kind == WantType::Have {
                    field_varint(&mut e, 4, 1);
                }
                if w.send_dont_have {
                    field_varint(&mut e, 5, 1);
                }
                field(&mut wl, 1, &e);
            }
            if self.full {
                field_varint(&mut wl, 2, 1);
            }
            field(&mut out, 1, &wl);
        }
        for (cid, data) in &self.blocks {
            if v100 {
                field(&mut out, 2, data);
            } else {
                let mut b = Vec::with_capacity(data.len() + 16);
                field(&mut b, 1, &prefix(cid));
                field(&mut b, 2, data);
                field(&mut out, 3, &b);
            }
        }
        if !v100 {
            for (cid, p) in &self.presences {
                let mut b = Vec::new();
                field(&mut b, 1, &cid.to_bytes());
                if *p == Presence::DontHave {
                    field_varint(&mut b, 2, 1);
                }
                field(&mut out, 4, &b);
            }
        }
        out
    }

    /// Decodes a message body. Blocks are returned with the CID their
    /// prefix and bytes make (the caller verifies them against what it
    /// asked); presences with their CIDs.
    pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
        Self::decode_with(buf, true).map(|(m, _)| m)
    }

    /// Decodes a message whose blocks will be dropped unread (nothing was
    /// asked for): they are counted, not hashed. Returns the count.
    pub fn decode_wants(buf: &[u8]) -> Result<(Message, usize), WireError> {
        Self::decode_with(buf, false)
    }

    fn decode_with(buf: &[u8], keep_blocks: bool) -> Result<(Message, usize), WireError> {
        if buf.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(buf.len()));
        }
        let mut m = Message::default();
        let mut skipped = 0;
        for_fields(buf, |num, val| {
            match (num, val) {
                (1, Val::Bytes(wl)) => for_fields(wl, |n, v| {
                    match (n, v) {
                        (1, Val::Bytes(e)) => {
                            if m.wants.len() >= MAX_WANTS {
                                return Err(WireError::TooManyWants);
                            }
                            m.wants.push(decode_want(e)?);
                        }
                        (2, Val::Varint(v)) => m.full = v != 0,
                        _ => {}
                    }
                    Ok(())
                })?,
                (2 | 3, Val::Bytes(_)) if !keep_blocks => skipped += 1,
                (2, Val::Bytes(data)) => {
                    // 1.0.0: raw bytes, the CID is sha2-256 dag-pb v0.
                    let cid = cid_for(0, DAG_PB, SHA2_256, data).ok_or(WireError::Malformed("block"))?;
                    m.blocks.push((cid, Bytes::copy_from_slice(data)));
                }
                (3, Val::Bytes(b)) => m.blocks.push(decode_block(b)?),
                (4, Val::Bytes(p)) => m.presences.push(decode_presence(p)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok((m, skipped))
    }
}

enum Val<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Calls `f` with every field of a protobuf message.
fn for_fields<'a>(buf: &'a [u8], mut f: impl FnMut(u64, Val<'a>) -> Result<(), WireError>) -> Result<(), WireError> {
    let mut at = 0;
    while at < buf.len() {
        let key = get_varint(buf, &mut at).ok_or(WireError::Malformed("field key"))?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = get_varint(buf, &mut at).ok_or(WireError::Malformed("varint"))?;
                f(num, Val::Varint(v))?;
            }
            2 => {
                let len = get_varint(buf, &mut at).ok_or(WireError::Malformed("length"))? as usize;
                let end = at.checked_add(len).filter(|e| *e <= buf.len());
                let end = end.ok_or(WireError::Malformed("field runs past the message"))?;
                f(num, Val::Bytes(&buf[at..end]))?;
                at = end;
            }
            1 => at += 8,
            5 => at += 4,
            _ => return Err(WireError::Malformed("wire type")),
        }
        if at > buf.len() {
            return Err(WireError::Malformed("field runs past the message"));
        }
    }
    Ok(())
}

fn decode_want(e: &[u8]) -> Result<Want, WireError> {
    let mut w = Want {
        cid: Vec::new(),
        cancel: false,
        kind: WantType::Block,
        send_dont_have: false,
    };
    for_fields(e, |n, v| {
        match (n, v) {
            (1, Val::Bytes(c)) => w.cid = c.to_vec(),
            (3, Val::Varint(v)) => w.cancel = v != 0,
            (4, Val::Varint(v)) => w.kind = if v == 1 { WantType::Have } else { WantType::Block },
            (5, Val::Varint(v)) => w.send_dont_have = v != 0,
            _ => {}
        }
        Ok(())
    })?;
    Ok(w)
}

fn decode_block(b: &[u8]) -> Result<(Cid, Bytes), WireError> {
    let (mut pre, mut data) = (None, None);
    for_fields(b, |n, v| {
        match (n, v) {
            (1, Val::Bytes(p)) => pre = Some(p),
            (2, Val::Bytes(d)) => data = Some(d),
            _ => {}
        }
        Ok(())
    })?;
    let (pre, data) = (pre.ok_or(WireError::Malformed("block prefix"))?, data.unwrap_or(&[]));
    let mut at = 0;
    let mut next = || get_varint(pre, &mut at).ok_or(WireError::Malformed("block prefix"));
    let (version, codec, code, _len) = (next()?, next()?, next()?, next()?);
    let cid = cid_for(version, codec, code, data).ok_or(WireError::Malformed("block hash"))?;
    Ok((cid, Bytes::copy_from_slice(data)))
}

fn decode_presence(p: &[u8]) -> Result<(Cid, Presence), WireError> {
    let (mut cid, mut kind) = (None, Presence::Have);
    for_fields(p, |n, v| {
        match (n, v) {
            (1, Val::Bytes(c)) => cid = Some(c),
            (2, Val::Varint(v)) => kind = if v == 1 { Presence::DontHave } else { Presence::Have },
            _ => {}
        }
        Ok(())
    })?;
    let cid = Cid::try_from(cid.ok_or(WireError::Malformed("presence CID"))?)
        .map_err(|_| WireError::Malformed("presence CID"))?;
    Ok((cid, kind))
}

/// A frame: the message's length as an unsigned varint, then the message.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(data: &[u8]) -> Cid {
        *shoal_core::Block::raw(data.to_vec()).cid()
    }

    #[test]
    fn a_message_survives_encoding_and_decoding() {
        let c = cid(b"hello");
        let m = Message {
            wants: vec![Want {
                cid: c.to_bytes(),
                cancel: false,
                kind: WantType::Have,
                send_dont_have: true,
            }],
            full: true,
            blocks: vec![(c, Bytes::from_static(b"hello"))],
            presences: vec![(c, Presence::DontHave), (c, Presence::Have)],
        };
        assert_eq!(Message::decode(&m.encode(false)).unwrap(), m);
        let (wants, skipped) = Message::decode_wants(&m.encode(false)).unwrap();
        assert_eq!(
            (wants.wants, wants.presences, wants.blocks.len(), skipped),
            (m.wants, m.presences, 0, 1)
        );
    }

    #[test]
    fn hostile_frames_are_refused_without_allocating() {
        // A length that runs past the message.
        assert!(Message::decode(&[0x0a, 0xff, 0xff, 0x03]).is_err());
        // An endless varint.
        let mut endless = vec![0x08];
        endless.extend([0xff; 20]);
        assert!(Message::decode(&endless).is_err());
        // Over the wantlist bound.
        let c = cid(b"x").to_bytes();
        let wants = (0..MAX_WANTS + 1)
            .map(|_| Want {
                cid: c.clone(),
                cancel: false,
                kind: WantType::Block,
                send_dont_have: false,
            })
            .collect();
        let big = Message {
            wants,
            ..Default::default()
        };
        assert_eq!(Message::decode(&big.encode(false)), Err(WireError::TooManyWants));
        // A block whose bytes do not hash to a known hash function.
        let mut b = Vec::new();
        field(&mut b, 1, &[1, 0x55, 0x99, 32]);
        field(&mut b, 2, b"data");
        let mut m = Vec::new();
        field(&mut m, 3, &b);
        assert!(Message::decode(&m).is_err());
    }
}
