"""Live heap per connection by owner, from a heaptrack trace.

    heaptrack -o /tmp/ht switchboard serve …          # a node under heaptrack
    switchboard bench … --subscribers 3000 --duration 90   # connect, then stay idle
    kill -USR2 <node pid>                              # die while the connections are up
    heaptrack_print -f /tmp/ht.zst --flamegraph-cost-type leaked -F /tmp/ht.folded
    python3 scripts/heap_by_owner.py /tmp/ht.folded 3000 [category-prefix]

What the node still held when it died is its idle state; each allocation's stack is
charged to the first owner (from the allocation site up) that a rule below matches.
A third argument lists the biggest stacks of one category.
"""
import sys, re, collections
tot=collections.Counter(); N=int(sys.argv[2]); detail=collections.Counter()
rules=[
 ("NIO receive buffer (pooled per channel)", r"NIOPooledRecvBufferAllocator|BaseStreamSocketChannelC08readFrom"),
 ("NIO pending-writes queue", r"PendingStreamWrites|PendingWritesManager"),
 ("NIO pipeline (handler contexts)", r"ChannelHandlerContextC|ChannelPipelineC"),
 ("NIO socket channel", r"SocketChannelC6socket|SocketChannelC.*fC$|BaseSocketChannelC.*fc$"),
 ("codec handlers (WebSocket codec, HTTP decoder)", r"WebSocketFrameDecoder|WebSocketFrameEncoder|ByteToMessageHandler|WebSocketProtocolErrorHandler"),
 ("in-memory broker (presence entries, claims: in Redis with --redis)", r"MemoryBroker"),
 ("Hub (stream membership)", r"15SwitchboardCore3Hub"),
 ("session + chat maps (Session, Admission, claims, presence)", r"SwitchboardCore"),
 ("our connection (handler, Connection, sink, heartbeat)", r"SwitchboardServer"),
 ("Hummingbird / HTTP", r"Hummingbird|NIOAsyncChannel|HTTPServer|NIOHTTP1|HTTPTypes"),
 ("Swift concurrency (tasks)", r"swift_task|AsyncTask|swift_job"),
]
for line in open(sys.argv[1]):
    stack, _, cost = line.rstrip().rpartition(" ")
    try: cost=int(cost)
    except: continue
    frames=stack.split(";")
    hit=None
    for f in reversed(frames):
        for name, rx in rules:
            if re.search(rx, f): hit=name; break
        if hit: break
    hit = hit or "other (runtime, globals, caches)"
    tot[hit]+=cost
    if len(sys.argv)>3 and hit.startswith(sys.argv[3]):
        key=[f for f in frames if re.search(r"Switchboard|NIO", f)][-3:]
        detail[" <- ".join(x[:90] for x in reversed(key))]+=cost
all_=sum(tot.values())
for k,v in tot.most_common(): print(f"{v/N:8.0f} B/conn  {v/1024/1024:7.2f} MiB  {k}")
print(f"{all_/N:8.0f} B/conn  {all_/1024/1024:7.2f} MiB  total")
for k,v in detail.most_common(12): print(f"   {v/N:6.0f} {k}")
