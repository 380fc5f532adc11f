import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import Synchronization

/// A native WebSocket (`/ws`) after its upgrade, driven by events on its event loop: a
/// plain NIO handler with no Swift task, async sequence or writer per connection — an
/// idle socket costs its channel, this handler and its `WebSocketConnection`. Tasks
/// exist only while something is in flight: the opening (`chat.open`), one client event
/// at a time (`chat.handle`), the close.
///
/// Inbound: text messages (fragments joined, at most `maxMessageBytes`) are client events,
/// handled one after the other in order; binary messages are answered with an error;
/// pings are answered; a close is echoed and the connection ends. Outbound frames from the
/// Hub go through `WebSocketConnection` (gate, backpressure, slow-consumer close).
final class NativeWebSocketHandler: ChannelInboundHandler, RemovableChannelHandler, HeartbeatMember {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// What every native socket of a server shares (one object, not a copy per socket).
    final class Shared: Sendable {
        let chat: ChatService
        let maxMessageBytes: Int
        let maxQueuedFrames: Int
        let pingInterval: Duration
        let eventLimits: ClientEventLimits
        let logger: Logger

        init(chat: ChatService, configuration: ServerConfiguration, logger: Logger) {
            self.chat = chat
            self.maxMessageBytes = configuration.maxMessageBytes
            self.maxQueuedFrames = configuration.maxQueuedFrames
            self.pingInterval = configuration.pingInterval
            self.eventLimits = configuration.chat.eventLimits
            self.logger = logger
        }
    }

    /// The validated opening, until the session is open (then only the session is kept).
    private final class PendingOpening {
        let value: WebSocketTransport.Opening
        init(_ value: WebSocketTransport.Opening) { self.value = value }
    }

    private let shared: Shared
    private var pending: PendingOpening?
    private var chat: ChatService { shared.chat }
    private var logger: Logger { shared.logger }
    private var connection: WebSocketConnection?
    private var session: Session?
    /// A text or binary message being assembled from fragments.
    private var partial: (text: Bool, bytes: ByteBuffer)?
    /// Complete client messages waiting for the one in flight (or for the opening).
    private var inbox: [ByteBuffer] = []
    private var busy = false
    private var closed = false
    /// A ping went out and no pong came back yet.
    var awaitingPong = false

    /// Client messages that may wait behind the one being handled; more closes the
    /// connection (the rate limit answers fast, so only a flood gets here).
    static let maxInbox = 256

    init(opening: WebSocketTransport.Opening, shared: Shared) {
        self.pending = PendingOpening(opening)
        self.shared = shared
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard let opening = pending?.value else { return }
        pending = nil
        let channel = context.channel
        let connection = WebSocketConnection(
            nickname: opening.identity.nickname, eventLoop: context.eventLoop, sink: WebSocketSink(channel: channel),
            maxQueuedFrames: shared.maxQueuedFrames, metrics: chat.metrics)
        self.connection = connection
        Heartbeat.webSockets(context.eventLoop).add(self, interval: shared.pingInterval)
        let chat = self.chat
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let remote = channel.remoteAddress?.ipAddress
        Task {
            let result: Result<ChatService.Opened, EventError>
            do throws(EventError) {
                result = .success(
                    try await chat.open(
                        opening.identity, subscriber: connection, transport: .websocket, rooms: opening.rooms,
                        cursor: opening.cursor, remote: remote, claimed: true))
            } catch {
                result = .failure(error)
            }
            eventLoop.execute { me.value.opened(result) }
        }
    }

