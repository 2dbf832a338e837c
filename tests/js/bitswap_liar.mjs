// A lying bitswap peer (js-libp2p, raw streams on /ipfs/bitswap/1.2.0):
// it answers every want with a block under the wanted CID's prefix whose
// bytes do not hash to it, adds a block nobody asked for, and never sends
// DontHave. A shoal pin that asks it must take nothing from it and get
// every block from an honest peer instead.
//
// usage: node bitswap_liar.mjs
// Prints "addr MULTIADDR", then "lies N" after each answer; serves until
// stdin closes or 5 minutes pass.
import { PROTO, cat, field, fields, frame, messages, rawPeer, readVarint, sendOn, varint } from './bitswap_wire.mjs'

// A CID's prefix (version, codec, hash code, digest length) from its bytes.
function prefixOf (cid) {
  if (cid[0] === 0x12 && cid[1] === 0x20) return cat(varint(0), varint(0x70), varint(0x12), varint(32))
  const at = { i: 0 }
  const v = readVarint(cid, at); const codec = readVarint(cid, at); const code = readVarint(cid, at); const len = readVarint(cid, at)
  return cat(varint(v), varint(codec), varint(code), varint(len))
}

const node = await rawPeer()
let lies = 0
await node.handle(PROTO, async (arg, conn) => {
  const s = arg.stream ?? arg
  const connection = arg.connection ?? conn
  let buf = new Uint8Array(0)
  for await (const chunk of s.source ?? s) {
    const [msgs, rest] = messages(cat(buf, chunk.subarray ? chunk.subarray() : chunk))
    buf = rest
    for (const msg of msgs) {
      const wants = []
      for (const [n, wl] of fields(msg)) {
        if (n !== 1) continue
        for (const [m, e] of fields(wl)) if (m === 1) wants.push(fields(e).find(([k]) => k === 1)[1])
      }
      if (wants.length === 0) continue
      const blocks = wants.map((cid) => field(3, cat(field(1, prefixOf(cid)), field(2, new TextEncoder().encode(`not the block ${lies++}`)))))
      const unasked = field(3, cat(field(1, cat(varint(1), varint(0x55), varint(0x12), varint(32))), field(2, new TextEncoder().encode(`unasked ${lies}`))))
      try {
        const out = await node.dialProtocol(connection.remotePeer, PROTO, { signal: AbortSignal.timeout(10_000) })
        const bytes = frame(cat(...blocks, unasked))
        await sendOn(out, bytes)
        console.log(`lies ${lies}`)
      } catch (e) {
        console.error(`cannot answer: ${e.name}: ${e.message}`)
      }
    }
  }
}, { runOnLimitedConnection: true })
console.log(`addr ${node.getMultiaddrs()[0]}`)
const stop = async () => { await node.stop(); process.exit(0) }
setTimeout(stop, 300_000)
process.stdin.on('end', stop)
process.stdin.on('close', stop)
process.stdin.resume()
