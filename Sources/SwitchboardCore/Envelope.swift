/// What travels through the broker: an event plus who must not receive it.
/// Stored in history and published as one string (`Envelope.encoded`), decoded once per
/// node, never per recipient.
public struct Envelope: Sendable, Equatable {
    public var event: ServerEvent
    /// Connections of this nickname do not receive it (`say` with `echo: false`).
    public var excludeNickname: Nickname?
    /// This connection does not receive it (the sender of a whisper).
    public var excludeConnection: ConnectionID?
    /// A private event belongs to the sessions that held its nicknames when it was sent
    /// (recipient and sender): replaying a user stream hands it to those sessions only,
    /// never to a later holder of a lapsed nickname. Empty: no restriction.
    public var sessions: [String]

    public init(
        _ event: ServerEvent, excludeNickname: Nickname? = nil, excludeConnection: ConnectionID? = nil, sessions: [String] = []
    ) {
        self.event = event
        self.excludeNickname = excludeNickname
        self.excludeConnection = excludeConnection
        self.sessions = sessions
    }

    /// Whether a replay of history may hand this event to `session`.
    public func isReplayable(to session: String) -> Bool {
        sessions.isEmpty || sessions.contains(session)
    }

    /// `1\t<kind>\t<exclude nickname>\t<exclude connection>\t<event JSON>`, or with
    /// sessions `2\t<kind>\t<exclude nickname>\t<exclude connection>\t<s1,s2>\t<event JSON>`;
    /// kind is `e` for a chat event, `a` for an application event (so its `type` is free).
    public var encoded: [UInt8] {
        var bytes: [UInt8] = Array((sessions.isEmpty ? "1\t" : "2\t").utf8)
        if case .application = event { bytes.append(UInt8(ascii: "a")) } else { bytes.append(UInt8(ascii: "e")) }
        bytes.append(0x09)
        bytes.append(contentsOf: (excludeNickname?.value ?? "").utf8)
        bytes.append(0x09)
        bytes.append(contentsOf: (excludeConnection?.value ?? "").utf8)
        bytes.append(0x09)
        if !sessions.isEmpty {
            bytes.append(contentsOf: sessions.joined(separator: ",").utf8)
            bytes.append(0x09)
        }
        bytes.append(contentsOf: event.jsonBytes)
        return bytes
    }

    public init?(encoded bytes: some Collection<UInt8>) {
        let versioned = bytes.prefix(2).elementsEqual("2\t".utf8)
        let fields = bytes.split(separator: 0x09, maxSplits: versioned ? 5 : 4, omittingEmptySubsequences: false)
        guard fields.count == (versioned ? 6 : 5), fields[0].elementsEqual((versioned ? "2" : "1").utf8) else { return nil }
        let nick = String(decoding: fields[2], as: UTF8.self)
        let conn = String(decoding: fields[3], as: UTF8.self)
        let sessions = versioned ? fields[4].split(separator: UInt8(ascii: ",")).map { String(decoding: $0, as: UTF8.self) } : []
        guard !versioned || !sessions.isEmpty else { return nil }
        let body = Array(fields[versioned ? 5 : 4])
        let event: ServerEvent?
        if let type = Envelope.leadingType(body), !["joined", "left", "presence"].contains(type) {
            // Relayed as is: no JSON parse per message per node.
            event = .encoded(type: type, json: body)
        } else if fields[1].elementsEqual("a".utf8) {
            guard case .object(var f)? = JSONValue.parse(body) else { return nil }
            let id = f["id"]?.stringValue.flatMap { MessageID($0) }
            let target: StreamKey
            if let room = f["room"]?.stringValue.flatMap(RoomName.init) {
                target = .room(room)
            } else if let to = f["to"]?.stringValue.flatMap(Nickname.init) {
                target = .user(to)
            } else {
                return nil
            }
            for key in ["id", "room", "to"] { f[key] = nil }
            event = .application(id: id, target: target, fields: f)
        } else {
            event = ServerEvent.parse(body)
        }
        guard let event else { return nil }
        self.event = event
        self.excludeNickname = nick.isEmpty ? nil : Nickname(nick)
        self.excludeConnection = conn.isEmpty ? nil : ConnectionID(conn)
        self.sessions = sessions
    }
}

extension Envelope {
    /// The type of a native encoding `{"type":"T",…}` when T is plain (no escapes) and
    /// the object continues; nil otherwise (then the event is parsed).
    static func leadingType(_ json: [UInt8]) -> String? {
        let prefix = Array(#"{"type":""#.utf8)
        guard json.count > prefix.count + 2, json.starts(with: prefix) else { return nil }
        var index = prefix.count
        while index < json.count, json[index] != UInt8(ascii: "\""), json[index] != UInt8(ascii: "\\") { index += 1 }
        guard index + 1 < json.count, json[index] == UInt8(ascii: "\""),
            json[index + 1] == UInt8(ascii: ","), index > prefix.count
        else { return nil }
        return String(decoding: json[prefix.count..<index], as: UTF8.self)
    }
}

/// A stored (or live) message of one stream.
public struct StreamEntry: Sendable, Equatable {
    public var stream: StreamKey
    public var id: MessageID
    public var envelope: Envelope

    public init(stream: StreamKey, id: MessageID, envelope: Envelope) {
        self.stream = stream
        self.id = id
        self.envelope = envelope
    }
}
