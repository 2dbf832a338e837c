// A helia node (Node.js: TCP, noise, yamux; bitswap only, no HTTP
// gateways, no routers) dials a shoal daemon by multiaddr and reads a
// dataset's UnixFS view over bitswap with @helia/unixfs: `ls` of the top,
// then `cat` of each given file, compared byte for byte with the local
// copy. Blocks are verified with blake3 (helia_node.mjs). Then it asks
// the daemon, as its only provider, for a block the daemon lacks: the
// daemon's DontHave must end the get before the watchdog, with an error
// that is not a timeout.
//
// usage: node helia_bitswap.mjs MULTIADDR VIEW_CID MISSING_CID PATH=FILE...
//        node helia_bitswap.mjs --expect-closed MULTIADDR VIEW_CID
// Prints "ok N" (or, with --expect-closed, "closed: ..." when the daemon
// let nothing through) or exits non-zero.
import { readFile } from 'node:fs/promises'
import { unixfs } from '@helia/unixfs'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { bitswapHelia } from './helia_node.mjs'

const watchdog = setTimeout(() => {
  console.error('watchdog: no answer within 120 s')
  process.exit(2)
}, 120_000)

const expectClosed = process.argv[2] === '--expect-closed'
const [addr, view, missing, ...pairs] = process.argv.slice(expectClosed ? 3 : 2)
const helia = await bitswapHelia()
const ma = multiaddr(addr)
if (expectClosed) {
  // A private swarm: the dial, or the first block over it, must fail.
  let how = null
  try {
    await helia.libp2p.dial(ma, { signal: AbortSignal.timeout(20_000) })
    const session = helia.blockstore.createSession(CID.parse(view), { providers: [ma], signal: AbortSignal.timeout(20_000) })
    for await (const c of session.get(CID.parse(view), { signal: AbortSignal.timeout(20_000) })) void c
  } catch (e) {
    how = `${e.name}: ${e.message}`
  }
  if (how === null) {
    console.error('a private daemon served a block to an IPFS node')
    process.exit(1)
  }
  console.log(`closed: ${how}`)
  clearTimeout(watchdog)
  process.exit(0)
}
await helia.libp2p.dial(ma, { signal: AbortSignal.timeout(20_000) })
const fs = unixfs(helia)
const root = CID.parse(view)
const names = []
for await (const entry of fs.ls(root, { signal: AbortSignal.timeout(60_000) })) {
  names.push(entry.name)
}
if (names.length === 0) {
  console.error('ls found nothing')
  process.exit(1)
}
let n = 0
for (const pair of pairs) {
  const eq = pair.indexOf('=')
  const path = pair.slice(0, eq)
  const file = pair.slice(eq + 1)
  const chunks = []
  for await (const c of fs.cat(root, { path, signal: AbortSignal.timeout(60_000) })) {
    chunks.push(c)
  }
  const got = Buffer.concat(chunks)
  const want = await readFile(file)
  if (!got.equals(want)) {
    console.error(`${path}: ${got.length} bytes differ from ${file} (${want.length} bytes)`)
    process.exit(1)
  }
  n++
}
// A block the daemon lacks, in a session whose only provider is the
// daemon: the session asks WantHave with sendDontHave, and the daemon's
// DontHave ends it (a server that never answers makes it wait for the
// signal's timeout).
let outcome = 'found'
try {
  const missingCid = CID.parse(missing)
  const session = helia.blockstore.createSession(missingCid, { providers: [ma], signal: AbortSignal.timeout(90_000) })
  let got = 0
  for await (const c of session.get(missingCid, { signal: AbortSignal.timeout(90_000) })) {
    got += c.length
  }
  outcome = `found (${got} bytes)`
} catch (e) {
  const inner = [e, ...(e.errors ?? [])]
  const timedOut = inner.some((x) => x?.name === 'AbortError' || x?.name === 'TimeoutError')
  outcome = timedOut ? `timed out (${e.name}: ${e.message})` : `refused (${e.name}: ${e.message})`
}
if (!outcome.startsWith('refused')) {
  console.error(`the missing block was ${outcome}, not refused by DontHave`)
  process.exit(1)
}
console.log(`ls ${names.join(',')}`)
console.log(`missing: ${outcome}`)
console.log(`ok ${n}`)
clearTimeout(watchdog)
await helia.stop()
process.exit(0)
