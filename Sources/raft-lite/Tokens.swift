import ArgumentParser
import Foundation
import Logging
import RaftKV

#if canImport(Glibc)
    import Glibc
#endif

/// `raft-lite tokens add|list`: the bearer tokens a node accepts (`serve --tokens-file`).
struct Tokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and list the bearer tokens that `serve --tokens-file` accepts.",
        discussion: """
            A tokens file has one token a line: its role (read or readwrite), the SHA-256 of the token in \
            hexadecimal, and an optional name; # starts a comment. It holds hashes only: a token is shown once, when \
            it is made, and cannot be recovered from the file.
            """,
        subcommands: [Add.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new random token, print it once, and append its hash to the tokens file.",
            discussion: """
                The file is created if needed, with mode 0600. Give every node the same file, and send SIGHUP to \
                running nodes (or restart them) for them to accept the new token.
                """)
        @Option(help: "The tokens file (created if missing).") var tokensFile: String
        @Option(help: "read (GET only) or readwrite.") var role = "readwrite"
        @Option(help: "A name for the token, for people and logs (no spaces at the ends).") var name: String?

        func validate() throws {
            guard TokenRole(rawValue: role) != nil else { throw ValidationError("--role must be read or readwrite") }
            if let name {
                guard !name.isEmpty, name.utf8.count <= 200, !name.contains(where: \.isNewline) else {
                    throw ValidationError("--name must be 1 to 200 bytes on one line")
                }
            }
        }

        func run() throws {
            // A file that exists must be valid before anything is added to it (an empty one is fine).
            if FileManager.default.fileExists(atPath: tokensFile) {
                let text = (try? String(contentsOfFile: tokensFile, encoding: .utf8)) ?? ""
                let hasEntries = text.split(separator: "\n").contains {
                    let t = $0.trimmingCharacters(in: .whitespaces)
                    return !t.isEmpty && !t.hasPrefix("#")
                }
                if hasEntries {
                    do { _ = try TokenTable(contentsOfFile: tokensFile) } catch {
                        throw ValidationError("\(error); fix it before adding a token")
                    }
                }
            }
            let token = TokenTable.generate()
            let entry = TokenTable.Entry(
                role: TokenRole(rawValue: role) ?? .readwrite, digest: TokenTable.digest(of: token),
                name: name?.trimmingCharacters(in: .whitespaces) ?? "")
            try Self.append(entry.line + "\n", to: tokensFile)
            print(token)
            FileHandle.standardError.write(
                Data(
                    "added a \(role) token\(name.map { " \"\($0)\"" } ?? "") to \(tokensFile); it is shown only this once\n"
                        .utf8))
        }

        /// Appends a line, creating the file with mode 0600 (and setting 0600 on one that exists).
        static func append(_ line: String, to path: String) throws {
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw ValidationError("cannot open \(path): \(String(cString: strerror(errno)))")
            }
            defer { close(fd) }
            guard fchmod(fd, 0o600) == 0 else {
                throw ValidationError("cannot make \(path) private (mode 0600): \(String(cString: strerror(errno)))")
            }
            let bytes = Array(line.utf8)
            var done = 0
            while done < bytes.count {
                let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))") }
                done += n
            }
            guard fsync(fd) == 0 else {
                throw ValidationError("cannot sync \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a tokens file and list its tokens' roles, names and hash prefixes.")
        @Option(help: "The tokens file.") var tokensFile: String

        func run() throws {
            let table: TokenTable
            do { table = try TokenTable(contentsOfFile: tokensFile) } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(2)
            }
            for line in layout(
                [["ROLE", "SHA-256", "NAME"]]
                    + table.entries.map {
                        [$0.role.rawValue, String(TokenTable.hex($0.digest).prefix(12)) + "…", $0.name]
                    })
            {
                print(line)
            }
        }
    }
}

/// Reloads a server's tokens file whenever the process gets SIGHUP: a good file replaces the tokens in effect, a bad
/// one is logged (with its line) and the tokens in effect stay. Keep the returned source for as long as it should.
func reloadTokensOnHangup(_ store: TokenStore, logger: Logger) -> any DispatchSourceSignal {
    // The default action of SIGHUP ends the process: ignore it, and let the dispatch source see it.
    signal(SIGHUP, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    source.setEventHandler {
        do {
            let count = try store.reload()
            logger.notice(
                "SIGHUP: reloaded the tokens file", metadata: ["file": "\(store.path ?? "")", "tokens": "\(count)"])
        } catch {
            logger.error("SIGHUP: the tokens file was not reloaded; the tokens in effect stay: \(error)")
        }
    }
    source.resume()
    return source
}
