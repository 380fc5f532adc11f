import ArgumentParser
import Hummingbird
import Logging
import SwitchboardCore
import SwitchboardJWT
import SwitchboardRedis
import SwitchboardServer

#if canImport(Glibc)
import Glibc
#endif

/// `switchboard serve`: one edge node. Every flag has an environment variable.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one node.")

    @Option(help: "Address to listen on (HOST).")
    var host: String = env("HOST") ?? "127.0.0.1"

    @Option(help: "Port to listen on (PORT).")
    var port: Int = env("PORT").flatMap(Int.init) ?? 8080

    @Option(help: "Redis URL redis://[:password@]host:port[/db], redis+sentinel://[:password@]host:port[,host:port…]/MASTER[/db] for a master found through Sentinel, or redis+cluster://[:password@]host:port[,host:port…] for a Redis Cluster (REDIS_URL). Without it: the in-process broker.")
    var redis: String?

    @Option(name: .customLong("node-id"), help: "This node's id (NODE_ID; default: the hostname and port).")
    var nodeID: String?

    @Option(name: .customLong("redis-prefix"), help: "Prefix of every Redis key and channel (SWITCHBOARD_REDIS_PREFIX).")
    var redisPrefix: String = env("SWITCHBOARD_REDIS_PREFIX") ?? "sb:"

    @Option(name: .customLong("redis-min-replicas"), help: "Replicas that must confirm a publish (WAIT) before it is acknowledged; 0 = ack at once (SWITCHBOARD_REDIS_MIN_REPLICAS).")
    var redisMinReplicas: Int = env("SWITCHBOARD_REDIS_MIN_REPLICAS").flatMap(Int.init) ?? 0

    @Option(name: .customLong("redis-partitions"), help: "Redis Cluster only: partitions rooms and nicknames hash into, the same on every node; 1–1024 (SWITCHBOARD_REDIS_PARTITIONS).")
    var redisPartitions: Int = env("SWITCHBOARD_REDIS_PARTITIONS").flatMap(Int.init) ?? 64

    @Option(help: "Messages kept per stream for resume (SWITCHBOARD_HISTORY).")
    var history: Int = env("SWITCHBOARD_HISTORY").flatMap(Int.init) ?? 1000

    @Option(name: .customLong("max-text"), help: "Longest text in Unicode scalars (SWITCHBOARD_MAX_TEXT).")
    var maxText: Int = env("SWITCHBOARD_MAX_TEXT").flatMap(Int.init) ?? 4096

    @Option(name: .customLong("allowed-origins"), help: "Comma-separated origins allowed for CORS and WebSocket, or * (SWITCHBOARD_ALLOWED_ORIGINS).")
    var allowedOrigins: String = env("SWITCHBOARD_ALLOWED_ORIGINS") ?? ""

    @Option(name: .customLong("max-connections"), help: "Open connections per node (SWITCHBOARD_MAX_CONNECTIONS).")
    var maxConnections: Int = env("SWITCHBOARD_MAX_CONNECTIONS").flatMap(Int.init) ?? 100_000

    @Option(name: .customLong("max-connections-per-ip"), help: "Open connections per client address (SWITCHBOARD_MAX_CONNECTIONS_PER_IP).")
    var maxConnectionsPerIP: Int = env("SWITCHBOARD_MAX_CONNECTIONS_PER_IP").flatMap(Int.init) ?? 1_000

    @Option(name: .customLong("max-message-bytes"), help: "Largest WebSocket message / HTTP body in bytes (SWITCHBOARD_MAX_MESSAGE_BYTES).")
    var maxMessageBytes: Int = env("SWITCHBOARD_MAX_MESSAGE_BYTES").flatMap(Int.init) ?? 64 * 1024

    @Option(name: .customLong("max-rooms"), help: "Rooms per connection (SWITCHBOARD_MAX_ROOMS).")
    var maxRooms: Int = env("SWITCHBOARD_MAX_ROOMS").flatMap(Int.init) ?? 64

    @Option(name: .customLong("join-leave-limit"), help: "joined/left events only in rooms with fewer online nicknames than this; 0 = never (SWITCHBOARD_JOIN_LEAVE_LIMIT).")
    var joinLeaveLimit: Int = env("SWITCHBOARD_JOIN_LEAVE_LIMIT").flatMap(Int.init) ?? 200

    @Option(name: .customLong("members-page"), help: "Members per page of a room's member list by default, and in the snapshots of rooms under --join-leave-limit; 1–1000 (SWITCHBOARD_MEMBERS_PAGE).")
    var membersPage: Int = env("SWITCHBOARD_MEMBERS_PAGE").flatMap(Int.init) ?? 100

    @Option(name: .customLong("rate"), help: "Client events per second per connection, sustained (SWITCHBOARD_RATE).")
    var rate: Double = env("SWITCHBOARD_RATE").flatMap(Double.init) ?? 20

    @Option(name: .customLong("burst"), help: "Client events per connection in a burst (SWITCHBOARD_BURST).")
    var burst: Double = env("SWITCHBOARD_BURST").flatMap(Double.init) ?? 40

    @Option(name: .customLong("max-queued-frames"), help: "Frames queued to a slow client before it is disconnected (SWITCHBOARD_MAX_QUEUED_FRAMES).")
    var maxQueuedFrames: Int = env("SWITCHBOARD_MAX_QUEUED_FRAMES").flatMap(Int.init) ?? 1024

    @Option(name: .customLong("token-ttl"), help: "Token lifetime in seconds (SWITCHBOARD_TOKEN_TTL).")
    var tokenTTL: Int64 = env("SWITCHBOARD_TOKEN_TTL").flatMap(Int64.init) ?? 24 * 3600

    @Option(name: .customLong("poll-window"), help: "Seconds a polling client stays online after its last poll (SWITCHBOARD_POLL_WINDOW).")
    var pollWindow: Int = env("SWITCHBOARD_POLL_WINDOW").flatMap(Int.init) ?? 15

    @Option(name: .customLong("socketio-namespaces"), help: "Comma-separated Socket.IO namespaces besides / (SWITCHBOARD_SOCKETIO_NAMESPACES), e.g. /chat,/admin.")
    var socketIONamespaces: String = env("SWITCHBOARD_SOCKETIO_NAMESPACES") ?? ""

    @Option(name: .customLong("socketio-recovery-window"), help: "Seconds a Socket.IO client may stay away and still recover its session with {pid, offset}; 0: off (SWITCHBOARD_SOCKETIO_RECOVERY_WINDOW).")
    var socketIORecoveryWindow: Int = env("SWITCHBOARD_SOCKETIO_RECOVERY_WINDOW").flatMap(Int.init) ?? 120

    @Option(help: "open: anyone picks a free nickname (POST /api/login, Socket.IO auth {nickname}); closed: only tokens from the application (SWITCHBOARD_LOGIN).")
    var login: String = env("SWITCHBOARD_LOGIN") ?? "open"

    @Option(name: .customLong("jwt-public-key"), help: "PEM public key (RS256/ES256) or JWKS file for the application's JWTs (SWITCHBOARD_JWT_PUBLIC_KEY). HS256: set SWITCHBOARD_JWT_SECRET.")
    var jwtPublicKey: String = env("SWITCHBOARD_JWT_PUBLIC_KEY") ?? ""

    @Option(name: .customLong("jwt-audience"), help: "Required aud of JWTs (SWITCHBOARD_JWT_AUDIENCE).")
    var jwtAudience: String = env("SWITCHBOARD_JWT_AUDIENCE") ?? ""

    @Option(name: .customLong("jwt-issuer"), help: "Required iss of JWTs (SWITCHBOARD_JWT_ISSUER).")
    var jwtIssuer: String = env("SWITCHBOARD_JWT_ISSUER") ?? ""

    @Option(name: .customLong("jwt-nickname-claim"), help: "JWT claim holding the nickname (SWITCHBOARD_JWT_NICKNAME_CLAIM).")
    var jwtNicknameClaim: String = env("SWITCHBOARD_JWT_NICKNAME_CLAIM") ?? "sub"

    @Option(name: .customLong("jwt-avatar-claim"), help: "JWT claim holding the avatar (SWITCHBOARD_JWT_AVATAR_CLAIM).")
    var jwtAvatarClaim: String = env("SWITCHBOARD_JWT_AVATAR_CLAIM") ?? "avatar"

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error (LOG_LEVEL).")
    var logLevel: String = env("LOG_LEVEL") ?? "info"

    /// `/` and the `--socketio-namespaces` (a missing leading `/` is added); nil when
    /// one is malformed.
    var namespaces: [String]? {
        var result = ["/"]
        for part in socketIONamespaces.split(separator: ",") {
            let trimmed = part.trimmingSpaces
            guard !trimmed.isEmpty else { continue }
            let namespace = trimmed.hasPrefix("/") ? trimmed : "/" + trimmed
            guard namespace.utf8.count <= 128, namespace.utf8.allSatisfy({ byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"),
                    UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "/"):
                    true
                default: false
                }
            }) else { return nil }
            if !result.contains(namespace) { result.append(namespace) }
        }
        return result
    }

    /// `--redis`, else `REDIS_URL`.
    var redisURL: String? { redis ?? env("REDIS_URL") }

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0–65535") }
        guard history >= 1 else { throw ValidationError("--history must be at least 1") }
        guard maxText >= 1 else { throw ValidationError("--max-text must be at least 1") }
        guard maxConnections >= 1, maxConnectionsPerIP >= 1 else { throw ValidationError("connection limits must be at least 1") }
        guard maxMessageBytes >= 256 else { throw ValidationError("--max-message-bytes must be at least 256") }
        guard joinLeaveLimit >= 0 else { throw ValidationError("--join-leave-limit must be 0 or more") }
        guard (1...ClientEvent.maxMembersPage).contains(membersPage) else {
            throw ValidationError("--members-page must be 1–\(ClientEvent.maxMembersPage)")
        }
        guard maxRooms >= 1, rate > 0, burst >= 1, maxQueuedFrames >= 1, tokenTTL >= 1, pollWindow >= 1 else {
            throw ValidationError("limits must be positive")
        }
        guard namespaces != nil else {
            throw ValidationError("--socketio-namespaces: each namespace is / followed by letters, digits, _ - . : /")
        }
        guard ServerConfiguration.LoginMode(rawValue: login) != nil else { throw ValidationError("--login must be open or closed") }
        guard !jwtNicknameClaim.isEmpty, !jwtAvatarClaim.isEmpty else { throw ValidationError("--jwt-…-claim must not be empty") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level \(logLevel)") }
        if let redis = redisURL {
            // The parse error names what is wrong and hides the password.
            do {
                _ = try RedisTarget(redis)
            } catch {
                throw ValidationError(
                    "malformed Redis URL: \(error); expected redis://[:password@]host:port[/db], redis+sentinel://[:password@]host:port[,host:port…]/MASTER[/db] or redis+cluster://[:password@]host:port[,host:port…]"
                )
            }
        }
        guard (1...RedisClusterPartitions.maxCount).contains(redisPartitions) else {
            throw ValidationError("--redis-partitions must be 1–\(RedisClusterPartitions.maxCount)")
        }
        guard !redisPrefix.contains("{"), !redisPrefix.contains("}") else {
            throw ValidationError("--redis-prefix must not contain { or } (they are Redis Cluster hash tags)")
        }
        guard redisMinReplicas >= 0 else { throw ValidationError("--redis-min-replicas must be 0 or more") }
    }

    func run() async throws {
        limitMallocArenas()
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let node = nodeID ?? env("NODE_ID") ?? "\(hostname())-\(port)"
        let redis = redisURL
        let logger = {
            var logger = Logger(label: "switchboard")
            logger[metadataKey: "node.id"] = .string(node)
            return logger
        }()

        var secrets = (env("SWITCHBOARD_SECRET") ?? "").split(separator: ",").map(String.init).filter { !$0.isEmpty }
        if secrets.isEmpty {
            secrets = [randomSecret()]
            logger.warning("SWITCHBOARD_SECRET is not set: using a random secret; tokens will not work on other nodes or after a restart")
        }
        var chat = ChatConfiguration(nodeID: node)
        chat.eventLimits.maxTextLength = maxText
        chat.eventLimits.maxEventBytes = maxMessageBytes
        chat.maxConnections = maxConnections
        chat.maxConnectionsPerAddress = maxConnectionsPerIP
        chat.maxRoomsPerConnection = maxRooms
        chat.joinLeaveLimit = joinLeaveLimit
        chat.membersPageSize = membersPage
        chat.ratePerSecond = rate
        chat.rateBurst = burst
        chat.tokenLifetimeSeconds = tokenTTL
        var configuration = ServerConfiguration(host: host, port: port, chat: chat, secrets: secrets)
        configuration.apiKey = env("SWITCHBOARD_API_KEY")
        configuration.maxMessageBytes = maxMessageBytes
        configuration.maxQueuedFrames = maxQueuedFrames
        configuration.pollPresenceWindow = .seconds(pollWindow)
        configuration.allowedOrigins = allowedOrigins.split(separator: ",").map { $0.trimmingSpaces }
        configuration.socketIONamespaces = namespaces ?? ["/"]
        configuration.socketIORecoveryWindow = .seconds(max(0, socketIORecoveryWindow))
        configuration.login = ServerConfiguration.LoginMode(rawValue: login) ?? .open
        let externalTokens = await jwtVerifier(maxAvatarBytes: chat.maxAvatarBytes)

        let broker: any Broker
        if let redis {
            let options = RedisOptions(prefix: redisPrefix, history: history, minReplicas: redisMinReplicas, partitions: redisPartitions)
            broker = try makeRedisBroker(url: redis, options: options, node: node, logger: logger)
        } else {
            broker = MemoryBroker(historyLimit: history)
        }
        let server = SwitchboardServer(configuration: configuration, broker: broker, logger: logger, externalTokens: externalTokens)
        let app = try await server.makeApplication { port in
            logger.info("listening", metadata: ["url": "http://\(host):\(port)", "broker": "\(redis == nil ? "memory" : "redis")"])
        }
        do {
            try await server.run(application: app)
        } catch {
            await broker.shutdown()
            fail("cannot serve on \(host):\(port): \(error)")
        }
        await broker.shutdown()
    }
}

