import NIOCore

/// A message's identity in the server's id scheme `<milliseconds>-<sequence>`, compared
/// numerically (first part, then second).
public struct MessageKey: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var milliseconds: UInt64
    public var sequence: UInt64

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    public static func < (a: MessageKey, b: MessageKey) -> Bool {
        (a.milliseconds, a.sequence) < (b.milliseconds, b.sequence)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }
}

/// One bench message as a subscriber saw it: the publisher's sequence number and send
/// time (monotonic nanoseconds), and the server's message id when the event carries one.
public struct Delivery: Equatable, Sendable {
    public var sequence: UInt64
    public var sentAt: UInt64
    public var id: MessageKey?

    public init(sequence: UInt64, sentAt: UInt64, id: MessageKey? = nil) {
        self.sequence = sequence
        self.sentAt = sentAt
        self.id = id
    }
}

/// The bench's message body and how it is found again in whatever a server delivers.
///
/// The body is the JSON object `{"sb_seq":N,"sb_t":T,"z":"xxx…"}`, padded with `x` to the
/// requested size. A Switchboard subscriber receives it inside an event (keys sorted, with
/// `type`, `id` and `room` added); a raw server (Nchan) delivers it as sent; a chat `say`
/// carries it escaped inside `text`. ``scan(_:_:)`` finds it in all three.
public enum BenchPayload {
    /// Writes the body of message `sequence`, sent at `sentAt`, at least `size` bytes long.
    public static func write(sequence: UInt64, sentAt: UInt64, size: Int, into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeStaticString("{\"sb_seq\":")
        writeDecimal(sequence, into: &buffer)
        buffer.writeStaticString(",\"sb_t\":")
        writeDecimal(sentAt, into: &buffer)
        buffer.writeStaticString(",\"z\":\"")
        let used = buffer.writerIndex - start + 2
        if size > used { buffer.writeRepeatingByte(UInt8(ascii: "x"), count: size - used) }
        buffer.writeStaticString("\"}")
    }

    /// The body as bytes (tests, small tools).
    public static func bytes(sequence: UInt64, sentAt: UInt64, size: Int) -> [UInt8] {
        var buffer = ByteBuffer()
        write(sequence: sequence, sentAt: sentAt, size: size, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    /// Calls `body` for every bench message in `bytes`, in order. A message's id is the
    /// last `"id":"<ms>-<seq>"` seen since the previous message.
    public static func scan(_ bytes: UnsafeRawBufferPointer, _ body: (Delivery) -> Void) {
        let count = bytes.count
        var i = 0
        var pendingID: MessageKey?
        while i < count {
            guard let quote = bytes[i...].firstIndex(of: UInt8(ascii: "\"")) else { return }
            i = quote + 1
            if matches(bytes, at: i, "sb_seq") {
                guard let (sequence, afterSequence) = number(in: bytes, from: i + 6, skipping: 4) else { continue }
                guard let tKey = find(bytes, "sb_t", from: afterSequence, within: 16),
                    let (sentAt, afterT) = number(in: bytes, from: tKey + 4, skipping: 4)
                else {
                    i = afterSequence
                    continue
                }
                body(Delivery(sequence: sequence, sentAt: sentAt, id: pendingID))
                pendingID = nil
                i = afterT
            } else if matches(bytes, at: i, "id\":\"") {
                if let (milliseconds, afterMS) = number(in: bytes, from: i + 5, skipping: 0),
                    afterMS < count, bytes[afterMS] == UInt8(ascii: "-"),
                    let (sequence, afterSeq) = number(in: bytes, from: afterMS + 1, skipping: 0)
                {
                    pendingID = MessageKey(milliseconds: milliseconds, sequence: sequence)
                    i = afterSeq
                }
            }
        }
    }

    /// ``scan(_:_:)`` over the readable bytes of `buffer`.
    public static func scan(_ buffer: ByteBuffer, _ body: (Delivery) -> Void) {
        buffer.withUnsafeReadableBytes { scan($0, body) }
    }

    /// ``scan(_:_:)`` over an array (tests).
    public static func deliveries(in bytes: [UInt8]) -> [Delivery] {
        var found: [Delivery] = []
        bytes.withUnsafeBytes { scan($0) { found.append($0) } }
        return found
    }

    private static func matches(_ bytes: UnsafeRawBufferPointer, at index: Int, _ word: StaticString) -> Bool {
        let length = word.utf8CodeUnitCount
        guard index + length <= bytes.count else { return false }
        let pointer = word.utf8Start
        for k in 0..<length where bytes[index + k] != pointer[k] { return false }
        return true
    }

    private static func find(_ bytes: UnsafeRawBufferPointer, _ word: StaticString, from: Int, within: Int) -> Int? {
        var index = from
        let end = min(bytes.count, from + within)
        while index < end {
            if matches(bytes, at: index, word) { return index }
            index += 1
        }
        return nil
    }

    /// A decimal number at `from`, after at most `skipping` bytes of `\`, `"`, `:` or space.
    private static func number(in bytes: UnsafeRawBufferPointer, from: Int, skipping: Int) -> (UInt64, Int)? {
        var index = from
        var skipped = 0
        while index < bytes.count, skipped < skipping {
            let byte = bytes[index]
            guard byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: ":") || byte == UInt8(ascii: " ")
            else { break }
            index += 1
            skipped += 1
        }
        var value: UInt64 = 0
        let start = index
        while index < bytes.count, index - start < 19 {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { break }
            value = value * 10 + UInt64(digit)
            index += 1
        }
        return index > start ? (value, index) : nil
    }

    private static func writeDecimal(_ value: UInt64, into buffer: inout ByteBuffer) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var v = value
        var n = 0
        withUnsafeMutableBytes(of: &digits) { raw in
            repeat {
                raw[19 - n] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
                n += 1
            } while v > 0
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[(20 - n)...]))
        }
    }
}
