"""Seconds one TCP connection over 127.0.0.1 takes to move N bytes
(sender and receiver in two processes, 1 MiB writes): the loopback limit
the benchmarks print beside pin and gateway figures. With PROXY and
ONE_WAY_MS, the connection goes through that delay proxy
(crates/shoal-net/examples/delay_proxy.rs): the limit of one connection
at that round trip.

usage: loopback.py N [PROXY ONE_WAY_MS]
"""
import os
import socket
import subprocess
import sys
import time

n = int(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
proxy = None
target = ("127.0.0.1", port)
if len(sys.argv) > 3:
    proxy = subprocess.Popen(
        [sys.argv[2], "127.0.0.1:0", f"127.0.0.1:{port}", sys.argv[3]],
        stdout=subprocess.PIPE, text=True)
    host, p = proxy.stdout.readline().strip().rsplit(":", 1)
    target = (host, int(p))
buf = b"\0" * (1 << 20)
pid = os.fork()
if pid == 0:
    c = socket.create_connection(target)
    left = n
    while left > 0:
        left -= c.send(buf[: min(left, len(buf))])
    c.close()
    os._exit(0)
conn, _ = srv.accept()
t = time.time()
got = 0
while True:
    b = conn.recv(1 << 20)
    if not b:
        break
    got += len(b)
elapsed = time.time() - t
os.waitpid(pid, 0)
if proxy:
    proxy.kill()
assert got == n, (got, n)
print(f"{elapsed:.3f}")
