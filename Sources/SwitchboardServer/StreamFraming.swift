import NIOCore
import SwitchboardCore

/// How a streaming HTTP transport wraps each native JSON event. The JSON bytes are shared
/// by every recipient; only the small per-connection parts (SSE's `id:` cursor line, the
/// iframe callback name) are written per connection.
enum StreamFraming: Sendable {
    /// `text/event-stream`: `id:` = the connection's cursor (stored events only),
    /// `event:` = type, `data:` = JSON.
    case sse
    /// Chunked `text/html`: `<script>parent.<callback>(JSON);</script>`.
    case iframe(callback: String)

    var contentType: String {
        switch self {
        case .sse: "text/event-stream; charset=utf-8"
        case .iframe: "text/html; charset=utf-8"
        }
    }

    var transport: Transport {
        switch self {
        case .sse: .sse
        case .iframe: .iframe
        }
    }

    /// Written once when the stream opens.
    func preamble(retryMilliseconds: Int) -> String {
        switch self {
        case .sse:
            // 2 KiB padding comment: some proxies buffer the first bytes of a response.
            ":" + String(repeating: " ", count: 2048) + "\nretry: \(retryMilliseconds)\n\n"
        case .iframe:
            // Old browsers render a streamed document only after ~1-4 KiB arrived.
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>switchboard</title></head><body>\n<!--"
                + String(repeating: " ", count: 4096) + "-->\n"
        }
    }

    /// A keep-alive that carries no event.
    var keepAlive: String {
        switch self {
        case .sse: ": keep-alive\n\n"
        case .iframe: "<!-- keep-alive -->\n"
        }
    }

    /// Written before the shared JSON of one event.
    func prefix(type: String, cursor: String?) -> String {
        switch self {
        case .sse:
            if let cursor { return "id: \(cursor)\nevent: \(type)\ndata: " }
            return "event: \(type)\ndata: "
        case .iframe(let callback):
            return "<script>parent.\(callback)("
        }
    }

    /// Written after the shared JSON of one event.
    var suffix: String {
        switch self {
        case .sse: "\n\n"
        case .iframe: ");</script>\n"
        }
    }

    /// A farewell before the server ends the stream (drain, slow consumer).
    func farewell(reason: String, retryMilliseconds: Int) -> String {
        switch self {
        case .sse: ": \(reason)\nretry: \(retryMilliseconds)\n\n"
        case .iframe: "<!-- \(reason.replacingDashes) -->\n"
        }
    }
}

extension String {
    /// Makes text safe inside an HTML comment.
    var replacingDashes: String { String(map { $0 == "-" || $0 == ">" || $0 == "<" ? " " : $0 }) }
}

/// `callback` parameters (JSONP, iframe, `GET /api/send`): `^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$`.
enum CallbackName {
    static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= 64 else { return false }
        func isLetter(_ b: UInt8) -> Bool {
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b)
                || b == UInt8(ascii: "_") || b == UInt8(ascii: "$")
        }
        guard isLetter(first) else { return false }
        return bytes.dropFirst().allSatisfy { isLetter($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: ".") }
    }
}
