import SwitchboardJSON

/// The data of the `open` packet (engine.io-protocol, "Handshake").
public struct EngineIOHandshake: Sendable, Equatable, Hashable {
    /// The session ID the client sends back as `sid` in every later request.
    public var sid: String
    /// The transports the client may upgrade to: `["websocket"]` for a polling session,
    /// `[]` for a WebSocket one.
    public var upgrades: [String]
    /// Milliseconds between two server pings.
    public var pingInterval: Int
    /// Milliseconds the client has to answer a ping.
    public var pingTimeout: Int
    /// The largest number of bytes the client should put in one polling payload.
    public var maxPayload: Int

    public init(sid: String, upgrades: [String], pingInterval: Int, pingTimeout: Int, maxPayload: Int) {
        self.sid = sid
        self.upgrades = upgrades
        self.pingInterval = pingInterval
        self.pingTimeout = pingTimeout
        self.maxPayload = maxPayload
    }

    /// The JSON object, with the keys in the specification's order.
    public var json: String {
        var writer = JSONWriter()
        writer.byte(UInt8(ascii: "{"))
        writer.key("sid", first: true)
        writer.string(sid)
        writer.key("upgrades")
        writer.byte(UInt8(ascii: "["))
        for (index, upgrade) in upgrades.enumerated() {
            if index > 0 { writer.byte(UInt8(ascii: ",")) }
            writer.string(upgrade)
        }
        writer.byte(UInt8(ascii: "]"))
        writer.key("pingInterval")
        writer.raw(String(pingInterval))
        writer.key("pingTimeout")
        writer.raw(String(pingTimeout))
        writer.key("maxPayload")
        writer.raw(String(maxPayload))
        writer.byte(UInt8(ascii: "}"))
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// Parses the JSON object; `nil` when a field is missing or has the wrong type.
    public init?(json: Substring) {
        guard case .object(let fields) = JSONValue.parse(Array(json.utf8)),
            case .string(let sid) = fields["sid"],
            case .array(let upgradeValues) = fields["upgrades"],
            case .int(let pingInterval) = fields["pingInterval"],
            case .int(let pingTimeout) = fields["pingTimeout"],
            case .int(let maxPayload) = fields["maxPayload"]
        else { return nil }
        var upgrades: [String] = []
        for value in upgradeValues {
            guard case .string(let upgrade) = value else { return nil }
            upgrades.append(upgrade)
        }
        self.init(
            sid: sid, upgrades: upgrades, pingInterval: Int(pingInterval), pingTimeout: Int(pingTimeout),
            maxPayload: Int(maxPayload))
    }
}
