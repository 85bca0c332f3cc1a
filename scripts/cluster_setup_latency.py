# Call-setup latency, same node vs across nodes: `call` sent -> `invited` at the callee, and
# `accept` sent -> `accepted` at the caller, N times each, median and p95 in ms.
# Usage (two running dev nodes of one cluster; needs `pip install websockets`):
#   python3 scripts/cluster_setup_latency.py target/release/sfu ws://NODE_A/ws ws://NODE_B/ws 100
# With the same URL twice it measures one node (or a single, non-cluster server).
import asyncio, json, subprocess, sys, time, statistics
import websockets
SFU = sys.argv[1]; A = sys.argv[2]; B = sys.argv[3]; N = int(sys.argv[4])
def tok(u): return subprocess.check_output([SFU, "token", u, "--dev"]).decode().strip()
async def until(ws, pred):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if pred(m): return m
async def login(url, u):
    ws = await websockets.connect(url)
    import socket as _s
    ws.transport.get_extra_info('socket').setsockopt(_s.IPPROTO_TCP, _s.TCP_NODELAY, 1)
    await ws.send(json.dumps({"jsonrpc":"2.0","id":1,"method":"login","params":{"token":tok(u)}}))
    await until(ws, lambda m: m.get("id") == 1)
    return ws
async def run(caller_url, callee_url, tag):
    ring, acc = [], []
    for i in range(N):
        a = await login(caller_url, f"{tag}a{i}"); b = await login(callee_url, f"{tag}b{i}")
        t = time.perf_counter()
        await a.send(json.dumps({"jsonrpc":"2.0","id":2,"method":"call","params":{"to":[f"{tag}b{i}"],"media":"audio"}}))
        inv = await until(b, lambda m: m.get("method") == "invited"); ring.append((time.perf_counter()-t)*1000)
        t = time.perf_counter()
        await b.send(json.dumps({"jsonrpc":"2.0","id":2,"method":"accept","params":{"call_id":inv["params"]["call_id"]}}))
        await until(a, lambda m: m.get("method") == "accepted"); acc.append((time.perf_counter()-t)*1000)
        await a.send(json.dumps({"jsonrpc":"2.0","id":3,"method":"hangup","params":{"call_id":inv["params"]["call_id"]}}))
        await a.close(); await b.close()
    q = lambda v: (statistics.median(v), sorted(v)[int(len(v)*0.95)-1])
    print(f"{tag}: call->invited p50 {q(ring)[0]:.2f} ms p95 {q(ring)[1]:.2f} ms; accept->accepted p50 {q(acc)[0]:.2f} ms p95 {q(acc)[1]:.2f} ms (n={N})")
async def main():
    await run(A, A, "same"); await run(A, B, "cross")
asyncio.run(main())
