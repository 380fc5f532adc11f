import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import SocketIO
import Synchronization

/// Serves the requests for sessions that another node holds, through ``EngineIOPeers``:
/// both halves of the exchange (``EngineIOPeerMessage``).
///
/// * **Requesting node** (the one the balancer picked): a poll or POST becomes a request
///   to the session's node and waits for its reply; a WebSocket upgrade is accepted here
///   and relayed — every frame from the client goes to the session's node, every frame
///   the session writes comes back. A request whose node stops being alive, or does not
///   answer within its timeout, is answered `Session ID unknown`; relayed sockets of such
///   a node are closed (1001), so the client reconnects.
/// * **Session's node**: carries the request out on the session (as if it had arrived
///   here) and replies; a relayed WebSocket is a socket of the session whose frames go
///   back through an ``EngineIOPeerSocketWriter``.
final class EngineIOForwarder: Sendable {
    let peers: any EngineIOPeers
    private let logger: Logger
    private let state = Mutex(State())

    struct State {
        var nextID: UInt64 = 0
        /// Requests of this node waiting for their reply.
        var pending: [UInt64: Pending] = [:]
        /// WebSockets this node relays to the node of their session, by `ws-open` id.
        var bridges: [UInt64: Bridge] = [:]
        /// Relayed sockets of this node's sessions, by requesting node and id.
        var relayed: [RelayKey: Relayed] = [:]
    }

    struct Pending {
        let node: String
        let deadline: ContinuousClock.Instant
        let continuation: CheckedContinuation<EngineIOReply.Response, Never>
    }

    struct Bridge {
        let node: String
        let writer: EngineIOSocketWriter
    }

    struct RelayKey: Hashable {
        let node: String
        let id: UInt64
    }

    struct Relayed {
        let host: EngineIOSessionHost
        let socket: EngineIOWebSocketID
    }

    init(peers: any EngineIOPeers, logger: Logger) {
        self.peers = peers
        self.logger = logger
    }

    /// Whether `sid` names another node (alive or not).
    func namesOtherNode(_ sid: String) -> Bool {
        EngineIOSessionID.node(of: sid).map { $0 != peers.localNode } ?? false
    }

    /// The node holding `sid` when that is another live node; nil otherwise (a local or
    /// unknown session, or one whose node is gone: `Session ID unknown`). A node not
    /// known to be alive is looked up once more first: it may have just started.
    func owner(of sid: String) async -> String? {
        guard let node = EngineIOSessionID.node(of: sid), node != peers.localNode else { return nil }
        if peers.isLive(node) { return node }
        await peers.refresh()
        return peers.isLive(node) ? node : nil
    }

    // MARK: - Requesting node

    /// Sends a request to `node` and waits for its reply, at most `timeout`.
    func forward(
        _ operation: EngineIOPeerMessage.Operation, sid: String, body: [UInt8] = [], to node: String, id: UInt64? = nil,
        timeout: Duration
    ) async -> EngineIOReply.Response {
        await withCheckedContinuation { continuation in
            let id = id ?? makeID()
            state.withLock {
                $0.pending[id] = Pending(node: node, deadline: .now + timeout, continuation: continuation)
            }
            peers.send(EngineIOPeerMessage.request(from: peers.localNode, id: id, operation: operation, sid: sid, body: body).encoded, to: node)
        }
    }

    private func makeID() -> UInt64 {
        state.withLock {
            $0.nextID += 1
            return $0.nextID
        }
    }

    /// Relays an upgraded WebSocket to the node of its session until either side closes.
    func relay(
        sid: String, to node: String, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, writer: EngineIOSocketWriter,
        maxPayload: Int
    ) async {
        let id = makeID()
        state.withLock { $0.bridges[id] = Bridge(node: node, writer: writer) }
        defer { _ = state.withLock { $0.bridges.removeValue(forKey: id) } }
        let opened = await forward(.webSocketOpen, sid: sid, to: node, id: id, timeout: Self.replyTimeout)
        guard opened == .body("ok") else {
            try? await outbound.close(.policyViolation, reason: EngineIOServerError.badRequest.json)
            return
        }
        var end = EngineIOPeerMessage.Operation.webSocketClosed
        do {
            for try await message in inbound.messages(maxSize: maxPayload) {
                let (operation, body): (EngineIOPeerMessage.Operation, [UInt8]) =
                    switch message {
                    case .text(let text): (.webSocketText, Array(text.utf8))
                    case .binary(let buffer): (.webSocketBinary, Array(buffer.readableBytesView))
                    }
                send(operation, sid: sid, id: id, body: body, to: node)
            }
        } catch {
            end = .webSocketTooLarge
        }
        send(end, sid: sid, id: id, body: [], to: node)
        if end == .webSocketTooLarge { writer.close(code: .messageTooLarge) }
    }

    private func send(_ operation: EngineIOPeerMessage.Operation, sid: String, id: UInt64, body: [UInt8], to node: String) {
        peers.send(EngineIOPeerMessage.request(from: peers.localNode, id: id, operation: operation, sid: sid, body: body).encoded, to: node)
    }

    /// Answers the requests whose node is no longer alive, or that waited too long, with
    /// `Session ID unknown`, and closes the relayed sockets of nodes that are gone. Call it
    /// every second or so.
    func expire() {
        let now = ContinuousClock.now
        let (expired, gone) = state.withLock { state -> ([Pending], [EngineIOSocketWriter]) in
            let expired = state.pending.filter { $0.value.deadline <= now || !peers.isLive($0.value.node) }
            for id in expired.keys { state.pending[id] = nil }
            let gone = state.bridges.values.filter { !peers.isLive($0.node) }.map(\.writer)
            return (Array(expired.values), gone)
        }
        for pending in expired { pending.continuation.resume(returning: .failure(.unknownSID)) }
        for writer in gone { writer.close(code: .goingAway, reason: nil) }
    }

