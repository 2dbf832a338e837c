// A helia node adds a Zarr directory and serves it over bitswap, for a
// shoal daemon to pin: with @helia/unixfs's defaults (CIDv1, raw leaves,
// sha2-256, 1 MiB chunks) or, with --v0-hamt, as kubo adds without
// --cid-version 1 (CIDv0, dag-pb leaves, 256 KiB chunks) and with every
// directory a HAMT shard. Dot-files are included (a Zarr v2 store's
// .zarray and .zattrs are dot-files).
//
// usage: node helia_serve.mjs DIR [--v0-hamt]
// Prints "addr MULTIADDR" and "root CID", then serves until stdin closes
// (the test's end) or 10 minutes pass.
import { globSource, unixfs } from '@helia/unixfs'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { bitswapHelia } from './helia_node.mjs'

const [dir, mode] = process.argv.slice(2)
const helia = await bitswapHelia()
const options = mode === '--v0-hamt'
  ? { cidVersion: 0, rawLeaves: false, chunker: fixedSize({ chunkSize: 262_144 }), shardSplitThresholdBytes: 1 }
  : {}
let root = null
for await (const entry of unixfs(helia).addAll(globSource(dir, '**/*', { hidden: true }), { ...options, wrapWithDirectory: true })) {
  root = entry.cid
}
console.log(`addr ${helia.libp2p.getMultiaddrs()[0]}`)
console.log(`root ${root}`)
const stop = async () => {
  await helia.stop()
  process.exit(0)
}
setTimeout(stop, 600_000)
process.stdin.on('end', stop)
process.stdin.on('close', stop)
process.stdin.resume()
