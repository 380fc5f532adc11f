import Crypto

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What a token says about its holder. The session id ties nickname claims and
/// multiple tabs together.
public struct Identity: Sendable, Equatable {
    public var nickname: Nickname
    public var avatar: String
    public var session: String
    /// Unix seconds.
    public var issuedAt: Int64
    public var expiresAt: Int64

    public init(nickname: Nickname, avatar: String, session: String, issuedAt: Int64, expiresAt: Int64) {
        self.nickname = nickname
        self.avatar = avatar
        self.session = session
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
    }

    public var sender: Sender { Sender(nickname: nickname, avatar: avatar) }

    /// The session id of an identity the application vouches for (`POST /api/token`,
    /// JWT): the same for every token of one nickname, so they share one claim.
    public static func applicationSession(for nickname: Nickname) -> String {
        let digest = SHA256.hash(data: Array("switchboard-app-session|\(nickname.value)".utf8))
        return "app-" + digest.prefix(16).map { byte in
            let hex = Array("0123456789abcdef".utf8)
            return String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]], as: UTF8.self)
        }.joined()
    }
}

/// Signs and verifies tokens: `base64url(payload JSON).base64url(HMAC-SHA256)`.
/// Verification needs no round trip: any node with the secret checks a token.
/// Several secrets may verify (rotation); the first one signs.
public struct TokenSigner: Sendable {
    private let secrets: [[UInt8]]

    public init(secrets: [String]) {
        precondition(!secrets.isEmpty, "at least one secret")
        self.secrets = secrets.map { Array($0.utf8) }
    }

    public func sign(_ identity: Identity) -> String {
        let payload: JSONValue = .object([
            "n": .string(identity.nickname.value),
            "a": .string(identity.avatar),
            "s": .string(identity.session),
            "iat": .int(identity.issuedAt),
            "exp": .int(identity.expiresAt),
        ])
        let body = Base64URL.encode(payload.jsonBytes)
        let mac = HMAC<SHA256>.authenticationCode(for: Array(body.utf8), using: SymmetricKey(data: secrets[0]))
        return body + "." + Base64URL.encode(Array(mac))
    }

    /// A MAC of `bytes` with the signing secret (base64url): what Socket.IO offsets carry,
    /// so that a client cannot make up one.
    public func authenticate(_ bytes: [UInt8]) -> String {
        Base64URL.encode(Array(HMAC<SHA256>.authenticationCode(for: bytes, using: SymmetricKey(data: secrets[0]))))
    }

    /// Whether `mac` is ``authenticate(_:)`` of `bytes` under one of the secrets.
    public func isAuthentic(_ mac: String, for bytes: [UInt8]) -> Bool {
        guard let code = Base64URL.decode(mac), code.count == 32 else { return false }
        return secrets.contains { HMAC<SHA256>.isValidAuthenticationCode(code, authenticating: bytes, using: SymmetricKey(data: $0)) }
    }

    /// The identity in `token`, or nil when it is malformed, forged or expired at `now`
    /// (Unix seconds).
    public func verify(_ token: String, now: Int64) -> Identity? {
        try? check(token, now: now).get()
    }

    /// The identity in `token`, or why it is refused: malformed, forged (no secret's
    /// MAC matches) or expired at `now` (Unix seconds).
    public func check(_ token: String, now: Int64) -> Result<Identity, TokenRefusal> {
        guard token.utf8.count <= 2048 else { return .failure(TokenRefusal(.malformed, "token longer than 2048 bytes")) }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let mac = Base64URL.decode(parts[1]), mac.count == 32 else {
            return .failure(TokenRefusal(.malformed, "not a token of this cluster"))
        }
        let body = Array(parts[0].utf8)
        guard secrets.contains(where: { HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: SymmetricKey(data: $0)) })
        else { return .failure(TokenRefusal(.signature, "the token's signature does not verify")) }
        guard let bytes = Base64URL.decode(parts[0]), let json = JSONValue.parse(bytes),
            let nick = json["n"]?.stringValue.flatMap(Nickname.init), let avatar = json["a"]?.stringValue,
            let session = json["s"]?.stringValue,
            case .int(let iat)? = json["iat"], case .int(let exp)? = json["exp"]
        else { return .failure(TokenRefusal(.claims, "the token's claims are incomplete")) }
        guard exp > now else { return .failure(TokenRefusal(.expired, "the token expired")) }
        return .success(Identity(nickname: nick, avatar: avatar, session: session, issuedAt: iat, expiresAt: exp))
    }
}

/// Base64 with the URL alphabet and no padding.
public enum Base64URL {
    public static func encode(_ bytes: [UInt8]) -> String {
        let standard = Data(bytes).base64EncodedString()
        var out: [UInt8] = []
        out.reserveCapacity(standard.utf8.count)
        for byte in standard.utf8 {
            switch byte {
            case UInt8(ascii: "+"): out.append(UInt8(ascii: "-"))
            case UInt8(ascii: "/"): out.append(UInt8(ascii: "_"))
            case UInt8(ascii: "="): continue
            default: out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count + 3)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "-"): out.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"): out.append(UInt8(ascii: "/"))
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "a")...UInt8(ascii: "z"):
                out.append(byte)
            default: return nil
            }
        }
        while out.count % 4 != 0 { out.append(UInt8(ascii: "=")) }
        return Data(base64Encoded: Data(out)).map { Array($0) }
    }
}
