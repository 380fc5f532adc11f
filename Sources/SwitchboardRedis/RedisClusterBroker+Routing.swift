import Logging
import SwitchboardCore
import Synchronization

extension RedisClusterBroker {
    /// Runs `commands` back to back on the master of `slot` and returns their replies,
    /// following `MOVED` (the map is updated and re-read) and `ASK` (`ASKING` first, on
    /// the named master), and retrying `TRYAGAIN`, `CLUSTERDOWN`, a locked stream
    /// (`SBLOCKED`) or a master not connected yet, until `retryTimeout`. A command lost
    /// with its connection is not retried (it may have run): that fails with `unavailable`.
    /// The first command's error reply decides; the others' replies are returned as they are.
    func send(_ commands: [RedisCommand], slot: Int) async throws -> [RESPValue] {
        let deadline = ContinuousClock.now + configuration.retryTimeout
        var ask: RedisNodeAddress?
        var why = "no master for slot \(slot)"
        while true {
            try checkRunning()
            var batch = commands
            let target: RedisClusterShard?
            if let asked = ask {
                target = shard(at: asked)
                batch.insert(RedisCommand(["ASKING"]), at: 0)
                ask = nil
            } else {
                target = state.withLock { state in state.map?.owners[slot].flatMap { state.shards[$0] } }
            }
            if let target, target.commands.isConnected {
                var replies = try await target.commands.send(batch: batch)
                if batch.count > commands.count { replies.removeFirst() }
                guard let message = replies.first?.errorMessage else { return replies }
                let words = message.split(separator: " ")
                switch words.first {
                case "MOVED" where words.count == 3:
                    if let master = RedisNodeAddress(words[2]), let moved = Int(words[1]) {
                        _ = adopt(slot: moved, master: master)
                        why = message
                        continue
                    }
                    return replies
                case "ASK" where words.count == 3:
                    guard let master = RedisNodeAddress(words[2]) else { return replies }
                    ask = master
                    why = message
                    continue
                case "TRYAGAIN", "CLUSTERDOWN", "SBLOCKED":
                    why = message
                    if words.first == "CLUSTERDOWN" { state.withLock { $0.refreshRequested = true } }
                default:
                    return replies
                }
            } else if let target {
                why = "master \(target.address) is not connected"
                state.withLock { $0.refreshRequested = true }
            } else {
                state.withLock { $0.refreshRequested = true }
            }
            guard ContinuousClock.now < deadline else { throw BrokerError.unavailable("redis cluster: \(why)") }
            try? await Task.sleep(for: .milliseconds(Int.random(in: 2...20)))
        }
    }

    /// `send` of one command; an error reply becomes `BrokerError.protocolError`.
    func run(_ command: RedisCommand, slot: Int) async throws -> RESPValue {
        let reply = try await send([command], slot: slot)[0]
        if let message = reply.errorMessage { throw BrokerError.protocolError("redis \(command.name): \(message)") }
        return reply
    }

    /// EVALSHA `script` on the master of the keys' slot (EVAL when the master lost the
    /// script), with `then` commands sent right behind it on the same connection (`WAIT`).
    /// Returns the script's reply and those of `then`.
    func evaluate(
        _ script: RedisScript, keys: [String], arguments: [[UInt8]], then: [RedisCommand] = []
    ) async throws -> (RESPValue, [RESPValue]) {
        let slot = RedisClusterSlots.slot(of: keys.first ?? "")
        func command(_ verb: String, _ body: String) -> RedisCommand {
            var command = RedisCommand([verb, body, String(keys.count)])
            for key in keys { command.append(key) }
            for argument in arguments { command.append(bytes: argument) }
            return command
        }
        if let sha = state.withLock({ $0.scripts[script.name] }) {
            let replies = try await send([command("EVALSHA", sha)] + then, slot: slot)
            if let message = replies[0].errorMessage, message.hasPrefix("NOSCRIPT") {
                logger.debug("redis lost a script; sending its source", metadata: ["redis.script": "\(script.name)"])
            } else {
                return (try checked(replies[0], script), Array(replies.dropFirst()))
            }
        }
        let replies = try await send([command("EVAL", script.source)] + then, slot: slot)
        return (try checked(replies[0], script), Array(replies.dropFirst()))
    }

    /// `evaluate` without trailing commands.
    func evaluate(_ script: RedisScript, keys: [String], arguments: [[UInt8]]) async throws -> RESPValue {
        try await evaluate(script, keys: keys, arguments: arguments, then: []).0
    }

    private func checked(_ reply: RESPValue, _ script: RedisScript) throws -> RESPValue {
        if let message = reply.errorMessage { throw BrokerError.protocolError("redis script \(script.name): \(message)") }
        return reply
    }

    func malformed(_ operation: String, _ reply: RESPValue) -> BrokerError {
        logger.warning("unexpected redis reply", metadata: ["redis.operation": "\(operation)", "redis.reply": "\(reply)"])
        return BrokerError.protocolError("unexpected redis reply to \(operation)")
    }

    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
}
