import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A real-time messaging cluster: stateless edge nodes over Redis.",
        subcommands: [Serve.self, Bench.self],
        defaultSubcommand: Serve.self)

    /// Like ArgumentParser's `main`, but a bad flag is one clear line on stderr and a
    /// non-zero exit (help still prints in full).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .success || error is CleanExit { exit(withError: error) }
            let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            fail(message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message, code: code.rawValue)
        }
    }
}