    private func opened(_ result: Result<ChatService.Opened, EventError>) {
        guard let connection else { return }
        switch result {
        case .failure(let error):
            let code: WebSocketErrorCode =
                switch error.code {
                case .nicknameTaken: .unknown(4409)
                case .tooManyConnections: .unknown(1013)
                default: .unknown(4503)
                }
            connection.close(code: code, reason: error.code.rawValue)
        case .success(let opened):
            guard !closed else {
                let chat = self.chat
                Task { await chat.close(opened.session) }
                return
            }
            session = opened.session
            let hub = chat.hub
            connection.openNow(
                welcome: hub.encode(opened.welcome, format: .native, stream: nil, id: nil, envelope: nil),
                backlog: opened.resets.map { hub.encode($0, format: .native, stream: nil, id: nil, envelope: nil) }
                    + opened.backlog.map { hub.encode($0.envelope.event, format: .native, stream: $0.stream, id: $0.id, envelope: $0.envelope) },
                cursor: opened.cursor)
            logger.debug("websocket open", metadata: ["session.id": "\(connection.connectionID)", "nickname": "\(connection.nickname)"])
            handleNext(eventLoop: connection.channel.eventLoop)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            guard partial == nil else { return protocolError("a new message began before the last one ended") }
            partial = (frame.opcode == .text, frame.unmaskedData)
            checkSize(context: context, fin: frame.fin)
        case .continuation:
            guard partial != nil else { return protocolError("a continuation frame without a message") }
            var data = frame.unmaskedData
            partial!.bytes.writeBuffer(&data)
            checkSize(context: context, fin: frame.fin)
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            awaitingPong = false
        case .connectionClose:
            // Echo the code (RFC 6455 §5.5.1), then end.
            var data = frame.unmaskedData
            let code = data.readWebSocketErrorCode() ?? .normalClosure
            connection?.close(code: code, reason: "")
        default:
            protocolError("unknown opcode")
        }
    }

    /// After a data frame: too large → close 1009; complete → queue it.
    private func checkSize(context: ChannelHandlerContext, fin: Bool) {
        guard let (text, bytes) = partial else { return }
        guard bytes.readableBytes <= shared.maxMessageBytes else {
            partial = nil
            chat.metrics.count("disconnects", "message_too_large")
            connection?.close(code: .messageTooLarge, reason: "message too large")
            return
        }
        guard fin else { return }
        partial = nil
        guard text else {
            reply([.error(ref: nil, code: .invalidMessage, message: "send events as text frames")], counted: true)
            return
        }
        guard inbox.count < Self.maxInbox else {
            connection?.close(code: .policyViolation, reason: "too many events in flight")
            return
        }
        inbox.append(bytes)
        handleNext(eventLoop: context.eventLoop)
    }

    /// Handles the next queued client event unless one is in flight (in order, one at a
    /// time, like a client expects its replies).
    private func handleNext(eventLoop: any EventLoop) {
        guard !busy, !closed, let session, !inbox.isEmpty else { return }
        let bytes = inbox.removeFirst()
        switch ClientEvent.parse(Array(buffer: bytes), limits: shared.eventLimits) {
        case .failure(let error):
            reply([.error(error)], counted: true)
            handleNext(eventLoop: eventLoop)
        case .success(let event):
            busy = true
            let chat = self.chat
            let me = NIOLoopBound(self, eventLoop: eventLoop)
            Task {
                let replies = await chat.handle(event, from: session)
                eventLoop.execute {
                    let handler = me.value
                    handler.busy = false
                    handler.reply(replies, counted: false)
                    chat.repliesSent(replies, for: event)
                    handler.handleNext(eventLoop: eventLoop)
                }
            }
        }
    }

    /// Sends replies to this connection; `counted`: errors the ChatService did not see.
    private func reply(_ replies: [ServerEvent], counted: Bool) {
        guard let connection, !closed else { return }
        if counted {
            chat.metrics.clientEvents.add(1, ordering: .relaxed)
            chat.countErrors(replies)
        }
        for reply in replies { chat.hub.send(reply, to: connection) }
    }

    private func protocolError(_ reason: String) {
        connection?.close(code: .protocolError, reason: reason)
    }

    /// A frame NIO's decoder refused: a frame over the limit is 1009, any other protocol
    /// error 1002 (what NIO's `WebSocketProtocolErrorHandler` answers, without its own
    /// pipeline slot per socket); anything else closes the connection.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("websocket error", metadata: ["error": "\(error)"])
        guard let error = error as? NIOWebSocketError, let connection else {
            context.close(promise: nil)
            return
        }
        if error == .invalidFrameLength {
            chat.metrics.count("disconnects", "message_too_large")
            connection.close(code: .messageTooLarge, reason: "")
        } else {
            connection.close(code: .protocolError, reason: "")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        inbox = []
        connection?.markClosed()
        Heartbeat.webSockets(context.eventLoop).remove(self)
        if let session {
            self.session = nil
            let chat = self.chat
            Task { await chat.close(session) }
        }
        context.fireChannelInactive()
    }

    /// Called by the heartbeat: a ping, or the close of a client that did not answer the
    /// last one.
    func heartbeat() {
        guard !closed, let connection else { return }
        if awaitingPong {
            connection.close(code: .goingAway, reason: "ping timeout")
            return
        }
        awaitingPong = true
        connection.channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer()), promise: nil)
    }
}