extension Serve {
    /// The application's JWT keys (`SWITCHBOARD_JWT_SECRET`, `--jwt-public-key`), or nil
    /// when none is configured. A key that cannot be used stops the node with one line.
    func jwtVerifier(maxAvatarBytes: Int) async -> JWTVerifier? {
        var jwt = JWTConfiguration()
        jwt.secret = env("SWITCHBOARD_JWT_SECRET").flatMap { $0.isEmpty ? nil : $0 }
        if !jwtPublicKey.isEmpty {
            guard let text = readSmallFile(jwtPublicKey, limit: 1 << 20) else {
                fail("--jwt-public-key: cannot read \(jwtPublicKey) (at most 1 MiB)")
            }
            jwt.publicKey = text
        }
        jwt.audience = jwtAudience.isEmpty ? nil : jwtAudience
        jwt.issuer = jwtIssuer.isEmpty ? nil : jwtIssuer
        jwt.nicknameClaim = jwtNicknameClaim
        jwt.avatarClaim = jwtAvatarClaim
        jwt.maxAvatarBytes = maxAvatarBytes
        guard jwt.isEnabled else { return nil }
        do {
            return try await JWTVerifier(jwt)
        } catch {
            fail("\(error)")
        }
    }
}

/// The bytes of a file of at most `limit` bytes, as UTF-8 text.
func readSmallFile(_ path: String, limit: Int) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return nil }
        if n == 0 { break }
        bytes += chunk[0..<n]
        if bytes.count > limit { return nil }
    }
    return String(validating: bytes, as: UTF8.self)
}

