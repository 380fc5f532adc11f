import SocketIO

/// The other nodes of a cluster as an ``EngineIOEndpoint`` sees them: how to reach one,
/// and whether it is alive. The endpoint serves a request for a session that another
/// node holds by forwarding it there (docs/protocol.md §8).
public protocol EngineIOPeers: Sendable {
    /// This node's id: the session IDs it makes carry it (``EngineIOSessionID``).
    var localNode: String { get }
    /// Whether `node` has a fresh heartbeat. A request for a session of a node that is
    /// not alive is answered `Session ID unknown` at once.
    func isLive(_ node: String) -> Bool
    /// Reads which nodes are alive again (when a request names a node ``isLive(_:)`` does
    /// not know: it may have started after the last reading).
    func refresh() async
    /// Sends `message` to the endpoint of `node` (its ``EngineIOEndpoint/receiveFromPeer(_:)``);
    /// the messages one thread sends arrive in that order.
    func send(_ message: [UInt8], to node: String)
}

/// Session IDs that name the node holding the session: `<20 random characters>.<node id
/// in hex>`, so that any node finds a session's owner without a lookup. Forging one gains
/// nothing: the named node answers `Session ID unknown` for a session it does not hold.
public enum EngineIOSessionID {
    /// A new session ID of `node` (the plain 20 characters of the reference server when nil).
    public static func make(node: String?) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var generator = SystemRandomNumberGenerator()
        let random = String((0..<20).map { _ in alphabet[Int(generator.next(upperBound: UInt8(64)))] })
        guard let node else { return random }
        return random + "." + node.utf8.map { byte in String(byte >> 4, radix: 16) + String(byte & 15, radix: 16) }.joined()
    }

    /// The node named by a session ID; nil for anything that is not such an ID.
    public static func node(of sid: String) -> String? {
        guard sid.utf8.count <= maxLength, let dot = sid.lastIndex(of: ".") else { return nil }
        let random = sid[..<dot].utf8
        let hex = Array(sid[sid.index(after: dot)...].utf8)
        guard random.count == 20, random.allSatisfy(isRandomCharacter), !hex.isEmpty, hex.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: hex.count, by: 2) {
            guard let high = hexValue(hex[index]), let low = hexValue(hex[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    static let maxLength = 20 + 1 + 2 * 64

    private static func isRandomCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"):
            true
        default: false
        }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}

/// What endpoints of different nodes tell each other about a session one of them holds:
/// a header line of tab-separated fields, a newline, then the body as it is (binary-safe).
///
/// * `Q <from> <id> <operation> <sid>` + body: a request to the session's node. Polls,
///   POSTs and `ws-open` are answered with `R`; the frames of a relayed WebSocket
///   (`ws-t`, `ws-b`) and its end (`ws-closed`, `ws-big`) are not.
/// * `R <id> <status> <code>` + body: the answer — 200 with the body, or the Engine.IO
///   error (HTTP status and code).
/// * `F <id> t|b` + payload, `C <id> <close code>`: a frame for, or the end of, a
///   WebSocket that the requesting node relays (`id` is its `ws-open`'s).
enum EngineIOPeerMessage: Sendable, Equatable {
    case request(from: String, id: UInt64, operation: Operation, sid: String, body: [UInt8])
    case reply(id: UInt64, response: EngineIOReply.Response)
    case frame(id: UInt64, frame: EngineIOFrame)
    case close(id: UInt64, code: UInt16)

    enum Operation: String, Sendable {
        case poll
        case post
        /// A POST whose body was larger than `maxPayload`.
        case postTooLarge = "post-too-large"
        case webSocketOpen = "ws-open"
        case webSocketText = "ws-t"
        case webSocketBinary = "ws-b"
        case webSocketClosed = "ws-closed"
        /// The relayed socket sent a message larger than `maxPayload`.
        case webSocketTooLarge = "ws-big"
    }

    var encoded: [UInt8] {
        let header: [String]
        var body: [UInt8] = []
        switch self {
        case .request(let from, let id, let operation, let sid, let bytes):
            header = ["Q", from, String(id), operation.rawValue, sid]
            body = bytes
        case .reply(let id, .body(let text)):
            header = ["R", String(id), "200", "0"]
            body = Array(text.utf8)
        case .reply(let id, .failure(let error)):
            header = ["R", String(id), String(error.status), String(error.code)]
        case .reply(let id, .pending):
            header = ["R", String(id), "500", "0"]
        case .frame(let id, .text(let text)):
            header = ["F", String(id), "t"]
            body = Array(text.utf8)
        case .frame(let id, .binary(let bytes)):
            header = ["F", String(id), "b"]
            body = bytes
        case .close(let id, let code):
            header = ["C", String(id), String(code)]
        }
        return Array(header.joined(separator: "\t").utf8) + [0x0A] + body
    }

    init?(encoded bytes: [UInt8]) {
        guard let newline = bytes.firstIndex(of: 0x0A) else { return nil }
        let fields = bytes[..<newline].split(separator: 0x09, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        let body = Array(bytes[(newline + 1)...])
        guard let kind = fields.first, fields.count >= 3, let id = UInt64(fields[kind == "Q" ? 2 : 1]) else { return nil }
        switch kind {
        case "Q":
            guard fields.count == 5, let operation = Operation(rawValue: fields[3]) else { return nil }
            self = .request(from: fields[1], id: id, operation: operation, sid: fields[4], body: body)
        case "R":
            guard fields.count == 4, let status = Int(fields[2]), let code = Int(fields[3]) else { return nil }
            if status == 200 {
                self = .reply(id: id, response: .body(String(decoding: body, as: UTF8.self)))
            } else {
                let known: [EngineIOServerError] = [
                    .unknownTransport, .unknownSID, .badHandshakeMethod, .badRequest, .forbidden, .unsupportedProtocolVersion,
                    .payloadTooLarge,
                ]
                self = .reply(id: id, response: .failure(known.first { $0.status == status && $0.code == code } ?? .badRequest))
            }
        case "F":
            guard fields.count == 3, fields[2] == "t" || fields[2] == "b" else { return nil }
            self = .frame(id: id, frame: fields[2] == "t" ? .text(String(decoding: body, as: UTF8.self)) : .binary(body))
        case "C":
            guard fields.count == 3, let code = UInt16(fields[2]) else { return nil }
            self = .close(id: id, code: code)
        default:
            return nil
        }
    }
}
