// swift-tools-version: 6.1
// Benchmarks live in their own package so that the root build never compiles them.
import PackageDescription

let package = Package(
    name: "RaftLiteBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "RaftLite", path: "../"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // The core alone: 3 voters in one process, in-memory messages and storage, the reference workload of
        // ../shared/bench/core (etcd_core_bench.go), loop for loop.
        .executableTarget(
            name: "RaftCoreBench",
            dependencies: [.product(name: "RaftCore", package: "RaftLite")],
            swiftSettings: []
        ),
        // The write-ahead log: group commit against the raw sync rate, and restart time.
        .executableTarget(
            name: "WALBench",
            dependencies: [
                .product(name: "RaftStorage", package: "RaftLite"),
                .product(name: "RaftCore", package: "RaftLite"),
            ]
        ),
        // What a down follower costs the leader in memory, with real nodes on loopback TCP.
        .executableTarget(
            name: "NodeMemoryBench",
            dependencies: [
                .product(name: "RaftLite", package: "RaftLite"),
                .product(name: "RaftCore", package: "RaftLite"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
