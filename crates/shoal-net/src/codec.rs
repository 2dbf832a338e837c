//! The block-exchange protocol `/shoal/blocks/1.0.0`.
//!
//! A request names up to [`MAX_CIDS_PER_REQUEST`] CIDs; the response gives,
//! for each, the bytes, "don't have", or "skipped" (left out because the
//! response reached [`MAX_RESPONSE_BYTES`]; ask again). Everything read from
//! the wire is bounded before it is allocated:
//!
//! ```text
//! request  := u8 rlen, rlen bytes (dataset root CID, 0 = none),
//!             u16 count, count × (u8 len, CID bytes)
//! response := u16 count, count × (u8 len, CID bytes, u8 tag [, u32 len, bytes])
//!             tag 0 = don't have, 1 = data, 2 = skipped
//! ```
//!
//! The codec does not verify block bytes (it does not know which CID the
//! caller trusts); the fetcher does, before anything is stored.

use std::io;

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use shoal_core::Cid;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/blocks/1.0.0");
/// CIDs per request: 16 blocks of 1 MiB is a 16 MiB response at most, enough
/// to keep a loopback or LAN link busy with a few requests in flight.
pub const MAX_CIDS_PER_REQUEST: usize = 64;
/// Bytes of block data a server puts in one response; the rest is skipped.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
const MAX_CID_LEN: usize = 80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRequest {
    /// The dataset the blocks belong to, as the requester says: the
    /// server's popularity accounting counts served blocks per dataset.
    /// Unverified (checking membership would cost a manifest walk); the
    /// server counts it only for datasets it holds, and a requester's
    /// influence is capped like any other source's.
    pub root: Option<Cid>,
    pub cids: Vec<Cid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    DontHave,
    Data(Bytes),
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockResponse {
    pub answers: Vec<(Cid, Answer)>,
}

#[derive(Debug, Clone, Default)]
pub struct BlockCodec;

pub(crate) fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn read_cid<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Cid> {
    let mut len = [0u8; 1];
    io.read_exact(&mut len).await?;
    let len = len[0] as usize;
    if len == 0 || len > MAX_CID_LEN {
        return Err(bad(format!("CID length {len} out of range")));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Cid::try_from(buf.as_slice()).map_err(|e| bad(format!("bad CID: {e}")))
}

async fn write_cid<T: AsyncWrite + Unpin>(io: &mut T, cid: &Cid) -> io::Result<()> {
    let b = cid.to_bytes();
    io.write_all(&[b.len() as u8]).await?;
    io.write_all(&b).await
}

async fn read_count<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<usize> {
    let mut n = [0u8; 2];
    io.read_exact(&mut n).await?;
    let n = u16::from_be_bytes(n) as usize;
    if n > MAX_CIDS_PER_REQUEST {
        return Err(bad(format!("{n} entries exceeds the limit of {MAX_CIDS_PER_REQUEST}")));
    }
    Ok(n)
}

#[async_trait::async_trait]
impl libp2p::request_response::Codec for BlockCodec {
    type Protocol = StreamProtocol;
    type Request = BlockRequest;
    type Response = BlockResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<BlockRequest> {
        let mut has_root = [0u8; 1];
        io.read_exact(&mut has_root).await?;
        let root = match has_root[0] {
            0 => None,
            1 => Some(read_cid(io).await?),
            t => return Err(bad(format!("unknown root tag {t}"))),
        };
        let n = read_count(io).await?;
        let mut cids = Vec::with_capacity(n);
        for _ in 0..n {
            cids.push(read_cid(io).await?);
        }
        Ok(BlockRequest { root, cids })
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<BlockResponse> {
        let n = read_count(io).await?;
        let mut answers = Vec::with_capacity(n);
        let mut total = 0usize;
        for _ in 0..n {
            let cid = read_cid(io).await?;
            let mut tag = [0u8; 1];
            io.read_exact(&mut tag).await?;
            let answer = match tag[0] {
                0 => Answer::DontHave,
                2 => Answer::Skipped,
                1 => {
                    let mut len = [0u8; 4];
                    io.read_exact(&mut len).await?;
                    let len = u32::from_be_bytes(len) as usize;
                    total += len;
                    if len > shoal_core::MAX_BLOCK_SIZE as usize
                        || total > MAX_RESPONSE_BYTES + shoal_core::MAX_BLOCK_SIZE as usize
                    {
                        return Err(bad(format!(
                            "block of {len} bytes (response total {total}) exceeds limits"
                        )));
                    }
                    let mut buf = vec![0u8; len];
                    io.read_exact(&mut buf).await?;
                    Answer::Data(Bytes::from(buf))
                }
                t => return Err(bad(format!("unknown answer tag {t}"))),
            };
            answers.push((cid, answer));
        }
        Ok(BlockResponse { answers })
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BlockRequest,
    ) -> io::Result<()> {
        if req.cids.len() > MAX_CIDS_PER_REQUEST {
            return Err(bad("too many CIDs in one request"));
        }
        match &req.root {
            None => io.write_all(&[0]).await?,
            Some(r) => {
                io.write_all(&[1]).await?;
                write_cid(io, r).await?;
            }
        }
        io.write_all(&(req.cids.len() as u16).to_be_bytes()).await?;
        for c in &req.cids {
            write_cid(io, c).await?;
        }
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: BlockResponse,
    ) -> io::Result<()> {
        io.write_all(&(resp.answers.len() as u16).to_be_bytes()).await?;
        for (cid, a) in &resp.answers {
            write_cid(io, cid).await?;
            match a {
                Answer::DontHave => io.write_all(&[0]).await?,
                Answer::Skipped => io.write_all(&[2]).await?,
                Answer::Data(d) => {
                    io.write_all(&[1]).await?;
                    io.write_all(&(d.len() as u32).to_be_bytes()).await?;
                    io.write_all(d).await?;
                }
            }
        }
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let cid = *shoal_core::Block::raw(&b"x"[..]).cid();
        let resp = BlockResponse {
            answers: vec![
                (cid, Answer::Data(Bytes::from_static(b"x"))),
                (cid, Answer::DontHave),
                (cid, Answer::Skipped),
            ],
        };
        let mut buf = futures::io::Cursor::new(Vec::new());
        BlockCodec
            .write_response(&PROTOCOL, &mut buf, resp.clone())
            .await
            .unwrap();
        let mut rd = futures::io::Cursor::new(buf.into_inner());
        assert_eq!(BlockCodec.read_response(&PROTOCOL, &mut rd).await.unwrap(), resp);

        // A count above the limit is refused before anything is allocated.
        let mut rd = futures::io::Cursor::new(vec![0, 0xff, 0xff]);
        assert!(BlockCodec.read_request(&PROTOCOL, &mut rd).await.is_err());
        // An unknown root tag is refused.
        let mut rd = futures::io::Cursor::new(vec![7, 0, 0]);
        assert!(BlockCodec.read_request(&PROTOCOL, &mut rd).await.is_err());
        // A request round-trips with and without its root.
        for root in [None, Some(cid)] {
            let req = BlockRequest {
                root,
                cids: vec![cid, cid],
            };
            let mut buf = futures::io::Cursor::new(Vec::new());
            BlockCodec
                .write_request(&PROTOCOL, &mut buf, req.clone())
                .await
                .unwrap();
            let mut rd = futures::io::Cursor::new(buf.into_inner());
            assert_eq!(BlockCodec.read_request(&PROTOCOL, &mut rd).await.unwrap(), req);
        }
        // A block length above the maximum is refused.
        let mut evil = vec![0, 1];
        evil.push(cid.to_bytes().len() as u8);
        evil.extend(cid.to_bytes());
        evil.push(1);
        evil.extend(u32::MAX.to_be_bytes());
        let mut rd = futures::io::Cursor::new(evil);
        assert!(BlockCodec.read_response(&PROTOCOL, &mut rd).await.is_err());
    }
}

/// The compute protocol: opaque, size-bounded request and response bodies
/// (the query engine defines their contents).
pub const COMPUTE_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/query/1.0.0");
/// Largest compute request (a spec and a chunk list).
pub const MAX_COMPUTE_REQUEST: usize = 1 << 20;
/// Largest compute response (partials).
pub const MAX_COMPUTE_RESPONSE: usize = 64 << 20;

#[derive(Debug, Clone, Default)]
pub struct ComputeCodec;

pub(crate) async fn read_body<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(bad(format!("message of {len} bytes exceeds the {max}-byte limit")));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

pub(crate) async fn write_body<T: AsyncWrite + Unpin>(io: &mut T, body: &[u8], max: usize) -> io::Result<()> {
    if body.len() > max {
        return Err(bad("message too large"));
    }
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

#[async_trait::async_trait]
impl libp2p::request_response::Codec for ComputeCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_body(io, MAX_COMPUTE_REQUEST).await
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_body(io, MAX_COMPUTE_RESPONSE).await
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_body(io, &req, MAX_COMPUTE_REQUEST).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Vec<u8>,
    ) -> io::Result<()> {
        write_body(io, &resp, MAX_COMPUTE_RESPONSE).await
    }
}
