/// Polling payloads: several packets in one HTTP body, separated by the record
/// separator `\x1e` (engine.io-protocol, "Packet encoding / HTTP long-polling").
public enum EngineIOPayload {
    /// The record separator between two packets.
    public static let separator: Character = "\u{1E}"

    /// Encodes `packets` into one body.
    public static func encode(_ packets: some Sequence<EngineIOPacket>) -> String {
        packets.map(\.text).joined(separator: String(separator))
    }

    /// Encodes as many leading packets of `packets` as fit in `maxPayload` UTF-8 bytes,
    /// at most `maxPackets`, always at least one. Returns the body and how many packets
    /// it holds; the caller keeps the rest for the next poll.
    public static func encode(_ packets: [EngineIOPacket], maxPayload: Int, maxPackets: Int = .max) -> (body: String, count: Int) {
        var body = ""
        var size = 0
        var count = 0
        for packet in packets {
            let text = packet.text
            let added = text.utf8.count + (count == 0 ? 0 : 1)
            if count > 0, size + added > maxPayload || count >= maxPackets { break }
            if count > 0 { body.append(separator) }
            body += text
            size += added
            count += 1
        }
        return (body, count)
    }

    /// Decodes a body into its packets; any malformed record rejects the whole body.
    public static func decode(_ body: String) throws(EngineIOParseError) -> [EngineIOPacket] {
        guard !body.isEmpty else { throw .emptyPayload }
        var packets: [EngineIOPacket] = []
        // Split on the byte, not on Characters: a record may start with a combining mark.
        for record in body[...].utf8.split(separator: 0x1E, omittingEmptySubsequences: false) {
            packets.append(try EngineIOPacket(text: Substring(record)))
        }
        return packets
    }

    /// Decodes a body given as bytes; it must be UTF-8.
    public static func decode(_ body: some Collection<UInt8>) throws(EngineIOParseError) -> [EngineIOPacket] {
        guard let text = String(validating: body, as: UTF8.self) else { throw .invalidUTF8 }
        return try decode(text)
    }
}
