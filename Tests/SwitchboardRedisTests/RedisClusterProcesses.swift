import Foundation
import SwitchboardCore
import SwitchboardRedis
import Synchronization

/// A throwaway Redis Cluster: `masters` (× (1 + replicas)) `redis-server
/// --cluster-enabled yes` on free loopback ports, joined by `redis-cli --cluster create`,
/// killed by `stop()`.
final class RedisClusterProcesses {
    let servers: [RedisServer]
    private let directory: URL

    init(masters: Int, replicas: Int = 0) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-cluster-\(UInt64.random(in: 0...UInt64.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var servers: [RedisServer] = []
        do {
            for _ in 0..<(masters * (1 + replicas)) {
                let port = try Self.freePort()
                servers.append(
                    try RedisServer(
                        port: port,
                        arguments: [
                            "--cluster-enabled", "yes", "--cluster-config-file", directory.appendingPathComponent("nodes-\(port).conf").path,
                            "--cluster-node-timeout", "1000", "--dir", directory.path,
                        ]))
            }
            self.servers = servers
            try Self.run(
                "/usr/bin/redis-cli",
                ["--cluster", "create"] + servers.map { "127.0.0.1:\($0.port)" }
                    + ["--cluster-replicas", String(replicas), "--cluster-yes"])
            let deadline = ContinuousClock.now + .seconds(20)
            while !servers.allSatisfy({ (try? Self.run("/usr/bin/redis-cli", ["-p", String($0.port), "CLUSTER", "INFO"]))?.contains("cluster_state:ok") == true }) {
                guard ContinuousClock.now < deadline else { throw RedisServer.Failure(description: "the cluster did not become ok") }
                usleep(50_000)
            }
        } catch {
            for server in servers { server.stop() }
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    deinit { stop() }

    var url: RedisClusterURL {
        RedisClusterURL(seeds: servers.prefix(1).map { RedisURL(host: "127.0.0.1", port: $0.port) })
    }

    func stop() {
        for server in servers { server.stop() }
        try? FileManager.default.removeItem(at: directory)
    }

    /// A free port whose cluster bus port (+10000) is a valid port too.
    static func freePort() throws -> Int {
        for _ in 0..<100 {
            let port = try RedisServer.freePort()
            if port + 10000 <= 65535 { return port }
        }
        throw RedisServer.Failure(description: "no free port below 55536")
    }

    /// Runs a tool and returns its standard output; throws when it exits non-zero.
    @discardableResult
    static func run(_ path: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw RedisServer.Failure(description: "\(path) \(arguments.joined(separator: " ")) failed: \(text.suffix(500))")
        }
        return text
    }
}

/// Cluster brokers made by one test, shut down before its cluster goes away.
final class ClusterBrokerPool: Sendable {
    private let brokers = Mutex<[RedisClusterBroker]>([])
    let url: RedisClusterURL

    init(cluster: RedisClusterProcesses) {
        self.url = cluster.url
    }

    /// A broker with a key prefix no other test uses.
    func make(historyLimit: Int = 100) -> RedisClusterBroker {
        let broker = RedisClusterBroker(
            configuration: .init(url: url, keyPrefix: "t\(UInt64.random(in: 0...UInt64.max)):", historyLimit: historyLimit))
        brokers.withLock { $0.append(broker) }
        return broker
    }

    func shutdownAll() async {
        for broker in brokers.withLock({ $0 }) { await broker.shutdown() }
    }
}
