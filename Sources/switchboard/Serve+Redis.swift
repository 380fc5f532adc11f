import Logging
import SwitchboardCore
import SwitchboardRedis

/// Builds the Redis broker for `--redis`.
func makeRedisBroker(url: String, prefix: String, history: Int, node: String, logger: Logger) throws -> any Broker {
    let parsed = try RedisURL(url)
    return RedisBroker(configuration: .init(url: parsed, keyPrefix: prefix, historyLimit: history), logger: logger)
}
