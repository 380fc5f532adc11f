/// Seed nodes of a Redis Cluster: `redis+cluster://[[user]:password@]host:port[,host:port…]`.
///
/// The seeds only bootstrap discovery (`CLUSTER SLOTS`); the topology is learned from the
/// cluster and kept up to date. Every node shares the credentials. A cluster has only
/// database 0, so there is no `/db`. `description` never shows the password.
public struct RedisClusterURL: Sendable, Equatable, CustomStringConvertible {
    public static let scheme = "redis+cluster://"

    /// One `RedisURL` per seed, each with the shared credentials.
    public var seeds: [RedisURL]

    public init(seeds: [RedisURL]) {
        self.seeds = seeds
    }

    /// Parses `redis+cluster://[[user]:password@]host:port[,host:port…]`.
    /// - Throws: `RedisURL.ParseError` naming what is wrong with `string`.
    public init(_ string: String) throws(RedisURL.ParseError) {
        func fail(_ why: String) -> RedisURL.ParseError {
            RedisURL.ParseError(description: "invalid Redis Cluster URL '\(RedisURL.redacted(string))': \(why)")
        }
        guard string.lowercased().hasPrefix(Self.scheme) else { throw fail("it must start with \(Self.scheme)") }
        var rest = Substring(string.dropFirst(Self.scheme.count))
        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            throw fail("query strings and fragments are not supported (\(rest[query...]))")
        }
        if let slash = rest.firstIndex(of: "/") {
            guard rest[slash...] == "/" else { throw fail("a cluster has no database to select (remove '\(rest[slash...])')") }
            rest = rest[..<slash]
        }
        var userinfo = ""
        if let at = rest.lastIndex(of: "@") {
            userinfo = String(rest[...at])
            rest = rest[rest.index(after: at)...]
        }
        var seeds: [RedisURL] = []
        for part in rest.split(separator: ",", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw fail("an empty host in the seed list") }
            do {
                seeds.append(try RedisURL("redis://" + userinfo + part))
            } catch {
                // The single-server parser names the problem; say it of this URL.
                let why = error.description.split(separator: "': ", maxSplits: 1).last.map(String.init) ?? "malformed seed"
                throw fail("seed '\(part)': \(why)")
            }
        }
        guard !seeds.isEmpty else { throw fail("no seed host") }
        self.init(seeds: seeds)
    }

    public var description: String {
        guard let first = seeds.first else { return Self.scheme }
        var credentials = ""
        if first.username != nil || first.password != nil {
            credentials = "\(first.username ?? ""):\(first.password == nil ? "" : "***")@"
        }
        let hosts = seeds.map { ($0.host.contains(":") ? "[\($0.host)]" : $0.host) + ":\($0.port)" }
        return Self.scheme + credentials + hosts.joined(separator: ",")
    }
}
