// A hostile bitswap peer (js-libp2p, raw streams on /ipfs/bitswap/1.2.0):
// an oversized frame, a 100,000-entry wantlist, a flood of wants for
// blocks nobody holds, blocks never asked for and blocks that do not match
// their prefix. Each attack on its own stream; the daemon must stay up
// (checked by the test) and answer an honest want afterwards, which this
// script checks last.
//
// usage: node bitswap_hostile.mjs MULTIADDR HELD_CID
// Prints one line per attack and "honest want answered" or exits non-zero.
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { PROTO, cat, field, fieldInt, fields, frame, messages, rawPeer, sendOn, varint } from './bitswap_wire.mjs'

const watchdog = setTimeout(() => {
  console.error('watchdog: no end within 150 s')
  process.exit(2)
}, 150_000)

const [addr, held] = process.argv.slice(2)
const entry = (cid, have) => field(1, cat(field(1, cid.bytes), fieldInt(2, 1), fieldInt(4, have ? 1 : 0), fieldInt(5, 1)))
const wantlist = (entries) => field(1, cat(...entries))

// The answers come on streams the daemon opens: the bytes of each.
const answers = []
const node = await rawPeer()
await node.handle(PROTO, async (stream) => {
  const s = stream.stream ?? stream
  const got = { bytes: new Uint8Array(0) }
  answers.push(got)
  for await (const chunk of s.source ?? s) {
    got.bytes = cat(got.bytes, chunk.subarray ? chunk.subarray() : chunk)
  }
}, { runOnLimitedConnection: true })
// Whether a stream's bytes hold a whole message carrying a block (field 3,
// payload): the flood's late DONT_HAVE answers do not count.
const hasBlock = (b) => messages(b)[0].some((msg) => fields(msg).some(([n]) => n === 3))
const ma = multiaddr(addr)
await node.dial(ma, { signal: AbortSignal.timeout(20_000) })

async function send (bytes) {
  const stream = await node.dialProtocol(ma, PROTO, { signal: AbortSignal.timeout(20_000) })
  try {
    await sendOn(stream, bytes)
  } catch (e) {
    return `reset (${e.name})`
  }
  return 'sent'
}

const randomCid = async (i) => CID.createV1(0x55, await sha256.digest(new TextEncoder().encode(`nobody holds ${i}`)))

// 1. A frame claiming 5 MiB.
console.log(`oversized: ${await send(cat(varint(5 << 20), new Uint8Array(1024)))}`)
// 2. 100,000 wants in one message (over 4 MiB: refused by length).
const many = []
for (let i = 0; i < 100_000; i++) many.push(entry(await randomCid(i), true))
console.log(`100k-entry wantlist: ${await send(frame(wantlist(many)))}`)
// 3. 1,025 wants: under the byte limit, over the entry limit.
console.log(`1025-entry wantlist: ${await send(frame(wantlist(many.slice(0, 1025))))}`)
// 4. A flood: 2,000 messages of 10 wants for blocks nobody holds.
const flood = []
for (let m = 0; m < 2000; m++) flood.push(frame(wantlist(many.slice(m * 10 % 90000, m * 10 % 90000 + 10))))
console.log(`flood of 2000 messages: ${await send(cat(...flood))}`)
// 5. Blocks never asked for, one of them not matching its prefix.
const data = new TextEncoder().encode('unasked block')
const prefix = cat(varint(1), varint(0x55), varint(0x12), varint(32))
const blocks = cat(field(3, cat(field(1, prefix), field(2, data))), field(3, cat(field(1, prefix), field(2, Uint8Array.from([1, 2, 3])))))
console.log(`unasked blocks: ${await send(frame(blocks))}`)
// 6. Garbage.
console.log(`garbage: ${await send(frame(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f])))}`)

// Last, an honest WantBlock for a block the daemon holds: its answer
// (a block payload, not one of the flood's DONT_HAVEs still coming in)
// must come.
await send(frame(wantlist([field(1, cat(field(1, CID.parse(held).bytes), fieldInt(2, 1), fieldInt(5, 1)))])))
const deadline = Date.now() + 60_000
while (Date.now() < deadline && !answers.some((a) => hasBlock(a.bytes))) {
  await new Promise((resolve) => setTimeout(resolve, 100))
}
if (!answers.some((a) => hasBlock(a.bytes))) {
  console.error('the honest want was never answered with its block')
  process.exit(1)
}
console.log('honest want answered')
clearTimeout(watchdog)
await node.stop()
process.exit(0)
