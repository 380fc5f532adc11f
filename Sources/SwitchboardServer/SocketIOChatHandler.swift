import Logging
import NIOCore
import SocketIO
import SocketIOHummingbird
import SwitchboardCore
import SwitchboardSocketIO
import Synchronization

/// The chat over Socket.IO (PROTOCOL.md, "Socket.IO compatibility"). Each joined
/// namespace of a client is one `ChatService` session with its own `SocketIOSubscriber`:
/// auth on CONNECT (`{token}` or `{nickname, avatar}`), the room `lobby` joined on
/// connect, `join`/`leave`, any other event published through the broker (stored, with
/// ids) to the socket's rooms or, with a `to`, to one nickname — cluster-wide.
struct SocketIOChatHandler: SocketIOHandler {
    let chat: ChatService
    let maxQueuedFrames: Int
    let logger: Logger
    /// `--login open`: `auth: {nickname, avatar}` logs in on the fly; closed: refused
    /// with `login_closed` (tokens only).
    var loginOpen = true
    /// How long an offset of connection state recovery stays good; zero: no recovery.
    var recoveryWindow: Duration = .zero

    /// Events of one client waiting for the worker; past this, an event is refused with
    /// `rate_limited`.
    static let maxQueuedEvents = 256

    func connection(_ client: SocketIOClient) -> any SocketIOConnectionHandler {
        let (stream, continuation) = AsyncStream.makeStream(
            of: SocketIOChatWork.self, bufferingPolicy: .bufferingOldest(Self.maxQueuedEvents))
        var logger = self.logger
        logger[metadataKey: "engine.sid"] = .string(client.session.sid)
        let worker = SocketIOChatWorker(
            chat: chat, maxQueuedFrames: maxQueuedFrames, logger: logger, loginOpen: loginOpen, recoveryWindow: recoveryWindow)
        Task { await worker.run(stream) }
        return SocketIOChatConnection(continuation: continuation)
    }
}

/// What a client's sockets asked for, in order.
enum SocketIOChatWork: Sendable {
    case authorize(SocketIOSocket, auth: JSONValue?)
    case event(SocketIOSocket, name: String, arguments: [SocketIOValue], ackID: Int?)
    case disconnected(SocketIOSocket)
}

/// Hands a client's socket events, in order, to its worker task (on the session's loop).
final class SocketIOChatConnection: SocketIOConnectionHandler {
    private let continuation: AsyncStream<SocketIOChatWork>.Continuation

    init(continuation: AsyncStream<SocketIOChatWork>.Continuation) {
        self.continuation = continuation
    }

    func authorize(_ socket: SocketIOSocket, auth: JSONValue?) {
        if case .dropped = continuation.yield(.authorize(socket, auth: auth)) {
            socket.reject(SocketIOChatReply.connectError(EventError(.rateLimited, "too many requests")))
        }
    }

    func event(_ socket: SocketIOSocket, name: String, arguments: [SocketIOValue], ackID: Int?) {
        if case .dropped = continuation.yield(.event(socket, name: name, arguments: arguments, ackID: ackID)), let ackID {
            socket.ack(ackID, SocketIOChatReply.refused(EventError(.rateLimited, "too many events; slow down")))
        }
    }

    func disconnected(_ socket: SocketIOSocket, reason: SocketIODisconnectReason) {
        if case .dropped = continuation.yield(.disconnected(socket)) {
            // The worker is far behind; it closes every session it still has at the end.
        }
    }

    func closed() {
        continuation.finish()
    }
}

/// One client's sockets, served one event at a time by one task.
final class SocketIOChatWorker: Sendable {
    let chat: ChatService
    let maxQueuedFrames: Int
    let logger: Logger
    let loginOpen: Bool
    let recoveryWindow: Duration

    static let loginClosedMessage = "this chat accepts only tokens from its application (auth: {token})"

    init(chat: ChatService, maxQueuedFrames: Int, logger: Logger, loginOpen: Bool = true, recoveryWindow: Duration = .zero) {
        self.chat = chat
        self.maxQueuedFrames = maxQueuedFrames
        self.logger = logger
        self.loginOpen = loginOpen
        self.recoveryWindow = recoveryWindow
    }

    struct Member {
        let session: Session
        let subscriber: SocketIOSubscriber
        var recovery: SocketIORecovery? { subscriber.sink.recovery }
    }

    struct State {
        /// The joined sockets by namespace.
        var members: [String: Member] = [:]
        /// Identities logged in on the fly by this client, by nickname: a second
        /// namespace with the same `{nickname}` auth reuses the first one's login.
        var logins: [String: Identity] = [:]
    }

