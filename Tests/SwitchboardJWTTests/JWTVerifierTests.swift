import JWTKit
import SwitchboardCore
import SwitchboardJWT
import Testing

/// Tokens are signed by JWTKit itself (as an application back end would), verified by
/// `JWTVerifier`; every refusal has its own reason.
@Suite struct JWTVerifierTests {
    static let secret = "an-hs256-secret-of-at-least-32-bytes!"
    static let now: Int64 = 1_800_000_000

    struct Claims: JWTPayload {
        var sub: String?
        var exp: Int64?
        var nbf: Int64?
        var aud: String?
        var iss: String?
        var avatar: String?
        var name: String?
        func verify(using _: some JWTAlgorithm) async throws {}
    }

    func claims(
        sub: String? = "alice", exp: Int64? = now + 600, nbf: Int64? = nil, aud: String? = "chat", iss: String? = "https://app.example",
        avatar: String? = "3.jpg"
    ) -> Claims {
        Claims(sub: sub, exp: exp, nbf: nbf, aud: aud, iss: iss, avatar: avatar)
    }

    func configuration() -> JWTConfiguration {
        var configuration = JWTConfiguration()
        configuration.secret = Self.secret
        configuration.audience = "chat"
        configuration.issuer = "https://app.example"
        return configuration
    }

