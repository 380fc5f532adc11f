/// What an avatar may be. Every client receives it as data (`from.avatar`), so only
/// values that are an avatar pass: none (`""`), one of the chat page's pictures
/// (`1.jpg` … `8.jpg`), or an `https:` URL of printable ASCII within `maxBytes`.
/// Anything else (`javascript:…`, `http:`, markup, control characters) is refused
/// with `invalid_avatar`.
public enum Avatar {
    /// The pictures the bundled chat page offers.
    public static let pageNames: Set<String> = Set((1...8).map { "\($0).jpg" })

    public static func isValid(_ avatar: String, maxBytes: Int) -> Bool {
        if avatar.isEmpty || pageNames.contains(avatar) { return true }
        let bytes = Array(avatar.utf8)
        guard bytes.count <= maxBytes else { return false }
        let scheme = Array("https://".utf8)
        guard bytes.count > scheme.count,
            bytes.prefix(scheme.count).map({ $0 | 0x20 }) == scheme  // ASCII case-insensitive
        else { return false }
        // Printable ASCII without space, quotes, angle brackets, backslash or backtick:
        // what a URL is once percent-encoded.
        let forbidden: Set<UInt8> = [0x22, 0x27, 0x3C, 0x3E, 0x5C, 0x60, 0x7B, 0x7D, 0x7C, 0x5E]
        guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F && !forbidden.contains($0) }) else { return false }
        // A host: at least one character before the first `/`, `?` or `#`, and no
        // user-info (`https://evil@…`).
        let rest = bytes.dropFirst(scheme.count)
        let authority = rest.prefix { $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#") }
        guard !authority.isEmpty, !authority.contains(UInt8(ascii: "@")) else { return false }
        return true
    }

    /// The refusal of an avatar that is not one.
    public static func refusal(maxBytes: Int) -> EventError {
        EventError(.invalidAvatar, "an avatar is one of the page's pictures (1.jpg … 8.jpg) or an https: URL of at most \(maxBytes) bytes")
    }
}
