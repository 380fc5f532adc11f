/// A client's resume position: the last id it has seen per stream it follows.
///
/// Text form (documented in docs/protocol.md, opaque to most clients):
/// comma-separated `r.<room>@<id>` and `u@<id>` entries, where `u` is always the
/// private stream of the token's own nickname — a cursor can never name another
/// user's stream. At most `maxEntries` entries.
public struct Cursor: Equatable, Sendable, CustomStringConvertible {
    public var rooms: [RoomName: MessageID]
    public var user: MessageID?

    public static let maxEntries = 256

    public init(rooms: [RoomName: MessageID] = [:], user: MessageID? = nil) {
        self.rooms = rooms
        self.user = user
    }

    /// Parses the text form; `nil` when malformed. The empty string is the empty cursor.
    public init?(_ text: String) {
        self.init()
        if text.isEmpty { return }
        guard text.utf8.count <= 64 * 1024 else { return nil }
        let entries = text.split(separator: ",", omittingEmptySubsequences: false)
        guard entries.count <= Self.maxEntries else { return nil }
        for entry in entries {
            guard let at = entry.lastIndex(of: "@"),
                let id = MessageID(entry[entry.index(after: at)...])
            else { return nil }
            let name = entry[..<at]
            if name == "u" {
                guard user == nil else { return nil }
                user = id
            } else if name.hasPrefix("r."), let room = RoomName(String(name.dropFirst(2))) {
                guard rooms[room] == nil else { return nil }
                rooms[room] = id
            } else {
                return nil
            }
        }
    }

    public subscript(stream: StreamKey) -> MessageID? {
        switch stream {
        case .room(let room): rooms[room]
        case .user: user
        }
    }

    /// Moves the position of `stream` forward to `id` (never backwards).
    public mutating func advance(_ stream: StreamKey, to id: MessageID) {
        switch stream {
        case .room(let room):
            if let old = rooms[room], old >= id { return }
            rooms[room] = id
        case .user:
            if let old = user, old >= id { return }
            user = id
        }
    }

    public var description: String {
        var parts = rooms.sorted { $0.key < $1.key }.map { "r.\($0.key.value)@\($0.value)" }
        if let user { parts.append("u@\(user)") }
        return parts.joined(separator: ",")
    }
}
