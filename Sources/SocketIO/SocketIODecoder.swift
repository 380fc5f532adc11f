import SwitchboardJSON

/// Decodes the Engine.IO messages of one connection into Socket.IO packets. A binary
/// packet's text announces N attachments; the decoder then waits for N binary messages
/// before it returns the packet with its placeholders replaced.
public struct SocketIODecoder: Sendable {
    /// The most attachments one packet may announce.
    public var maxAttachments: Int
    private var waiting: Header?

    /// A packet's text, parsed, before its attachments.
    struct Header: Sendable {
        var type: SocketIOPacketType
        var attachmentCount: Int
        var namespace: String
        var ackID: Int?
        var payload: JSONValue?
        var attachments: [[UInt8]] = []
    }

    public init(maxAttachments: Int = 10) {
        self.maxAttachments = maxAttachments
    }

    /// Whether a binary packet still waits for attachments.
    public var isAwaitingAttachments: Bool { waiting != nil }

    /// Feeds one message: returns a packet when one is complete, `nil` while attachments
    /// are awaited. After an error the decoder starts afresh.
    public mutating func decode(_ message: EngineIOMessage) throws(SocketIOError) -> SocketIOPacket? {
        switch message {
        case .text(let text):
            guard waiting == nil else {
                waiting = nil
                throw .unexpectedText
            }
            let header = try Self.header(text)
            guard header.attachmentCount <= maxAttachments else { throw .tooManyAttachments }
            if header.attachmentCount > 0 {
                waiting = header
                return nil
            }
            return try Self.packet(header)
        case .binary(let bytes):
            guard var header = waiting else { throw .unexpectedBinary }
            header.attachments.append(bytes)
            guard header.attachments.count == header.attachmentCount else {
                waiting = header
                return nil
            }
            waiting = nil
            return try Self.packet(header)
        }
    }

    /// Decodes a packet with no attachments (a whole text packet).
    public static func decode(_ text: String) throws(SocketIOError) -> SocketIOPacket {
        let header = try header(text)
        guard header.attachmentCount == 0 else { throw .invalidAttachments }
        return try packet(header)
    }

    /// Parses `<type>[<#attachments>-][<namespace>,][<ack id>][JSON]`.
    static func header(_ text: String) throws(SocketIOError) -> Header {
        let bytes = Array(text.utf8)
        guard let first = bytes.first else { throw .emptyPacket }
        guard first >= UInt8(ascii: "0"), let type = SocketIOPacketType(rawValue: first &- UInt8(ascii: "0")) else {
            throw .unknownPacketType
        }
        var index = 1
        var attachmentCount = 0
        if type == .binaryEvent || type == .binaryAck {
            guard let dash = bytes[index...].firstIndex(of: UInt8(ascii: "-")),
                let count = Self.integer(bytes[index..<dash])
            else { throw .invalidAttachments }
            attachmentCount = count
            index = dash + 1
        }
        var namespace = SocketIOPacket.mainNamespace
        if index < bytes.count, bytes[index] == UInt8(ascii: "/") {
            let end = bytes[index...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.count
            namespace = String(decoding: bytes[index..<end], as: UTF8.self)
            index = min(end + 1, bytes.count)
        }
        var ackID: Int?
        let digitsEnd = bytes[index...].firstIndex { !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) } ?? bytes.count
        if digitsEnd > index {
            guard let id = Self.integer(bytes[index..<digitsEnd]) else { throw .invalidAckID }
            ackID = id
            index = digitsEnd
        }
        var payload: JSONValue?
        if index < bytes.count {
            guard let json = JSONValue.parse(bytes[index...]) else { throw .invalidPayload }
            payload = json
        }
        return Header(type: type, attachmentCount: attachmentCount, namespace: namespace, ackID: ackID, payload: payload)
    }

    /// Builds and validates the packet, with the attachments put back.
    static func packet(_ header: Header) throws(SocketIOError) -> SocketIOPacket {
        let binary = header.type == .binaryEvent || header.type == .binaryAck
        func arguments(_ values: [JSONValue]) throws(SocketIOError) -> [SocketIOValue] {
            guard binary else { return values.map(SocketIOValue.init) }
            var result: [SocketIOValue] = []
            for value in values { result.append(try SocketIOValue.reconstructed(value, attachments: header.attachments)) }
            return result
        }
        let packet: SocketIOPacket
        switch header.type {
        case .connect, .disconnect, .connectError:
            guard header.ackID == nil else { throw .invalidAckID }
            switch header.type {
            case .connect: packet = .connect(namespace: header.namespace, payload: header.payload)
            case .disconnect:
                guard header.payload == nil else { throw .invalidPayload }
                packet = .disconnect(namespace: header.namespace)
            default:
                guard let payload = header.payload else { throw .invalidPayload }
                packet = .connectError(namespace: header.namespace, payload: payload)
            }
        case .event, .binaryEvent:
            guard case .array(let values) = header.payload, case .string(let name) = values.first else {
                throw .invalidPayload
            }
            packet = .event(
                namespace: header.namespace, name: name, arguments: try arguments(Array(values.dropFirst())),
                ackID: header.ackID)
        case .ack, .binaryAck:
            guard case .array(let values) = header.payload else { throw .invalidPayload }
            guard let ackID = header.ackID else { throw .invalidAckID }
            packet = .ack(namespace: header.namespace, arguments: try arguments(values), ackID: ackID)
        }
        try packet.validate()
        return packet
    }

    /// A non-negative decimal integer of at most 15 digits (exact in a JavaScript number).
    private static func integer(_ digits: ArraySlice<UInt8>) -> Int? {
        guard !digits.isEmpty, digits.count <= 15 else { return nil }
        var value = 0
        for digit in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { return nil }
            value = value * 10 + Int(digit - UInt8(ascii: "0"))
        }
        return value
    }
}