    /// How long a POST, an upgrade or a `ws-open` may wait for the session's node.
    static let replyTimeout: Duration = .seconds(10)

    // MARK: - Both

    /// A message from another node.
    func receive(_ bytes: [UInt8], endpoint: EngineIOEndpoint) {
        guard let message = EngineIOPeerMessage(encoded: bytes) else {
            logger.warning("undecodable engine.io peer message ignored", metadata: ["bytes": "\(bytes.count)"])
            return
        }
        switch message {
        case .reply(let id, let response):
            state.withLock { $0.pending.removeValue(forKey: id) }?.continuation.resume(returning: response)
        case .frame(let id, let frame):
            state.withLock { $0.bridges[id]?.writer }?.write([frame])
        case .close(let id, let code):
            state.withLock { $0.bridges.removeValue(forKey: id)?.writer }?.close(code: WebSocketErrorCode(codeNumber: Int(code)), reason: nil)
        case .request(let from, let id, let operation, let sid, let body):
            serve(operation, sid: sid, body: body, from: from, id: id, endpoint: endpoint)
        }
    }

    // MARK: - Session's node

    private func serve(
        _ operation: EngineIOPeerMessage.Operation, sid: String, body: [UInt8], from node: String, id: UInt64, endpoint: EngineIOEndpoint
    ) {
        let key = RelayKey(node: node, id: id)
        let reply: @Sendable (EngineIOReply.Response) -> Void = { [peers] response in
            peers.send(EngineIOPeerMessage.reply(id: id, response: response).encoded, to: node)
        }
        switch operation {
        case .webSocketText, .webSocketBinary:
            guard let relayed = state.withLock({ $0.relayed[key] }) else { return }
            let frame: EngineIOFrame = operation == .webSocketText ? .text(String(decoding: body, as: UTF8.self)) : .binary(body)
            relayed.host.onLoop { $0.receive(frame, on: relayed.socket) }
            return
        case .webSocketClosed, .webSocketTooLarge:
            guard let relayed = state.withLock({ $0.relayed.removeValue(forKey: key) }) else { return }
            let reason: EngineIOCloseReason = operation == .webSocketClosed ? .transportClose : .payloadTooLarge
            relayed.host.onLoop { $0.webSocketClosed(relayed.socket, reason: reason) }
            return
        case .poll, .post, .postTooLarge, .webSocketOpen:
            break
        }
        guard let host = endpoint.host(sid) else { return reply(.failure(.unknownSID)) }
        // The requesting node checked everything but the session's transport.
        guard host.currentTransport == .polling else { return reply(.failure(.badRequest)) }
        switch operation {
        case .poll:
            let promise = host.eventLoop.makePromise(of: EngineIOReply.Response.self)
            promise.futureResult.whenComplete { reply((try? $0.get()) ?? .failure(.badRequest)) }
            host.onLoop { $0.poll(promise) }
        case .post, .postTooLarge:
            host.onLoop { host in
                var response = host.beginPost()
                if response == .pending { response = host.finishPost(operation == .post ? body : nil) }
                reply(response)
            }
        case .webSocketOpen:
            let socket = endpoint.makeSocketID(sid: sid)
            let writer = EngineIOPeerSocketWriter(peers: peers, node: node, id: id) { [weak self] in
                _ = self?.state.withLock { $0.relayed.removeValue(forKey: key) }
            }
            host.onLoop { [self] host in
                guard host.beginUpgrade(socket, writer: writer) else { return reply(.failure(.badRequest)) }
                state.withLock { $0.relayed[key] = Relayed(host: host, socket: socket) }
                reply(.body("ok"))
            }
        case .webSocketText, .webSocketBinary, .webSocketClosed, .webSocketTooLarge:
            break
        }
    }
}

/// A session's WebSocket that another node relays: frames go back to that node as `F`
/// messages, a close as `C`.
final class EngineIOPeerSocketWriter: EngineIOSocketSink {
    private let peers: any EngineIOPeers
    private let node: String
    private let id: UInt64
    private let closed = Atomic<Bool>(false)
    private let onClose: @Sendable () -> Void

    init(peers: any EngineIOPeers, node: String, id: UInt64, onClose: @escaping @Sendable () -> Void) {
        self.peers = peers
        self.node = node
        self.id = id
        self.onClose = onClose
    }

    func write(_ frames: [EngineIOFrame]) {
        guard !closed.load(ordering: .relaxed) else { return }
        for frame in frames { peers.send(EngineIOPeerMessage.frame(id: id, frame: frame).encoded, to: node) }
    }

    func write(frames: [WebSocketFrame]) {
        write(frames.map { frame in
            frame.opcode == .binary ? .binary(Array(frame.data.readableBytesView)) : .text(String(buffer: frame.data))
        })
    }

    func close(code: WebSocketErrorCode, reason: String?) {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        peers.send(EngineIOPeerMessage.close(id: id, code: UInt16(webSocketErrorCode: code)).encoded, to: node)
        onClose()
    }
}

extension UInt16 {
    init(webSocketErrorCode code: WebSocketErrorCode) {
        var buffer = ByteBuffer()
        buffer.write(webSocketErrorCode: code)
        self = buffer.readInteger(as: UInt16.self) ?? 1000
    }
}
