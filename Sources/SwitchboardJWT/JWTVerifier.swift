import JWTKit
import SwitchboardCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Verifies the application's JWTs — HS256 with a shared secret, RS256/ES256 with a
/// public key (PEM or JWKS) — and maps their claims to an identity. Signatures are
/// checked by JWTKit's algorithms (loaded once, up front, so verification is a
/// synchronous call that any transport can make); the header's `alg` must be the key's
/// own (`none` and algorithm confusion are refused before any signature check); then
/// `exp` (required), `nbf`, `aud` and `iss`.
public struct JWTVerifier: ExternalTokenVerifier {
    /// One verification key and the `alg` it verifies.
    struct Key: Sendable {
        let alg: String
        let algorithm: any JWTAlgorithm
    }

    /// Keys without a `kid` (the secret, a PEM key), by `alg`.
    private let byAlgorithm: [String: Key]
    /// JWKS keys by `kid`.
    private let byKeyID: [String: Key]
    private let configuration: JWTConfiguration

    /// The algorithms a node accepts.
    public static let supportedAlgorithms: Set<String> = ["HS256", "RS256", "ES256"]

    /// Loads the keys of `configuration`; throws `JWTSetupError` on a key that cannot
    /// be used (the node refuses to start).
    public init(_ configuration: JWTConfiguration) async throws {
        self.configuration = configuration
        let collection = JWTKeyCollection()
        var byAlgorithm: [String: Key] = [:]
        var byKeyID: [String: Key] = [:]
        if let secret = configuration.secret {
            guard secret.utf8.count >= 32 else {
                throw JWTSetupError("SWITCHBOARD_JWT_SECRET must be at least 32 bytes (HS256 with a shorter secret is guessable)")
            }
            let kid = JWKIdentifier(string: "switchboard-hs256")
            await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: kid)
            byAlgorithm["HS256"] = Key(alg: "HS256", algorithm: try await collection.getKey(for: kid, alg: "HS256"))
        }
        if let text = configuration.publicKey {
            let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
            if trimmed.hasPrefix("{") {
                let jwks: JWKS
                do {
                    jwks = try JSONDecoder().decode(JWKS.self, from: Data(text.utf8))
                } catch {
                    throw JWTSetupError("--jwt-public-key: not a JWKS document (\(error))")
                }
                guard !jwks.keys.isEmpty else { throw JWTSetupError("--jwt-public-key: the JWKS has no keys") }
                for jwk in jwks.keys {
                    let alg = try Self.algorithm(of: jwk)
                    guard let kid = jwk.keyIdentifier else {
                        if jwks.keys.count == 1 {
                            let id = JWKIdentifier(string: "switchboard-jwks-only")
                            var keyed = jwk
                            keyed.keyIdentifier = id
                            try await collection.add(jwk: keyed)
                            byAlgorithm[alg] = Key(alg: alg, algorithm: try await collection.getKey(for: id, alg: alg))
                            continue
                        }
                        throw JWTSetupError("--jwt-public-key: every key of a JWKS with several keys needs a kid")
                    }
                    try await collection.add(jwk: jwk)
                    byKeyID[kid.string] = Key(alg: alg, algorithm: try await collection.getKey(for: kid, alg: alg))
                }
            } else if text.contains("-----BEGIN") {
                let kid = JWKIdentifier(string: "switchboard-pem")
                if let rsa = try? Insecure.RSA.PublicKey(pem: text) {
                    await collection.add(rsa: rsa, digestAlgorithm: .sha256, kid: kid)
                    byAlgorithm["RS256"] = Key(alg: "RS256", algorithm: try await collection.getKey(for: kid, alg: "RS256"))
                } else if let ec = try? ES256PublicKey(pem: text) {
                    await collection.add(ecdsa: ec, kid: kid)
                    byAlgorithm["ES256"] = Key(alg: "ES256", algorithm: try await collection.getKey(for: kid, alg: "ES256"))
                } else {
                    throw JWTSetupError("--jwt-public-key: the PEM is neither an RSA (≥ 2048 bits) nor an EC P-256 public key")
                }
            } else {
                throw JWTSetupError("--jwt-public-key: expected a PEM public key or a JWKS document")
            }
        }
        guard !byAlgorithm.isEmpty || !byKeyID.isEmpty else { throw JWTSetupError("no JWT key configured") }
        self.byAlgorithm = byAlgorithm
        self.byKeyID = byKeyID
    }

    /// RS256 or ES256: the JWK's `alg`, else inferred from its key type and curve.
    private static func algorithm(of jwk: JWK) throws -> String {
        let alg: String? =
            if let declared = jwk.algorithm?.rawValue {
                declared
            } else if jwk.keyType == .rsa {
                "RS256"
            } else if jwk.keyType == .ecdsa, jwk.curve == .ecdsa(.p256) {
                "ES256"
            } else {
                nil
            }
        guard let alg, alg != "HS256", supportedAlgorithms.contains(alg) else {
            throw JWTSetupError("--jwt-public-key: JWKS key \(jwk.keyIdentifier?.string ?? "without kid") is not RS256 or ES256")
        }
        return alg
    }

    public func verify(_ token: String, now: Int64) -> Result<Identity, TokenRefusal> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = Base64URL.decode(parts[0]), let header = JSONValue.parse(headerBytes),
            case .object(let headerFields) = header
        else { return .failure(TokenRefusal(.malformed, "a JWT is three base64url parts, the first a JSON header")) }
        guard let alg = headerFields["alg"]?.stringValue else {
            return .failure(TokenRefusal(.malformed, "the JWT header has no alg"))
        }
        guard Self.supportedAlgorithms.contains(alg) else {
            return .failure(TokenRefusal(.algorithm, "alg \(alg.prefix(16)) is not accepted (HS256, RS256, ES256 only)"))
        }
        // The key: by kid (JWKS), else the kid-less key of this alg.
        let key: Key
        if let kid = headerFields["kid"]?.stringValue, let named = byKeyID[kid] {
            key = named
        } else if let plain = byAlgorithm[alg] {
            key = plain
        } else if headerFields["kid"] != nil {
            return .failure(TokenRefusal(.unknownKey, "the JWT's kid names no key of this node"))
        } else {
            return .failure(TokenRefusal(.algorithm, "this node has no \(alg) key"))
        }
        guard key.alg == alg else {
            return .failure(TokenRefusal(.algorithm, "alg \(alg) does not match the key's \(key.alg)"))
        }
        guard let signature = Base64URL.decode(parts[2]), !signature.isEmpty else {
            return .failure(TokenRefusal(.signature, "the JWT has no signature"))
        }
        let signed = Array(parts[0].utf8) + [UInt8(ascii: ".")] + Array(parts[1].utf8)
        guard (try? key.algorithm.verify(signature, signs: signed)) == true else {
            return .failure(TokenRefusal(.signature, "the JWT's signature does not verify (tampered, or signed with another key)"))
        }
        guard let payloadBytes = Base64URL.decode(parts[1]), let payload = JSONValue.parse(payloadBytes),
            case .object(let claims) = payload, payload.depth <= 16
        else { return .failure(TokenRefusal(.malformed, "the JWT payload is not a JSON object")) }
        return identity(claims, now: now)
    }

    /// Checks the registered claims and maps the configured ones to an identity.
    func identity(_ claims: [String: JSONValue], now: Int64) -> Result<Identity, TokenRefusal> {
        let leeway = configuration.leewaySeconds
        guard let exp = Self.seconds(claims["exp"]) else {
            return .failure(TokenRefusal(.claims, "the JWT needs a numeric exp"))
        }
        guard exp + leeway > now else { return .failure(TokenRefusal(.expired, "the JWT expired")) }
        if let raw = claims["nbf"] {
            guard let nbf = Self.seconds(raw) else { return .failure(TokenRefusal(.claims, "nbf is not a number")) }
            guard nbf - leeway <= now else { return .failure(TokenRefusal(.notYetValid, "the JWT is not valid yet (nbf)")) }
        }
        if let audience = configuration.audience {
            let audiences: [String]
            switch claims["aud"] {
            case .string(let one)?: audiences = [one]
            case .array(let many)?: audiences = many.compactMap(\.stringValue)
            default: audiences = []
            }
            guard audiences.contains(audience) else {
                return .failure(TokenRefusal(.audience, "aud does not include this chat's audience"))
            }
        }
        if let issuer = configuration.issuer {
            guard claims["iss"]?.stringValue == issuer else {
                return .failure(TokenRefusal(.issuer, "iss is not the configured issuer"))
            }
        }
        guard let nickname = claims[configuration.nicknameClaim]?.stringValue.flatMap(Nickname.init) else {
            return .failure(TokenRefusal(.claims, "claim \(configuration.nicknameClaim) is not a valid nickname"))
        }
        let avatar: String
        switch claims[configuration.avatarClaim] {
        case nil, .null?: avatar = ""
        case .string(let value)? where Avatar.isValid(value, maxBytes: configuration.maxAvatarBytes): avatar = value
        default: return .failure(TokenRefusal(.claims, "claim \(configuration.avatarClaim) is not an avatar (1.jpg … 8.jpg or an https: URL)"))
        }
        let issuedAt = Self.seconds(claims["iat"]) ?? now
        return .success(
            Identity(
                nickname: nickname, avatar: avatar, session: Identity.applicationSession(for: nickname),
                issuedAt: issuedAt, expiresAt: exp))
    }

    /// A NumericDate: whole or fractional seconds.
    static func seconds(_ value: JSONValue?) -> Int64? {
        switch value {
        case .int(let seconds)?: seconds
        case .double(let seconds)? where seconds.isFinite && abs(seconds) < 1e15: Int64(seconds)
        default: nil
        }
    }
}

/// A JWT key that cannot be used: the node does not start.
public struct JWTSetupError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
