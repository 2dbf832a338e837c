// Fetches ipfs://CID/PATH through shoal's gateway with @helia/verified-fetch
// (which fetches one block per request with ?format=raw, verifies each
// against its CID with a blake3 hasher, and walks UnixFS itself: raw
// leaves, File nodes, HAMT shards) and compares the bytes with local files.
//
// usage: node helia_check.mjs GATEWAY CID PATH=FILE...
// Prints "ok N" or exits non-zero. A watchdog ends a stalled fetch.
import { readFile } from 'node:fs/promises'
import { withHTTP } from '@helia/http'
import { createVerifiedFetchWithHelia } from '@helia/verified-fetch'
import { createHeliaLight } from 'helia'
import { blake3Hasher, noRouter } from './helia_node.mjs'

const watchdog = setTimeout(() => {
  console.error('watchdog: no answer within 120 s')
  process.exit(2)
}, 120_000)

const [gateway, cid, ...pairs] = process.argv.slice(2)
// The gateway is the only source: no delegated routing, and a router that
// finds no providers.
const helia = withHTTP(createHeliaLight({ hashers: [blake3Hasher], routers: [noRouter] }), {
  delegatedRouters: [],
  recursiveGateways: [gateway],
  allowInsecure: true,
  allowLocal: true
})
await helia.start()
const vfetch = await createVerifiedFetchWithHelia(helia)
let n = 0
for (const pair of pairs) {
  const eq = pair.indexOf('=')
  const path = pair.slice(0, eq)
  const file = pair.slice(eq + 1)
  const res = await vfetch(`ipfs://${cid}/${path}`, { signal: AbortSignal.timeout(60_000) })
  if (res.status !== 200) {
    console.error(`${path}: status ${res.status}: ${await res.text()}`)
    process.exit(1)
  }
  const got = new Uint8Array(await res.arrayBuffer())
  const want = new Uint8Array(await readFile(file))
  if (got.length !== want.length || !got.every((b, i) => b === want[i])) {
    console.error(`${path}: ${got.length} bytes differ from ${file} (${want.length} bytes)`)
    process.exit(1)
  }
  n++
}
await vfetch.stop()
await helia.stop()
clearTimeout(watchdog)
console.log(`ok ${n}`)
