// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "RaftLite",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "RaftCore", targets: ["RaftCore"]),
        .library(name: "RaftLite", targets: ["RaftLite"]),
        .library(name: "RaftStorage", targets: ["RaftStorage"]),
        // For bringing your own transport: the protocol, and the codec that turns messages into bytes.
        .library(name: "RaftTransport", targets: ["RaftTransport"]),
        // TLS material: development certificates, loading PEM files, contexts for peers and HTTP, reloading.
        .library(name: "RaftTLS", targets: ["RaftTLS"]),
        .library(name: "RaftWire", targets: ["RaftWire"]),
        .library(name: "RaftKVClient", targets: ["RaftKVClient"]),
        .library(name: "RaftTesting", targets: ["RaftTesting"]),
        .executable(name: "raft-lite", targets: ["raft-lite"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        // The Raft algorithm: pure, deterministic, no I/O, no clock, no threads.
        .target(name: "RaftCore"),
        // The binary codec for frames and messages, shared by the transport and its tests.
        .target(
            name: "RaftWire",
            dependencies: ["RaftCore", "CCRC32C", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // CRC-32C with the CPU's instructions (SSE 4.2, Arm's CRC extension), for RaftWire's checksum.
        .target(name: "CCRC32C"),
        // TLS material: development certificates (swift-certificates), PEM files, NIOSSL contexts, reloading.
        .target(
            name: "RaftTLS",
            dependencies: [
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // How messages travel: TCP (optionally mutual TLS) on SwiftNIO, or in memory.
        .target(
            name: "RaftTransport",
            dependencies: [
                "RaftCore", "RaftWire", "RaftTLS",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Durable storage: the write-ahead log with group commit and crash recovery.
        .target(
            name: "RaftStorage",
            dependencies: [
                "RaftCore", "RaftWire",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Test support for users' own tests, with no test framework in it: the lockstep cluster and its scenario
        // scripts, the in-memory transport and cluster, and the storage conformance suite.
        .target(
            name: "RaftTesting",
            dependencies: [
                "RaftCore", "RaftStorage", "RaftTransport", "RaftLite",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The runtime and the public API: RaftNode, cluster configuration, state machines.
        .target(
            name: "RaftLite",
            dependencies: [
                "RaftCore", "RaftTransport", "RaftStorage", "RaftTLS",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The replicated key-value store: its state machine and its HTTP server.
        .target(
            name: "RaftKV",
            dependencies: [
                "RaftCore", "RaftLite", "RaftKVClient", "RaftTLS",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HashTreeCollections", package: "swift-collections"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // A small HTTP/1.1 client for the store: the CLI, the load generator and the tests use it.
        .target(
            name: "RaftKVClient",
            dependencies: [
                "RaftCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // The deterministic cluster simulator: a test-support library, used by the tests and the long-run mode.
        .target(
            name: "RaftSimulation",
            dependencies: ["RaftCore"],
            path: "Tests/RaftSimulation",
            // Optimized even in debug builds: 10,000 schedules in CI are mostly the simulator's own bookkeeping,
            // several times slower unoptimized. (A test-support target, in no product: no dependent builds it.)
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        // Test support: a file system in memory that models the page cache and power cuts, for the storage tests.
        .target(
            name: "StorageTesting",
            dependencies: ["RaftCore", "RaftStorage", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            path: "Tests/StorageTesting"
        ),
        .executableTarget(
            name: "raft-lite",
            dependencies: [
                "RaftCore", "RaftLite", "RaftKV", "RaftKVClient", "RaftTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Test support: child processes (the real raft-lite binary) for crash and end-to-end tests.
        .target(
            name: "ProcessTesting",
            dependencies: ["RaftTLS", "RaftLite", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            path: "Tests/ProcessTesting"
        ),
        // Test support: the Jepsen-style harness (proxies, clients, nemesis) and the linearizability checker.
        .target(
            name: "JepsenKit",
            dependencies: [
                "ProcessTesting", "RaftKVClient", "RaftCore", "RaftTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/JepsenKit"
        ),
        .testTarget(name: "RaftJepsenTests", dependencies: ["JepsenKit", "ProcessTesting", "RaftCore"]),
        // Scripts/*.txt are read from the source tree (through #filePath), so that a rewrite can update them.
        .testTarget(
            name: "RaftCoreTests", dependencies: ["RaftCore", "RaftSimulation", "RaftTesting"], exclude: ["Scripts"]),
        .testTarget(
            name: "RaftSimulationTests",
            dependencies: [
                "RaftCore", "RaftSimulation", "RaftTesting",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "RaftLiteTests",
            dependencies: [
                "RaftCore", "RaftLite", "RaftWire", "RaftTransport", "RaftStorage", "RaftTesting", "ProcessTesting",
                "StorageTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "RaftStorageTests",
            dependencies: ["RaftCore", "RaftStorage", "RaftTesting", "RaftWire", "StorageTesting"]
        ),
        .testTarget(
            name: "RaftKVTests",
            dependencies: [
                "RaftKV", "RaftKVClient", "ProcessTesting", "RaftLite", "RaftTransport", "RaftTesting", "RaftCore",
                "RaftTLS", .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "RaftWireTests",
            dependencies: ["RaftCore", "RaftWire", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "RaftTransportTests",
            dependencies: [
                "RaftCore", "RaftWire", "RaftTransport", "RaftTesting", "RaftTLS", "RaftLite",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
