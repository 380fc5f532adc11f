/// Redis Cluster's key space: 16384 hash slots, a key's slot from CRC16 of its hash tag,
/// and which master owns which slot (`CLUSTER SLOTS`).
public enum RedisClusterSlots {
    public static let count = 16384

    /// The slot of `key`: CRC16 (XMODEM) of the text between the first `{` and the next
    /// `}` when that is not empty, else of the whole key — Redis's own rule.
    public static func slot(of key: some Collection<UInt8>) -> Int {
        var bytes = Array(key)
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            bytes = Array(bytes[(open + 1)..<close])
        }
        return Int(crc16(bytes)) & (count - 1)
    }

    public static func slot(of key: String) -> Int { slot(of: Array(key.utf8)) }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0.
    static func crc16(_ bytes: [UInt8]) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}

/// Where a master listens: `host:port`, as `CLUSTER SLOTS` and `MOVED` name it.
struct RedisNodeAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    let host: String
    let port: Int

    var description: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }

    static func < (lhs: Self, rhs: Self) -> Bool { (lhs.host, lhs.port) < (rhs.host, rhs.port) }

    /// `host:port` of a `MOVED`/`ASK` error (the host may be an IPv6 address).
    init?(_ text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.init(host: host, port: port)
    }

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// Which master owns each slot; nil where none does (a master lost and not replaced).
struct RedisSlotMap: Sendable, Equatable {
    var owners: [RedisNodeAddress?] = Array(repeating: nil, count: RedisClusterSlots.count)

    var masters: Set<RedisNodeAddress> { Set(owners.compactMap { $0 }) }

    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id…], replicas…]…]`.
    /// An empty host means the node that answered (`fallbackHost`).
    init?(clusterSlots reply: RESPValue, fallbackHost: String) {
        guard let ranges = reply.array else { return nil }
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let start = parts[0].integer, let end = parts[1].integer,
                0 <= start, start <= end, end < RedisClusterSlots.count, let master = parts[2].array, master.count >= 2,
                let port = master[1].integer, (1...65535).contains(port)
            else { return nil }
            var host = master[0].text ?? ""
            if host.isEmpty || host == "?" { host = fallbackHost }
            let address = RedisNodeAddress(host: host, port: Int(port))
            for slot in Int(start)...Int(end) { owners[slot] = address }
        }
    }

    init() {}
}
