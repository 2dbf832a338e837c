// Benchmark client (bench/bitswap.sh): helia fetches every file of a
// dataset's UnixFS view and checks the bytes' total, either over bitswap
// from the daemon (dialled by multiaddr) or through the daemon's trustless
// gateway with @helia/verified-fetch (block by block, ?format=raw). Both
// verify every block with blake3. Prints the seconds taken.
//
// usage: node fetch_all.mjs bitswap MULTIADDR VIEW FILELIST
//        node fetch_all.mjs gateway URL VIEW FILELIST
// FILELIST: lines of "PATH SIZE".
import { readFile } from 'node:fs/promises'
import { withHTTP } from '@helia/http'
import { unixfs } from '@helia/unixfs'
import { createVerifiedFetchWithHelia } from '@helia/verified-fetch'
import { multiaddr } from '@multiformats/multiaddr'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import { bitswapHelia, blake3Hasher, noRouter } from './helia_node.mjs'

const [mode, where, view, list] = process.argv.slice(2)
const files = (await readFile(list, 'utf8')).trim().split('\n').map((l) => l.split(' ')).map(([p, s]) => [p, Number(s)])
let total = 0
const t0 = performance.now()
if (mode === 'bitswap') {
  const helia = await bitswapHelia()
  await helia.libp2p.dial(multiaddr(where))
  const fs = unixfs(helia)
  const root = CID.parse(view)
  await Promise.all(Array.from({ length: 8 }, async (_, w) => {
    for (let i = w; i < files.length; i += 8) {
      let n = 0
      for await (const c of fs.cat(root, { path: files[i][0] })) n += c.length
      if (n !== files[i][1]) console.error(`${files[i][0]}: ${n} of ${files[i][1]} bytes`)
      total += n
    }
  }))
  await helia.stop()
} else {
  const helia = withHTTP(createHeliaLight({ hashers: [blake3Hasher], routers: [noRouter] }), {
    delegatedRouters: [], recursiveGateways: [where], allowInsecure: true, allowLocal: true
  })
  await helia.start()
  const vfetch = await createVerifiedFetchWithHelia(helia)
  await Promise.all(Array.from({ length: 8 }, async (_, w) => {
    for (let i = w; i < files.length; i += 8) {
      const res = await vfetch(`ipfs://${view}/${files[i][0]}`)
      const n = (await res.arrayBuffer()).byteLength
      if (res.status !== 200 || n !== files[i][1]) console.error(`${files[i][0]}: status ${res.status}, ${n} of ${files[i][1]} bytes`)
      total += n
    }
  }))
  await helia.stop()
}
const want = files.reduce((a, f) => a + f[1], 0)
if (total !== want) {
  console.error(`got ${total} bytes, want ${want}`)
  process.exit(1)
}
console.log(((performance.now() - t0) / 1000).toFixed(3))
process.exit(0)
