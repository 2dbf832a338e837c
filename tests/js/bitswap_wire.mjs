// What the raw bitswap test peers (bitswap_hostile.mjs, bitswap_liar.mjs)
// share: protobuf and frame encoding by hand (so they can send what no
// honest library would), a minimal decoder, and a plain js-libp2p node
// (TCP, noise, yamux, identify) with no bitswap of its own.
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'

export const PROTO = '/ipfs/bitswap/1.2.0'

export const varint = (n) => {
  const out = []
  while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n = Math.floor(n / 128) }
  out.push(n)
  return Uint8Array.from(out)
}
export const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}
export const field = (num, bytes) => cat(varint(num * 8 + 2), varint(bytes.length), bytes)
export const fieldInt = (num, v) => cat(varint(num * 8), varint(v))
export const frame = (body) => cat(varint(body.length), body)

// A varint at at.i (advanced past it), or null past the end.
export function readVarint (b, at) {
  let v = 0; let shift = 0
  for (;;) {
    if (at.i >= b.length) return null
    const x = b[at.i++]
    v += (x & 0x7f) * 2 ** shift
    if (x < 0x80) return v
    shift += 7
  }
}

// The whole length-prefixed messages at the start of b, and the bytes after
// them (a message not all come yet).
export function messages (b) {
  const out = []; const at = { i: 0 }
  for (;;) {
    const start = at.i
    const len = readVarint(b, at)
    if (len === null || at.i + len > b.length) return [out, b.subarray(start)]
    out.push(b.subarray(at.i, at.i + len))
    at.i += len
  }
}

// The length-delimited fields of a protobuf message, as [number, bytes].
export function fields (b) {
  const out = []; const at = { i: 0 }
  while (at.i < b.length) {
    const key = readVarint(b, at)
    if (key === null) break
    const wire = key & 7
    if (wire === 0) { readVarint(b, at); continue }
    if (wire !== 2) break
    const len = readVarint(b, at)
    out.push([Math.floor(key / 8), b.subarray(at.i, at.i + len)])
    at.i += len
  }
  return out
}

// A started js-libp2p node listening on loopback.
export async function rawPeer () {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  })
}

// Writes `bytes` on a stream and closes it (either js-libp2p stream API).
export async function sendOn (stream, bytes) {
  if (typeof stream.sink === 'function') {
    await stream.sink([bytes])
  } else {
    stream.send(bytes)
    await stream.close()
  }
}
