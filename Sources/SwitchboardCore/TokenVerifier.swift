/// Why a token was refused. Every transport answers it the same way: HTTP 401
/// `{"error":"unauthorized","reason":…}`, a refused WebSocket upgrade with that body, a
/// Socket.IO CONNECT_ERROR `{"message":"unauthorized","data":{"code","reason","message"}}`.
public struct TokenRefusal: Error, Sendable, Equatable {
    /// The stable code a client sees as `reason`.
    public enum Reason: String, Sendable, Equatable, CaseIterable {
        /// Not two (our tokens) or three (JWT) base64url parts, or undecodable JSON.
        case malformed = "token_malformed"
        /// The signature does not verify: tampered, or signed with another key or secret.
        case signature = "token_signature"
        /// The header's `alg` is not one this node accepts (`none` never is), or JWTs
        /// are not configured on this node.
        case algorithm = "token_algorithm"
        /// A JWT's `kid` names no key of this node.
        case unknownKey = "token_unknown_key"
        case expired = "token_expired"
        /// `nbf` (not before) is in the future.
        case notYetValid = "token_not_yet_valid"
        /// `aud` does not include this node's audience.
        case audience = "token_audience"
        /// `iss` is not the configured issuer.
        case issuer = "token_issuer"
        /// A required claim is missing or invalid (nickname, avatar, `exp`).
        case claims = "token_claims"
    }

    public var reason: Reason
    public var message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    /// The chat error of a refused token (`unauthorized`, message naming the reason).
    public var eventError: EventError { EventError(.unauthorized, "\(reason.rawValue): \(message)") }
}

/// Verifies tokens signed by someone else — the application's JWTs — and maps their
/// claims to an identity. Implemented outside the core (`SwitchboardJWT`).
public protocol ExternalTokenVerifier: Sendable {
    /// The identity in `token` (three base64url parts), or why it is refused at `now`
    /// (Unix seconds). Synchronous: no I/O, keys are loaded up front.
    func verify(_ token: String, now: Int64) -> Result<Identity, TokenRefusal>
}

/// The one place every transport's token goes through: our own HMAC tokens (two parts,
/// from `POST /api/login` and `POST /api/token`) and, when configured, the
/// application's JWTs (three parts).
public struct TokenVerifier: Sendable {
    public let signer: TokenSigner
    public let external: (any ExternalTokenVerifier)?

    public init(signer: TokenSigner, external: (any ExternalTokenVerifier)? = nil) {
        self.signer = signer
        self.external = external
    }

    /// Longest token accepted (a JWT with an RS256 signature and a few claims is ~800 bytes).
    public static let maxTokenBytes = 8192

    public func verify(_ token: String, now: Int64) -> Result<Identity, TokenRefusal> {
        guard !token.isEmpty else { return .failure(TokenRefusal(.malformed, "empty token")) }
        guard token.utf8.count <= Self.maxTokenBytes else {
            return .failure(TokenRefusal(.malformed, "token longer than \(Self.maxTokenBytes) bytes"))
        }
        var dots = 0
        for byte in token.utf8 where byte == UInt8(ascii: ".") { dots += 1 }
        switch dots {
        case 1:
            return signer.check(token, now: now)
        case 2:
            guard let external else {
                return .failure(TokenRefusal(.algorithm, "this node accepts no JWTs (no SWITCHBOARD_JWT_SECRET or --jwt-public-key)"))
            }
            return external.verify(token, now: now)
        default:
            return .failure(TokenRefusal(.malformed, "a token has two or three base64url parts"))
        }
    }
}