    func run(_ stream: AsyncStream<SocketIOChatWork>) async {
        var state = State()
        for await work in stream {
            switch work {
            case .authorize(let socket, let auth):
                await authorize(socket, auth: auth, state: &state)
            case .event(let socket, let name, let arguments, let ackID):
                guard let member = state.members[socket.namespace] else { continue }
                await event(socket, name: name, arguments: arguments, ackID: ackID, member: member)
            case .disconnected(let socket):
                if let member = state.members.removeValue(forKey: socket.namespace) { await chat.close(member.session) }
            }
        }
        for member in state.members.values { await chat.close(member.session) }
    }

    private func authorize(_ socket: SocketIOSocket, auth: JSONValue?, state: inout State) async {
        // Connection state recovery: a `{pid, offset}` of this cluster, still in its window,
        // is the identity, rooms and position of the socket it came from.
        let wantsRecovery = recoveryWindow > .zero && (auth?["recover"] == .bool(true) || auth?["pid"] != nil)
        if wantsRecovery, let pid = auth?["pid"]?.stringValue, let offset = auth?["offset"]?.stringValue,
            let identity = SocketIORecovery.identity(pid: pid, chat: chat),
            let cursor = SocketIORecovery.cursor(offset: offset, pid: pid, chat: chat),
            await recover(socket, identity: identity, pid: pid, cursor: cursor, state: &state)
        {
            return
        }
        let identity: Identity
        var token: String?
        switch SocketIOAuth(auth) {
        case nil:
            socket.reject(SocketIOChatReply.connectError(EventError(.unauthorized, "auth must be {token} or {nickname, avatar}")))
            return
        case .token(let raw)?:
            switch chat.verify(raw) {
            case .success(let verified):
                identity = verified
            case .failure(let refusal):
                socket.reject(SocketIOChatReply.connectError(refusal.eventError, reason: refusal.reason.rawValue))
                return
            }
        case .login? where !loginOpen:
            socket.reject(SocketIOChatReply.connectError(EventError(.loginClosed, Self.loginClosedMessage)))
            return
        case .login(let nickname, let avatar)?:
            if let known = state.logins[nickname], known.avatar == (avatar ?? "") {
                identity = known
            } else {
                switch await chat.login(nickname: nickname, avatar: avatar) {
                case .success(let login):
                    identity = login.identity
                    token = login.token
                    state.logins[nickname] = login.identity
                case .failure(let error):
                    socket.reject(SocketIOChatReply.connectError(error))
                    return
                }
            }
        }
        let recovery = wantsRecovery ? SocketIORecovery(pid: SocketIORecovery.makePID(identity, chat: chat), chat: chat, window: recoveryWindow) : nil
        let subscriber = SocketIOSubscriber(
            socket: socket, nickname: identity.nickname, maxQueuedFrames: maxQueuedFrames, metrics: chat.metrics, recovery: recovery)
        let opened: ChatService.Opened
        do {
            opened = try await chat.open(
                identity, subscriber: subscriber, transport: .socketIO, rooms: [Self.lobby], cursor: nil,
                remote: socket.client.session.remoteAddress)
        } catch {
            socket.reject(SocketIOChatReply.connectError(error))
            return
        }
        guard (try? await socket.accept(socketID: subscriber.connectionID.value, pid: recovery?.pid).get()) == true else {
            await chat.close(opened.session)
            return
        }
        recovery?.start(opened.cursor)
        recovery?.joined(Self.lobby, head: opened.cursor.rooms[Self.lobby])
        state.members[socket.namespace] = Member(session: opened.session, subscriber: subscriber)
        var welcome: [String: SocketIOValue] = [
            "type": "welcome", "nickname": .string(identity.nickname.value), "avatar": .string(identity.avatar),
            "node": .string(chat.nodeID), "transport": .string(Transport.socketIO.rawValue),
        ]
        if let token { welcome["token"] = .string(token) }
        // With recovery, the welcome carries the first offset (the opening position).
        socket.emit("welcome", [.object(welcome)] + (recovery.map { [.string($0.offset(at: opened.cursor))] } ?? []))
        let hub = chat.hub
        subscriber.open(initial: opened.resets.map { hub.encode($0, format: subscriber.format, stream: nil, id: nil, envelope: nil) })
        logger.debug("socket.io connect", metadata: ["namespace": "\(socket.namespace)", "nickname": "\(identity.nickname)"])
    }

