import Hummingbird
import SwitchboardCore

/// `/healthz` (process alive) and `/readyz` (503 while the broker is unreachable).
struct OperationsRoutes {
    let chat: ChatService

    func register(on router: Router<SwitchboardRequestContext>) {
        router.get("/healthz") { _, _ in
            Response.json(JSONValue.object(["status": .string("ok"), "node": .string(chat.nodeID)]).jsonBytes)
        }
        router.get("/readyz") { _, _ in
            let ready = chat.broker.isReady
            return Response.json(
                JSONValue.object(["ready": .bool(ready), "node": .string(chat.nodeID)]).jsonBytes,
                status: ready ? .ok : .serviceUnavailable)
        }
        router.get("/metrics") { _, _ in
            let text = chat.metrics.render(connections: chat.connectionsByTransport, ready: chat.broker.isReady, node: chat.nodeID)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        router.get("/cluster") { _, _ in
            let nodes = await chat.clusterNodes()
            let list: [JSONValue] = nodes.map { node in
                .object([
                    "id": .string(node.id),
                    "lastSeen": .int(node.lastSeen),
                    "connections": .object(node.connections.mapValues { .int(Int64($0)) }),
                    "total": .int(Int64(node.connections.values.reduce(0, +))),
                ])
            }
            return Response.json(
                JSONValue.object(["node": .string(chat.nodeID), "ready": .bool(chat.broker.isReady), "nodes": .array(list)]).jsonBytes)
        }
    }
}
