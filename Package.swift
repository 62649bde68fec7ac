// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "RaftLite",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "RaftCore", targets: ["RaftCore"]),
        .executable(name: "raft-lite", targets: ["raft-lite"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // The Raft algorithm: pure, deterministic, no I/O, no clock, no threads.
        .target(name: "RaftCore"),
        // The deterministic cluster simulator: a test-support library, used by the tests and the long-run mode.
        .target(
            name: "RaftSimulation",
            dependencies: ["RaftCore"],
            path: "Tests/RaftSimulation"
        ),
        .executableTarget(
            name: "raft-lite",
            dependencies: [
                "RaftCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore", "RaftSimulation"]),
        .testTarget(name: "RaftSimulationTests", dependencies: ["RaftCore", "RaftSimulation"]),
    ],
    swiftLanguageModes: [.v6]
)
