import CHiredis

/// One command: its arguments stored back to back, sent with `redisAppendCommandArgv`.
struct RedisCommand: Sendable, CustomStringConvertible {
    private var storage: [UInt8] = []
    private var ends: [Int] = []

    init(_ arguments: [String]) {
        for argument in arguments { append(argument) }
    }

    mutating func append(_ argument: String) {
        storage.append(contentsOf: argument.utf8)
        ends.append(storage.count)
    }

    mutating func append(bytes: some Sequence<UInt8>) {
        storage.append(contentsOf: bytes)
        ends.append(storage.count)
    }

    var count: Int { ends.count }

    /// The command name, for logs.
    var name: String {
        guard let end = ends.first else { return "" }
        return String(decoding: storage[..<end], as: UTF8.self)
    }

    var description: String { name }

    /// Appends the command to the output buffer of `context`; false on allocation failure.
    func append(to context: UnsafeMutablePointer<redisContext>) -> Bool {
        guard !ends.isEmpty else { return false }
        func appendArguments(_ base: UnsafeRawPointer) -> Bool {
            withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: ends.count) { argv in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: ends.count) { lengths in
                    var start = 0
                    for (index, end) in ends.enumerated() {
                        argv[index] = (base + start).assumingMemoryBound(to: CChar.self)
                        lengths[index] = end - start
                        start = end
                    }
                    return redisAppendCommandArgv(context, Int32(ends.count), argv.baseAddress, lengths.baseAddress) == REDIS_OK
                }
            }
        }
        // Every argument empty: any valid address will do, nothing is read from it.
        if storage.isEmpty {
            return [UInt8(0)].withUnsafeBufferPointer { appendArguments(UnsafeRawPointer($0.baseAddress!)) }
        }
        return storage.withUnsafeBufferPointer { appendArguments(UnsafeRawPointer($0.baseAddress!)) }
    }
}
