import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Where `swift build` put the `raft-lite` executable: next to the running test bundle (or `RAFT_LITE_BINARY`).
public func raftLiteExecutable() -> String {
    if let path = ProcessInfo.processInfo.environment["RAFT_LITE_BINARY"] { return path }
    let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("raft-lite").path
}

/// A child process whose standard input the test writes to and whose output lines it collects.
public final class ChildProcess: @unchecked Sendable {
    // @unchecked Sendable: `lines` and `partial` are guarded by `box`; the rest is set once in init.
    public let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let box = NIOLockedValueBox<(lines: [String], partial: [UInt8], exited: Bool)>(([], [], false))
    public let label: String

    /// Starts `executable` with `arguments`; stderr joins stdout. `environment` adds to (or replaces variables of)
    /// this process's environment.
    public init(_ executable: String, _ arguments: [String], label: String, environment: [String: String] = [:]) throws
    {
        self.label = label
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        let box = self.box
        output.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            box.withLockedValue { state in
                if data.isEmpty {
                    state.exited = true
                    return
                }
                state.partial.append(contentsOf: data)
                while let newline = state.partial.firstIndex(of: 10) {
                    state.lines.append(String(decoding: state.partial[..<newline], as: UTF8.self))
                    state.partial.removeSubrange(...newline)
                }
            }
        }
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var lines: [String] { box.withLockedValue { $0.lines } }
    public var isRunning: Bool { process.isRunning }

    /// Writes a line to the child's standard input; false if the child is gone.
    @discardableResult
    public func send(_ line: String) -> Bool {
        let bytes = Array((line + "\n").utf8)
        let fd = input.fileHandleForWriting.fileDescriptor
        return bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress.map { $0 + done }, raw.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
    }

    /// Closes the child's standard input (end of file).
    public func closeInput() {
        try? input.fileHandleForWriting.close()
    }

    public func signal(_ signal: Int32) {
        if process.isRunning { kill(process.processIdentifier, signal) }
    }

    /// SIGKILL, and wait until it is gone.
    public func kill9() {
        signal(SIGKILL)
        process.waitUntilExit()
    }

    /// Waits until the process exits, at most `seconds`; returns its status, or nil if it is still running.
    public func waitForExit(seconds: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Waits until some output line satisfies `predicate`; returns it.
    public func waitForLine(seconds: Double, where predicate: (String) -> Bool) async -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let line = lines.first(where: predicate) { return line }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return lines.first(where: predicate)
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        output.fileHandleForReading.readabilityHandler = nil
    }
}

/// A fresh temporary directory, removed when this value is released.
public final class ScratchDirectory: Sendable {
    public let path: String

    public init(_ prefix: String = "raftlite") {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs the `raft-lite` binary with `arguments` to its end, `environment` added to this process's; its exit status
/// and what it printed (stdout and stderr together).
public func runRaftLite(_ arguments: [String], environment: [String: String] = [:]) throws -> (
    status: Int32, output: String
) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: raftLiteExecutable())
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
