import Logging
import SwitchboardCore
import SwitchboardRedis

/// Builds the Redis broker for `--redis`.
func makeRedisBroker(url: String, prefix: String, history: Int, minReplicas: Int, node: String, logger: Logger) throws -> any Broker {
    var configuration = RedisBroker.Configuration(url: try RedisURL(url), keyPrefix: prefix, historyLimit: history)
    configuration.minReplicas = minReplicas
    return RedisBroker(configuration: configuration, logger: logger)
}
