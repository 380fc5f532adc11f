/// A validated nickname: 1–32 Unicode scalars, no control characters, no leading or
/// trailing whitespace.
public struct Nickname: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let value: String

    public static let maxLength = 32

    /// Returns `nil` when `raw` breaks any of the rules above.
    public init?(_ raw: String) {
        let scalars = raw.unicodeScalars
        guard !scalars.isEmpty, scalars.count <= Self.maxLength else { return nil }
        for scalar in scalars where scalar.properties.generalCategory == .control
            || scalar.properties.generalCategory == .format && scalar.value != 0x200D
            || scalar.properties.generalCategory == .lineSeparator
            || scalar.properties.generalCategory == .paragraphSeparator
        {
            return nil
        }
        if let first = scalars.first, first.properties.isWhitespace { return nil }
        if let last = scalars.last, last.properties.isWhitespace { return nil }
        // `|` separates node and nickname in presence members.
        if raw.contains("|") { return nil }
        self.value = raw
    }

    public var description: String { value }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.value < rhs.value }
}

/// A validated room name: 1–64 characters of ASCII letters, digits, `_ - . :`.
public struct RoomName: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let value: String

    public static let maxLength = 64

    public init?(_ raw: String) {
        let utf8 = raw.utf8
        guard !utf8.isEmpty, utf8.count <= Self.maxLength else { return nil }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"),
                UInt8(ascii: "."), UInt8(ascii: ":"):
                continue
            default:
                return nil
            }
        }
        self.value = raw
    }

    public var description: String { value }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.value < rhs.value }
}

/// One history stream: a room's, or one nickname's private stream.
public enum StreamKey: Hashable, Sendable, CustomStringConvertible {
    case room(RoomName)
    case user(Nickname)

    public var description: String {
        switch self {
        case .room(let room): "room:\(room.value)"
        case .user(let nickname): "user:\(nickname.value)"
        }
    }
}

/// A message id, as Redis streams write them: `<milliseconds>-<sequence>`.
/// Ids of one stream strictly increase; the memory broker issues the same form.
public struct MessageID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let milliseconds: UInt64
    public let sequence: UInt64

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    /// Parses `123-4`; `nil` for anything else.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count <= 20, parts[1].count <= 20,
            parts[0].allSatisfy(\.isASCIIDigit), parts[1].allSatisfy(\.isASCIIDigit),
            let ms = UInt64(parts[0]), let seq = UInt64(parts[1])
        else { return nil }
        self.milliseconds = ms
        self.sequence = seq
    }

    public static let zero = MessageID(milliseconds: 0, sequence: 0)

    /// The smallest id strictly greater than this one.
    public var successor: MessageID {
        sequence == .max
            ? MessageID(milliseconds: milliseconds + 1, sequence: 0)
            : MessageID(milliseconds: milliseconds, sequence: sequence + 1)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }
}

/// A cluster-unique connection id (random 64 bits, hex).
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }
    public static func random() -> ConnectionID {
        ConnectionID(hex64(UInt64.random(in: .min ... .max)))
    }
    public var description: String { value }
}

func hex64(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
