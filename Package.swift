// swift-tools-version:6.2
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "switchboard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchboard", targets: ["switchboard"]),
        .library(name: "SwitchboardCore", targets: ["SwitchboardCore"]),
        .executable(name: "socketio-conformance", targets: ["SocketIOConformance"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit", .upToNextMinor(from: "5.7.1")),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // The JSON value type, its writer, and percent-decoding: a leaf both the chat core and
        // the pure Socket.IO packets use.
        .target(name: "SwitchboardJSON", swiftSettings: strict),
        // Identifiers, events, codecs, tokens, the Hub and the Broker protocol with its
        // in-memory implementation. No NIO, HTTP or Redis.
        .target(
            name: "SwitchboardCore",
            dependencies: [
                "SwitchboardJSON",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The system-library shim for libhiredis, nothing else.
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // The only code that touches hiredis.
        .target(
            name: "SwitchboardRedis",
            dependencies: [
                "SwitchboardCore", "CHiredis",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Pure Engine.IO v4 / Socket.IO v5 packets and session state machines. No I/O.
        .target(name: "SocketIO", dependencies: ["SwitchboardJSON"], swiftSettings: strict),
        // The SocketIO module over Hummingbird: Engine.IO endpoints (polling, WebSocket,
        // upgrade) with per-loop sessions and Socket.IO handlers. Shared by the
        // conformance server and the main server.
        .target(
            name: "SocketIOHummingbird",
            dependencies: [
                "SocketIO", "SwitchboardCore", "SwitchboardJSON",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The Engine.IO / Socket.IO test-suite server: the SocketIO module over Hummingbird.
        .executableTarget(
            name: "SocketIOConformance",
            dependencies: [
                "SocketIO", "SocketIOHummingbird", "SwitchboardCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The chat over Socket.IO, without I/O: the `socketio` wire format (one encoding
        // per message per namespace), client events to chat commands, auth, acks.
        .target(
            name: "SwitchboardSocketIO",
            dependencies: ["SwitchboardCore", "SocketIO"],
            swiftSettings: strict
        ),
        // Shared Broker conformance suite: run against MemoryBroker and RedisBroker.
        .target(
            name: "BrokerConformance",
            dependencies: ["SwitchboardCore"],
            swiftSettings: strict
        ),
        // The application's JWTs (HS256, RS256, ES256; PEM or JWKS) as identities, over
        // JWTKit. The core only knows its `ExternalTokenVerifier` role.
        .target(
            name: "SwitchboardJWT",
            dependencies: [
                "SwitchboardCore",
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: strict
        ),
        // Hummingbird routes and one file per transport.
        .target(
            name: "SwitchboardServer",
            dependencies: [
                "SwitchboardCore", "SocketIO", "SocketIOHummingbird", "SwitchboardSocketIO",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.embedInCode("Public")],
            swiftSettings: strict
        ),
        // `switchboard bench`: the load generator (SwiftNIO clients, HdrHistogram).
        .target(
            name: "SwitchboardBench",
            dependencies: [
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "switchboard",
            dependencies: [
                "SwitchboardCore", "SwitchboardServer", "SwitchboardRedis", "SwitchboardBench", "SwitchboardJWT",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SwitchboardCoreTests",
            dependencies: ["SwitchboardCore", "SwitchboardJSON", "BrokerConformance"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SwitchboardRedisTests",
            dependencies: ["SwitchboardCore", "SwitchboardRedis", "BrokerConformance"],
            swiftSettings: strict
        ),
        .testTarget(name: "SocketIOTests", dependencies: ["SocketIO", "SwitchboardJSON"], swiftSettings: strict),
        .testTarget(
            name: "SwitchboardJWTTests",
            dependencies: ["SwitchboardJWT", "SwitchboardCore", .product(name: "JWTKit", package: "jwt-kit")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SwitchboardSocketIOTests",
            dependencies: ["SwitchboardSocketIO", "SocketIO", "SwitchboardCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SwitchboardServerTests",
            dependencies: [
                "SwitchboardServer", "SwitchboardCore", "SocketIOHummingbird", "SocketIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SwitchboardBenchTests",
            dependencies: ["SwitchboardBench", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