    func hs256(_ claims: Claims, secret: String = secret, header: JWTHeader = JWTHeader()) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await keys.sign(claims, header: header)
    }

    func reason(_ result: Result<Identity, TokenRefusal>) -> TokenRefusal.Reason? {
        if case .failure(let refusal) = result { return refusal.reason }
        return nil
    }

    @Test("HS256: claims map to nickname and avatar; every token of a nickname shares one session")
    func hs256Identity() async throws {
        let verifier = try await JWTVerifier(configuration())
        let identity = try verifier.verify(try await hs256(claims()), now: Self.now).get()
        #expect(identity.nickname.value == "alice" && identity.avatar == "3.jpg" && identity.expiresAt == Self.now + 600)
        let again = try verifier.verify(try await hs256(claims(exp: Self.now + 900)), now: Self.now).get()
        #expect(again.session == identity.session)
    }

    @Test("configurable claims: nickname from `name`")
    func configurableClaims() async throws {
        var configuration = configuration()
        configuration.nicknameClaim = "name"
        let verifier = try await JWTVerifier(configuration)
        var named = claims()
        named.name = "Bob Smith"
        #expect(try verifier.verify(try await hs256(named), now: Self.now).get().nickname.value == "Bob Smith")
    }

    @Test("expired, not yet valid, wrong audience, wrong issuer, missing exp, bad nickname or avatar")
    func claimRefusals() async throws {
        let verifier = try await JWTVerifier(configuration())
        let cases: [(Claims, TokenRefusal.Reason)] = [
            (claims(exp: Self.now - 120), .expired),
            (claims(nbf: Self.now + 600), .notYetValid),
            (claims(aud: "another-app"), .audience),
            (claims(aud: nil), .audience),
            (claims(iss: "https://evil.example"), .issuer),
            (claims(exp: nil), .claims),
            (claims(sub: nil), .claims),
            (claims(sub: " padded "), .claims),
            (claims(avatar: "javascript:alert(1)"), .claims),
            (claims(avatar: "http://plain.example/a.png"), .claims),
        ]
        for (claims, expected) in cases {
            #expect(reason(verifier.verify(try await hs256(claims), now: Self.now)) == expected, "\(claims)")
        }
        // Within the 30 s leeway: accepted.
        #expect(reason(verifier.verify(try await hs256(claims(exp: Self.now - 10)), now: Self.now)) == nil)
    }

    @Test("wrong secret, tampered payload, alg none, unsupported alg, no key for the alg")
    func signatureRefusals() async throws {
        let verifier = try await JWTVerifier(configuration())
        let other = try await hs256(claims(), secret: "another-secret-which-is-long-enough-too")
        #expect(reason(verifier.verify(other, now: Self.now)) == .signature)

        let good = try await hs256(claims())
        let parts = good.split(separator: ".").map(String.init)
        let forgedPayload = Base64URL.encode(Array(#"{"sub":"mallory","exp":1800000600,"aud":"chat","iss":"https://app.example"}"#.utf8))
        #expect(reason(verifier.verify("\(parts[0]).\(forgedPayload).\(parts[2])", now: Self.now)) == .signature)

        let none = Base64URL.encode(Array(#"{"alg":"none","typ":"JWT"}"#.utf8))
        #expect(reason(verifier.verify("\(none).\(parts[1]).", now: Self.now)) == .algorithm)
        #expect(reason(verifier.verify("\(none).\(parts[1]).\(parts[2])", now: Self.now)) == .algorithm)
        let hs512 = Base64URL.encode(Array(#"{"alg":"HS512","typ":"JWT"}"#.utf8))
        #expect(reason(verifier.verify("\(hs512).\(parts[1]).\(parts[2])", now: Self.now)) == .algorithm)
        // RS256 in the header, but this node only has an HS256 secret.
        let rs256 = Base64URL.encode(Array(#"{"alg":"RS256","typ":"JWT"}"#.utf8))
        #expect(reason(verifier.verify("\(rs256).\(parts[1]).\(parts[2])", now: Self.now)) == .algorithm)
        #expect(reason(verifier.verify("not.a.jwt", now: Self.now)) == .malformed)
    }

    @Test("ES256 from a PEM public key; an HS256 token cannot pass as ES256 (algorithm confusion)")
    func es256() async throws {
        let key = ES256PrivateKey()
        var configuration = JWTConfiguration()
        configuration.publicKey = key.publicKey.pemRepresentation
        let verifier = try await JWTVerifier(configuration)
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: key)
        let token = try await keys.sign(claims(aud: nil, iss: nil))
        #expect(try verifier.verify(token, now: Self.now).get().nickname.value == "alice")

        // HMAC-signed with the public key's PEM as the secret, header says HS256.
        let confused = try await hs256(claims(), secret: key.publicKey.pemRepresentation)
        #expect(reason(verifier.verify(confused, now: Self.now)) == .algorithm)
        // Another EC key: signature.
        let stranger = JWTKeyCollection()
        await stranger.add(ecdsa: ES256PrivateKey())
        #expect(reason(verifier.verify(try await stranger.sign(claims()), now: Self.now)) == .signature)
    }

    @Test("TokenVerifier: two parts go to the node's signer, three to the JWT verifier")
    func dispatch() async throws {
        let signer = TokenSigner(secrets: ["node-secret"])
        let identity = Identity(nickname: Nickname("carol")!, avatar: "", session: "s", issuedAt: Self.now, expiresAt: Self.now + 60)
        let withoutJWT = TokenVerifier(signer: signer)
        #expect(try withoutJWT.verify(signer.sign(identity), now: Self.now).get() == identity)
        #expect(reason(withoutJWT.verify(try await hs256(claims()), now: Self.now)) == .algorithm)
        #expect(reason(withoutJWT.verify(signer.sign(identity), now: Self.now + 61)) == .expired)

        let withJWT = TokenVerifier(signer: signer, external: try await JWTVerifier(configuration()))
        #expect(try withJWT.verify(try await hs256(claims()), now: Self.now).get().nickname.value == "alice")
        #expect(reason(withJWT.verify("a.b.c.d", now: Self.now)) == .malformed)
    }

    @Test("a short HS256 secret and an unusable key file stop the node")
    func setupErrors() async throws {
        var short = JWTConfiguration()
        short.secret = "short"
        await #expect(throws: JWTSetupError.self) { try await JWTVerifier(short) }
        var garbage = JWTConfiguration()
        garbage.publicKey = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        await #expect(throws: JWTSetupError.self) { try await JWTVerifier(garbage) }
    }

    @Test("avatars: the page's pictures or https: URLs only")
    func avatars() {
        for good in ["", "1.jpg", "8.jpg", "https://cdn.example/u/42.png", "HTTPS://cdn.example/a?b=c#d"] {
            #expect(Avatar.isValid(good, maxBytes: 256), "\(good)")
        }
        for bad in [
            "9.jpg", "a.png", "javascript:document.title='x'", "http://cdn.example/a.png", "https://", "https:///path",
            "https://user@evil.example/a.png", "https://cdn.example/a b.png", "https://cdn.example/\"onerror=x",
            "https://cdn.example/<svg>", "data:image/png;base64,AAAA", "https://cdn.example/" + String(repeating: "a", count: 300),
        ] {
            #expect(!Avatar.isValid(bad, maxBytes: 256), "\(bad)")
        }
    }
}
