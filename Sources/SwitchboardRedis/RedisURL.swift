import SwitchboardCore

/// Where a Redis server is and how to log in: `redis://[[user]:password@]host[:port][/db]`,
/// or through Sentinel: `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/MASTER[/db]`
/// (see `Sentinel`).
///
/// The password (and user) may be percent-encoded. The port defaults to 6379 and the
/// database to 0. `description` never shows the password.
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
    /// Why a string is not a Redis URL; `description` is meant for an operator.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    public var host: String
    public var port: Int
    /// The ACL user for `AUTH user password` (Redis 6+); nil for plain `AUTH password`.
    public var username: String?
    public var password: String?
    /// Selected with `SELECT` on every (re)connect.
    public var database: Int
    /// Set for `redis+sentinel://`: the master is looked up through these sentinels on
    /// every (re)connect, and `host`/`port` are only the first sentinel's.
    public var sentinel: Sentinel?

    public static let defaultPort = 6379

    public init(
        host: String, port: Int = RedisURL.defaultPort, username: String? = nil, password: String? = nil, database: Int = 0
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]`.
    /// - Throws: `ParseError` naming what is wrong with `string`.
    public init(_ string: String) throws(ParseError) {
        func fail(_ why: String) -> ParseError { ParseError(description: "invalid Redis URL '\(Self.redacted(string))': \(why)") }
        if string.lowercased().hasPrefix(Sentinel.scheme) {
            self = try Self.parseSentinel(string)
            return
        }
        let scheme = "redis://"
        if string.lowercased().hasPrefix("rediss://") { throw fail("TLS (rediss://) is not supported by hiredis 0.14") }
        guard string.lowercased().hasPrefix(scheme) else { throw fail("it must start with redis:// or redis+sentinel://") }
        var rest = Substring(string.dropFirst(scheme.count))
        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            throw fail("query strings and fragments are not supported (\(rest[query...]))")
        }
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                let user = userinfo[..<colon]
                guard let decodedUser = PercentDecoding.decode(user),
                    let decodedPassword = PercentDecoding.decode(userinfo[userinfo.index(after: colon)...])
                else { throw fail("bad percent-encoding in the credentials") }
                username = user.isEmpty ? nil : decodedUser
                password = decodedPassword
            } else {
                // `redis://secret@host` is commonly meant as a password.
                guard let decoded = PercentDecoding.decode(userinfo) else { throw fail("bad percent-encoding in the credentials") }
                password = decoded
            }
            if password?.isEmpty == true { password = nil }
        }
        let endpoint: (host: String, port: Int)
        do throws(EndpointError) {
            endpoint = try Self.endpoint(rest, defaultPort: Self.defaultPort, missingHost: "the host is missing", context: "", forbidden: " @/")
        } catch {
            throw fail(error.why)
        }
        var database = 0
        if !path.isEmpty {
            guard path.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(path), value >= 0 else {
                throw fail("the database '\(path)' is not a non-negative number")
            }
            database = value
        }
        self.init(host: endpoint.host, port: endpoint.port, username: username, password: password, database: database)
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        if let sentinel { return sentinelDescription(sentinel) }
        var credentials = ""
        if username != nil || password != nil {
            credentials = "\(username ?? ""):\(password == nil ? "" : "***")@"
        }
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "redis://\(credentials)\(shownHost):\(port)/\(database)"
    }

    static func redacted(_ string: String) -> String {
        guard let schemeEnd = string.firstRange(of: "://"), let at = string.lastIndex(of: "@"), at > schemeEnd.upperBound else {
            return string
        }
        return String(string[..<schemeEnd.upperBound]) + "***" + String(string[at...])
    }
}

extension RedisURL {
    /// `host[:port]` or `[ipv6][:port]`, for a Redis address and for each sentinel's.
    /// `context` ends the messages that must say which address (" in '…'" in a list);
    /// `forbidden` are the characters a host may not hold besides the separators.
    static func endpoint(
        _ text: Substring, defaultPort: Int, missingHost: String, context: String, forbidden: String
    ) throws(EndpointError) -> (host: String, port: Int) {
        var host: Substring
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw EndpointError("unterminated IPv6 address\(context)") }
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw EndpointError("unexpected text after the IPv6 address\(context)") }
                portText = after.dropFirst()
            }
        } else if let colon = text.firstIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            host = text
        }
        guard !host.isEmpty else { throw EndpointError(missingHost) }
        guard !host.contains(where: { forbidden.contains($0) }) else { throw EndpointError("the host '\(host)' is malformed") }
        var port = defaultPort
        if let portText {
            guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(portText),
                (1...65535).contains(value)
            else { throw EndpointError("the port '\(portText)' is not a number from 1 to 65535") }
            port = value
        }
        return (String(host), port)
    }
}

/// Why an address is malformed (wrapped into `RedisURL.ParseError`).
struct EndpointError: Error {
    let why: String
    init(_ why: String) { self.why = why }
}
