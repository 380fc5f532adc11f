import Logging
import SwitchboardCore
import SwitchboardRedis

/// What `--redis` names: one server (`redis://`), a master found through Sentinel
/// (`redis+sentinel://`) or a cluster's seeds (`redis+cluster://`).
enum RedisTarget {
    /// `redis://` or `redis+sentinel://` (then `sentinel` is set): both are one master,
    /// served by `RedisBroker`.
    case server(RedisURL)
    /// `redis+cluster://`: served by `RedisClusterBroker`.
    case cluster(RedisClusterURL)

    /// - Throws: `RedisURL.ParseError`, one line for the operator.
    init(_ string: String) throws(RedisURL.ParseError) {
        if string.lowercased().hasPrefix(RedisClusterURL.scheme) {
            self = .cluster(try RedisClusterURL(string))
        } else {
            self = .server(try RedisURL(string))
        }
    }
}

/// Settings of the Redis broker beyond the URL.
struct RedisOptions {
    var prefix: String
    var history: Int
    /// `--redis-min-replicas`: replicas that confirm a publish before its ack.
    var minReplicas: Int
    /// `--redis-partitions`: partitions of a cluster's key space.
    var partitions: Int
}

/// Builds the Redis broker for `--redis`: `RedisBroker` for `redis://` and
/// `redis+sentinel://`, `RedisClusterBroker` for `redis+cluster://`; `--redis-min-replicas`
/// applies to all three, `--redis-partitions` to a cluster only.
func makeRedisBroker(url: String, options: RedisOptions, node: String, logger: Logger) throws -> any Broker {
    switch try RedisTarget(url) {
    case .server(let parsed):
        var configuration = RedisBroker.Configuration(url: parsed, keyPrefix: options.prefix, historyLimit: options.history)
        configuration.minReplicas = options.minReplicas
        return RedisBroker(configuration: configuration, logger: logger)
    case .cluster(let parsed):
        var configuration = RedisClusterBroker.Configuration(url: parsed, keyPrefix: options.prefix, historyLimit: options.history)
        configuration.minReplicas = options.minReplicas
        configuration.partitions = options.partitions
        return RedisClusterBroker(configuration: configuration, logger: logger)
    }
}
