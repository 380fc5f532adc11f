import SwitchboardCore

extension RedisURL {
    /// `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/MASTER[/db]`: the
    /// sentinels to ask for the current master of the group `masterName`.
    ///
    /// The credentials and the database are the data nodes' (master and replicas); the
    /// sentinels are asked without a password. A sentinel's port defaults to 26379.
    public struct Sentinel: Sendable, Equatable {
        /// One sentinel's address.
        public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
            public var host: String
            public var port: Int

            public init(host: String, port: Int = Sentinel.defaultPort) {
                self.host = host
                self.port = port
            }

            public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        }

        public static let scheme = "redis+sentinel://"
        public static let defaultPort = 26379

        /// Asked in this order; at least one.
        public var sentinels: [Endpoint]
        /// The name the sentinels monitor the master under (`sentinel monitor NAME …`).
        public var masterName: String

        public init(sentinels: [Endpoint], masterName: String) {
            self.sentinels = sentinels
            self.masterName = masterName
        }
    }

    /// A Sentinel URL for `sentinel` with the data nodes' credentials and database.
    public init(
        sentinel: Sentinel, username: String? = nil, password: String? = nil, database: Int = 0
    ) {
        let first = sentinel.sentinels.first ?? Sentinel.Endpoint(host: "localhost")
        self.init(host: first.host, port: first.port, username: username, password: password, database: database)
        self.sentinel = sentinel
    }

    /// Parses `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/MASTER[/db]`.
    static func parseSentinel(_ string: String) throws(ParseError) -> RedisURL {
        func fail(_ why: String) -> ParseError { ParseError(description: "invalid Redis URL '\(Self.redacted(string))': \(why)") }
        var rest = Substring(string.dropFirst(Sentinel.scheme.count))
        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            throw fail("query strings and fragments are not supported (\(rest[query...]))")
        }
        guard let slash = rest.firstIndex(of: "/") else { throw fail("the master name is missing (…/MASTER)") }
        let path = rest[rest.index(after: slash)...].split(separator: "/", omittingEmptySubsequences: false)
        rest = rest[..<slash]
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let colon = userinfo.firstIndex(of: ":")
            let user = colon.map { userinfo[..<$0] } ?? ""
            guard let decodedUser = PercentDecoding.decode(user),
                let decodedPassword = PercentDecoding.decode(colon.map { userinfo[userinfo.index(after: $0)...] } ?? userinfo)
            else { throw fail("bad percent-encoding in the credentials") }
            username = user.isEmpty ? nil : decodedUser
            password = decodedPassword.isEmpty ? nil : decodedPassword
        }
        var sentinels: [Sentinel.Endpoint] = []
        for part in rest.split(separator: ",", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw fail("a sentinel address is empty") }
            do throws(EndpointError) {
                sentinels.append(try Self.sentinelEndpoint(part))
            } catch {
                throw fail(error.why)
            }
        }
        guard !path.isEmpty, !path[0].isEmpty else { throw fail("the master name is missing (…/MASTER)") }
        guard let masterName = PercentDecoding.decode(path[0]), !masterName.isEmpty,
            masterName.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F })
        else { throw fail("the master name '\(path[0])' is malformed") }
        var database = 0
        if path.count > 2 || (path.count == 2 && path[1].isEmpty) {
            throw fail("unexpected text after the master name and database")
        }
        if path.count == 2 {
            guard path[1].allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(path[1]), value >= 0 else {
                throw fail("the database '\(path[1])' is not a non-negative number")
            }
            database = value
        }
        return RedisURL(
            sentinel: Sentinel(sentinels: sentinels, masterName: masterName), username: username, password: password,
            database: database)
    }

    /// `host[:port]` or `[ipv6][:port]`; the port defaults to the sentinels' 26379.
    private static func sentinelEndpoint(_ text: Substring) throws(EndpointError) -> Sentinel.Endpoint {
        let (host, port) = try endpoint(
            text, defaultPort: Sentinel.defaultPort, missingHost: "a sentinel host is missing in '\(text)'",
            context: " in '\(text)'", forbidden: " @/,")
        return Sentinel.Endpoint(host: host, port: port)
    }

    func sentinelDescription(_ sentinel: Sentinel) -> String {
        var credentials = ""
        if username != nil || password != nil {
            credentials = "\(username ?? ""):\(password == nil ? "" : "***")@"
        }
        let hosts = sentinel.sentinels.map(\.description).joined(separator: ",")
        return "\(Sentinel.scheme)\(credentials)\(hosts)/\(sentinel.masterName)/\(database)"
    }
}
