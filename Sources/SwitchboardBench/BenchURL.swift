/// A parsed `scheme://host[:port][/path][?query]` address for the bench's plain-TCP
/// clients: `http` and `ws` only (no TLS), no user info, no fragment.
public struct BenchURL: Sendable, Equatable, CustomStringConvertible {
    /// `http` or `ws`.
    public var scheme: String
    /// A host name or an IPv4 address (IPv6 in brackets is kept without them).
    public var host: String
    /// The port; 80 when the URL names none.
    public var port: Int
    /// The request target: the path (at least `/`) and the query, if any.
    public var target: String

    /// Parses `string`; nil for another scheme, a missing host or a malformed port.
    public init?(_ string: String) {
        guard let separator = string.firstRange(of: "://") else { return nil }
        let scheme = string[..<separator.lowerBound].lowercased()
        guard scheme == "http" || scheme == "ws" else { return nil }
        let rest = string[separator.upperBound...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var target = String(rest[authorityEnd...])
        if target.hasPrefix("?") { target = "/" + target }
        if target.isEmpty { target = "/" }
        var host = Substring(authority)
        var port = 80
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let after = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let parsed = Int(after.dropFirst()) else { return nil }
                port = parsed
            }
        } else if let colon = host.lastIndex(of: ":") {
            guard let parsed = Int(host[host.index(after: colon)...]) else { return nil }
            port = parsed
            host = host[..<colon]
        }
        guard !host.isEmpty, !host.contains("@"), (1...65535).contains(port) else { return nil }
        self.scheme = scheme
        self.host = String(host)
        self.port = port
        self.target = target
    }

    /// The `Host` header value.
    public var hostHeader: String { port == 80 ? host : "\(host):\(port)" }

    /// The path without the query.
    public var path: String { String(target.prefix { $0 != "?" }) }

    /// This server with `target` replaced (`path` must begin with `/`).
    public func with(target: String, scheme: String? = nil) -> BenchURL {
        var copy = self
        copy.target = target
        if let scheme { copy.scheme = scheme }
        return copy
    }

    public var description: String { "\(scheme)://\(hostHeader)\(target)" }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
public func percentEncoded(_ value: String) -> String {
    var out = ""
    for byte in value.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = Array("0123456789ABCDEF".utf8)
            out.unicodeScalars.append("%")
            out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte >> 4)]))
            out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte & 0xF)]))
        }
    }
    return out
}