/// Prints one clear line on stderr and exits non-zero.
func fail(_ message: String, code: Int32 = 1) -> Never {
    FileHandleOutput.standardError("switchboard: error: \(message)\n")
    exit(code == 0 ? 1 : code)
}

enum FileHandleOutput {
    static func standardError(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    }
}

/// At most two glibc malloc arenas (unless `MALLOC_ARENA_MAX` says otherwise). glibc
/// gives each new thread that meets lock contention an arena of its own, up to 8 per
/// core; the event loops and the cooperative pool then spread connection state over
/// many arenas, each of which keeps its high-water mark, and RSS under connection churn
/// rose in steps of 3–5 MB for tens of thousands of sessions. With two it levels off
/// after ~8,000 sessions (docs/operations.md, "Memory"); fan-out throughput measured the
/// same (1,000 subscribers × 1,000 msg/s, 3 runs each: 427k vs 401k deliveries/s).
func limitMallocArenas() {
    #if canImport(Glibc)
    guard env("MALLOC_ARENA_MAX") == nil, let symbol = dlsym(nil, "mallopt") else { return }
    // mallopt is declared in malloc.h, which the Glibc module does not export.
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
    let arenaMax: Int32 = -8  // M_ARENA_MAX
    _ = mallopt(arenaMax, 2)
    #endif
}

func env(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    let string = String(cString: value)
    return string.isEmpty ? nil : string
}

func hostname() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count) == 0 else { return "node" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func randomSecret() -> String {
    (0..<4).map { _ in String(UInt64.random(in: .min ... .max), radix: 16) }.joined()
}

extension Substring {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
