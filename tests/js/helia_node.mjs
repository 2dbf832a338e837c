// What the helia test clients share: the blake3 hasher helia verifies
// shoal's blocks with, a router that finds nothing (the tests name their
// providers; helia's fallback routers would search forever offline), and a
// helia node that fetches over bitswap only (Node.js: TCP, noise, yamux).
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { blake3 } from '@noble/hashes/blake3.js'
import { createHeliaLight } from 'helia'
import { from } from 'multiformats/hashes/hasher'

export const blake3Hasher = from({ name: 'blake3', code: 0x1e, encode: (b) => blake3(b) })
export const noRouter = { name: 'none', async * findProviders () {} }

// A started helia node with bitswap as its only block broker.
export async function bitswapHelia () {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ hashers: [blake3Hasher], routers: [noRouter] }), {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  }))
  await helia.start()
  return helia
}
