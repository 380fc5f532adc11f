import SocketIOHummingbird
import SwitchboardCore
import Synchronization

/// Socket.IO connection state recovery (v4.6+) for one socket that asked for it (CONNECT
/// auth with `"recover": true`, or a `pid`): its CONNECT reply carries a `pid`, and every
/// stored event it gets carries an *offset* as its last argument.
///
/// Both are self-contained, so any node recovers the socket, also after the node it was
/// on died: the `pid` is a token of this cluster for the socket's identity behind 12
/// random characters (`<random>.<token>`: each session its own pid), and an offset
/// is the socket's cursor after that event (every room it is in, its private stream) with
/// an expiry (`now + window`), signed with the cluster secret and bound to the `pid`:
/// `<cursor>~<expires ms>~<MAC>`. A client reconnecting with `{pid, offset}` gets its
/// rooms back and every event after the cursor from history, as a native resume does.
final class SocketIORecovery: Sendable {
    let pid: String
    private let chat: ChatService
    private let window: Int64
    /// The rooms the socket is in, each with the position to resume from when none of its
    /// events has been delivered yet (the room's head when it was joined), and the same for
    /// the private stream.
    private let joined = Mutex<Cursor>(Cursor())

    init(pid: String, chat: ChatService, window: Duration) {
        self.pid = pid
        self.chat = chat
        self.window = window.components.seconds * 1000
    }

    /// A new pid for `identity`.
    static func makePID(_ identity: Identity, chat: ChatService) -> String {
        EngineIOSessionID.make(node: nil).prefix(12) + "." + chat.token(for: identity)
    }

    /// The identity of a pid of this cluster (nil when forged, malformed or expired).
    static func identity(pid: String, chat: ChatService) -> Identity? {
        guard let dot = pid.firstIndex(of: "."), pid.distance(from: pid.startIndex, to: dot) == 12,
            case .success(let identity) = chat.verify(String(pid[pid.index(after: dot)...]))
        else { return nil }
        return identity
    }

    /// The positions of the opening (the welcome cursor: each room's head, or the
    /// recovered cursor).
    func start(_ cursor: Cursor) {
        joined.withLock { $0 = cursor }
    }

    func joined(_ room: RoomName, head: MessageID?) {
        joined.withLock { $0.rooms[room] = max($0.rooms[room] ?? .zero, head ?? .zero) }
    }

    func left(_ room: RoomName) {
        _ = joined.withLock { $0.rooms.removeValue(forKey: room) }
    }

    /// The offset of an event after which the socket's connection is at `position`.
    func offset(at position: Cursor) -> String {
        var cursor = joined.withLock { $0 }
        for (room, id) in cursor.rooms { cursor.rooms[room] = max(id, position.rooms[room] ?? .zero) }
        if let user = position.user { cursor.user = max(cursor.user ?? .zero, user) }
        let text = cursor.description
        let expires = String(unixMilliseconds() + window)
        return text + "~" + expires + "~" + chat.authenticate(Self.signed(pid: pid, cursor: text, expires: expires))
    }

    /// The cursor of `offset` when it is one of `pid`'s and has not expired at `now`.
    static func cursor(offset: String, pid: String, chat: ChatService, now: Int64 = unixMilliseconds()) -> Cursor? {
        guard offset.utf8.count <= 64 * 1024 else { return nil }
        let parts = offset.split(separator: "~", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let expires = Int64(parts[1]), expires > now,
            chat.isAuthentic(parts[2], for: signed(pid: pid, cursor: parts[0], expires: parts[1]))
        else { return nil }
        return Cursor(parts[0])
    }

    private static func signed(pid: String, cursor: String, expires: String) -> [UInt8] {
        Array("sio-offset|\(pid)|\(cursor)|\(expires)".utf8)
    }

    /// A Socket.IO EVENT packet (`2[…]`, `2/ns,[…]`, or a binary event's header `5N-[…]`)
    /// with `offset` appended as its last argument; nil for any other packet.
    static func appending(_ offset: String, to packet: String) -> String? {
        guard let first = packet.utf8.first, first == UInt8(ascii: "2") || first == UInt8(ascii: "5"), packet.hasSuffix("]")
        else { return nil }
        // Offsets hold no character that JSON escapes.
        return String(packet.dropLast()) + ",\"" + offset + "\"]"
    }
}