    /// Opens the socket where `cursor` left it: its rooms, then every event after the
    /// cursor; the reply carries the same `pid` (`recovered` for the client). False when
    /// it cannot be exact (history no longer reaches back to the cursor, or the session
    /// cannot open): the caller opens a fresh session instead.
    private func recover(
        _ socket: SocketIOSocket, identity: Identity, pid: String, cursor: Cursor, state: inout State
    ) async -> Bool {
        let recovery = SocketIORecovery(pid: pid, chat: chat, window: recoveryWindow)
        let subscriber = SocketIOSubscriber(
            socket: socket, nickname: identity.nickname, maxQueuedFrames: maxQueuedFrames, metrics: chat.metrics, recovery: recovery)
        guard
            let opened = try? await chat.open(
                identity, subscriber: subscriber, transport: .socketIO, rooms: cursor.rooms.keys.sorted { $0.value < $1.value },
                cursor: cursor, remote: socket.client.session.remoteAddress)
        else { return false }
        guard !opened.resets.contains(where: { if case .reset = $0 { true } else { false } }) else {
            await chat.close(opened.session)
            return false
        }
        guard (try? await socket.accept(socketID: subscriber.connectionID.value, pid: pid).get()) == true else {
            await chat.close(opened.session)
            return true
        }
        // From the client's own cursor: the replay below moves each offset on.
        recovery.start(cursor)
        state.members[socket.namespace] = Member(session: opened.session, subscriber: subscriber)
        socket.emit(
            "welcome",
            [
                .object([
                    "type": "welcome", "nickname": .string(identity.nickname.value), "avatar": .string(identity.avatar),
                    "node": .string(chat.nodeID), "transport": .string(Transport.socketIO.rawValue), "recovered": .bool(true),
                ]),
                .string(recovery.offset(at: cursor)),
            ])
        let hub = chat.hub
        subscriber.open(
            initial: opened.resets.map { hub.encode($0, format: subscriber.format, stream: nil, id: nil, envelope: nil) },
            backlog: opened.backlog.map {
                hub.encode($0.envelope.event, format: subscriber.format, stream: $0.stream, id: $0.id, envelope: $0.envelope)
            },
            cursor: opened.cursor)
        logger.debug("socket.io recovered", metadata: ["namespace": "\(socket.namespace)", "nickname": "\(identity.nickname)"])
        return true
    }

    private func event(_ socket: SocketIOSocket, name: String, arguments: [SocketIOValue], ackID: Int?, member: Member) async {
        switch SocketIOChatCommand.parse(name: name, arguments: arguments) {
        case .failure(let error):
            chat.metrics.clientEvents.add(1, ordering: .relaxed)
            chat.countErrors([.error(error)])
            answer(socket, error, name: name, ackID: ackID)
        case .success(.join(let room)):
            let head = await handle(ClientEvent(.join(room), ref: .int(0)), socket, name: name, ackID: ackID, member: member)
            if let head { member.recovery?.joined(room, head: head) }
        case .success(.leave(let room)):
            if await handle(ClientEvent(.leave(room), ref: .int(0)), socket, name: name, ackID: ackID, member: member) != nil {
                member.recovery?.left(room)
            }
        case .success(.members(let room, let after, let limit)):
            for reply in await chat.handle(ClientEvent(.members(room: room, after: after, limit: limit)), from: member.session) {
                switch reply {
                case .members(_, let room, let page) where ackID != nil:
                    socket.ack(ackID!, SocketIOChatReply.members(room, page: page))
                case .error(_, let code, let message):
                    answer(socket, EventError(code, message), name: name, ackID: ackID)
                default:
                    chat.hub.send(reply, to: member.subscriber)
                }
            }
        case .success(.emit(let event)):
            switch await chat.emitCustom(event, from: member.session) {
            case .success(let ids):
                if let ackID { socket.ack(ackID, SocketIOChatReply.accepted(id: ids.first, ids: ids)) }
            case .failure(let error):
                answer(socket, error, name: name, ackID: ackID)
            }
        }
    }

    /// `join` / `leave` through the native handler: its `ack` or `error` becomes the
    /// Socket.IO ack (or an `error` event), anything else (the room's `presence`) an event.
    /// Returns the ack's id (`.zero` for none) when the event was accepted.
    @discardableResult
    private func handle(_ event: ClientEvent, _ socket: SocketIOSocket, name: String, ackID: Int?, member: Member) async -> MessageID? {
        var accepted: MessageID?
        let replies = await chat.handle(event, from: member.session)
        for reply in replies {
            switch reply {
            case .ack(_, let id):
                accepted = id ?? .zero
                if let ackID { socket.ack(ackID, SocketIOChatReply.accepted(id: id)) }
            case .error(_, let code, let message):
                answer(socket, EventError(code, message), name: name, ackID: ackID)
            default:
                chat.hub.send(reply, to: member.subscriber)
            }
        }
        chat.repliesSent(replies, for: event)
        return accepted
    }

    private func answer(_ socket: SocketIOSocket, _ error: EventError, name: String, ackID: Int?) {
        if let ackID {
            socket.ack(ackID, SocketIOChatReply.refused(error))
        } else {
            socket.emit("error", SocketIOChatReply.errorEvent(error, event: name))
        }
    }

    static let lobby = RoomName("lobby")!
}
