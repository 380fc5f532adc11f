import NIOCore

/// Cuts a `text/event-stream` body into whole events: hands on everything up to the last
/// blank line and keeps the rest until more bytes arrive, so that a bench message split
/// across TCP reads is scanned only once it is complete.
public struct EventStreamSplitter: Sendable {
    private var pending = ByteBuffer()

    public init() {}

    /// Bytes kept back, waiting for the end of their event.
    public var pendingBytes: Int { pending.readableBytes }

    /// Feeds one chunk; calls `complete` with the bytes of all events it completes (maybe
    /// several events in one call, maybe none).
    public mutating func feed(_ chunk: ByteBuffer, _ complete: (ByteBuffer) -> Void) {
        if pending.readableBytes == 0 {
            var chunk = chunk
            guard let end = Self.endOfLastEvent(in: chunk) else {
                pending = chunk
                return
            }
            if let events = chunk.readSlice(length: end) { complete(events) }
            if chunk.readableBytes > 0 { pending = chunk }
            return
        }
        pending.writeImmutableBuffer(chunk)
        guard let end = Self.endOfLastEvent(in: pending) else { return }
        if let events = pending.readSlice(length: end) { complete(events) }
        pending.discardReadBytes()
    }

    /// Whether `events` holds nothing but comment lines (`: keep-alive`) and blank lines:
    /// a server's keep-alive, not a message (it must not keep the bench from settling).
    public static func isOnlyComments(_ events: ByteBuffer) -> Bool {
        events.withUnsafeReadableBytes { bytes in
            var lineStart = true
            for byte in bytes {
                if lineStart, byte != UInt8(ascii: ":"), byte != UInt8(ascii: "\n"), byte != UInt8(ascii: "\r") { return false }
                lineStart = byte == UInt8(ascii: "\n")
            }
            return true
        }
    }

    /// The offset just past the last `\n\n` (or `\r\n\r\n`) in `buffer`.
    static func endOfLastEvent(in buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            var index = bytes.count - 1
            while index >= 1 {
                if bytes[index] == UInt8(ascii: "\n") {
                    if bytes[index - 1] == UInt8(ascii: "\n") { return index + 1 }
                    if index >= 3, bytes[index - 1] == UInt8(ascii: "\r"), bytes[index - 2] == UInt8(ascii: "\n") {
                        return index + 1
                    }
                }
                index -= 1
            }
            return nil
        }
    }
}
