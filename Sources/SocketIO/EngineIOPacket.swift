/// The data of an Engine.IO `message` packet: UTF-8 text or raw bytes.
public enum EngineIOMessage: Sendable, Equatable, Hashable {
    case text(String)
    case binary([UInt8])
}

/// One WebSocket frame as Engine.IO uses it: each packet travels in its own frame.
public enum EngineIOFrame: Sendable, Equatable, Hashable {
    case text(String)
    case binary([UInt8])
}

/// The Engine.IO v4 packet types and their wire digits.
public enum EngineIOPacketType: UInt8, Sendable, CaseIterable {
    case open = 0
    case close = 1
    case ping = 2
    case pong = 3
    case message = 4
    case upgrade = 5
    case noop = 6

    /// The ASCII digit that starts an encoded packet of this type.
    public var character: Character { Character(Unicode.Scalar(UInt8(ascii: "0") + rawValue)) }
}

/// An Engine.IO v4 packet (engine.io-protocol, "Protocol" and "Packet encoding").
///
/// `ping` and `pong` carry an optional payload, used by the upgrade probe
/// (`2probe` / `3probe`). A binary `message` is written as its raw bytes in a binary
/// WebSocket frame, and as `b` + base64 in a polling payload.
public enum EngineIOPacket: Sendable, Equatable, Hashable {
    case open(EngineIOHandshake)
    case close
    case ping(String = "")
    case pong(String = "")
    case message(EngineIOMessage)
    case upgrade
    case noop

    /// The packet's type.
    public var type: EngineIOPacketType {
        switch self {
        case .open: .open
        case .close: .close
        case .ping: .ping
        case .pong: .pong
        case .message: .message
        case .upgrade: .upgrade
        case .noop: .noop
        }
    }

    /// The `ping` packet with the `probe` payload a client sends on a new WebSocket.
    public static let probePing = EngineIOPacket.ping("probe")
    /// The server's answer to ``probePing``.
    public static let probePong = EngineIOPacket.pong("probe")
}

extension EngineIOPacket {
    /// The text form of the packet: `<type digit>[<data>]`, or `b<base64>` for binary
    /// messages. Used in polling payloads and in WebSocket text frames.
    public var text: String {
        switch self {
        case .open(let handshake): "0" + handshake.json
        case .close: "1"
        case .ping(let data): "2" + data
        case .pong(let data): "3" + data
        case .message(.text(let text)): "4" + text
        case .message(.binary(let bytes)): "b" + Base64.encode(bytes)
        case .upgrade: "5"
        case .noop: "6"
        }
    }

    /// The WebSocket frame for the packet: binary messages as raw bytes, the rest as text.
    public var frame: EngineIOFrame {
        if case .message(.binary(let bytes)) = self { return .binary(bytes) }
        return .text(text)
    }

    /// Parses the text form of one packet (a polling record or a WebSocket text frame).
    public init(text: Substring) throws(EngineIOParseError) {
        guard let first = text.utf8.first else { throw .emptyPacket }
        // Drop the type by scalar, not by Character: data may start with a combining mark.
        let data = Substring(text.unicodeScalars.dropFirst())
        switch first {
        case UInt8(ascii: "b"):
            guard let bytes = Base64.decode(data.utf8) else { throw .invalidBase64 }
            self = .message(.binary(bytes))
        case UInt8(ascii: "0"):
            guard let handshake = EngineIOHandshake(json: data) else { throw .invalidHandshake }
            self = .open(handshake)
        case UInt8(ascii: "1"): self = try Self.bare(.close, data)
        case UInt8(ascii: "2"): self = .ping(String(data))
        case UInt8(ascii: "3"): self = .pong(String(data))
        case UInt8(ascii: "4"): self = .message(.text(String(data)))
        case UInt8(ascii: "5"): self = try Self.bare(.upgrade, data)
        case UInt8(ascii: "6"): self = try Self.bare(.noop, data)
        default: throw .unknownPacketType
        }
    }

    /// Parses the text form of one packet.
    public init(text: String) throws(EngineIOParseError) {
        try self.init(text: text[...])
    }

    /// Parses one WebSocket frame: a binary frame is a binary message, a text frame is
    /// the text form of a packet.
    public init(frame: EngineIOFrame) throws(EngineIOParseError) {
        switch frame {
        case .binary(let bytes): self = .message(.binary(bytes))
        case .text(let text): try self.init(text: text)
        }
    }

    /// `close`, `upgrade` and `noop` carry no data.
    private static func bare(_ packet: EngineIOPacket, _ data: Substring) throws(EngineIOParseError) -> EngineIOPacket {
        guard data.isEmpty else { throw .unexpectedData }
        return packet
    }
}
