/// How a node verifies the application's JWTs. Plain data; the executable fills it from
/// `SWITCHBOARD_JWT_SECRET`, `--jwt-public-key` and the other `--jwt-…` flags.
public struct JWTConfiguration: Sendable {
    /// HS256 shared secret.
    public var secret: String?
    /// The text of `--jwt-public-key`: a PEM public key (RSA → RS256, EC P-256 → ES256)
    /// or a JWKS document (`{"keys": [...]}`; each key's `kid` and `alg`, or RS256/ES256
    /// inferred from `kty`/`crv`).
    public var publicKey: String?
    /// Required in `aud` when set (`--jwt-audience`).
    public var audience: String?
    /// Required as `iss` when set (`--jwt-issuer`).
    public var issuer: String?
    /// The claim carrying the nickname (`sub` by default) and the avatar (`avatar`).
    public var nicknameClaim = "sub"
    public var avatarClaim = "avatar"
    /// Same rule as `POST /api/login`'s avatars.
    public var maxAvatarBytes = 256
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    public var leewaySeconds: Int64 = 30

    public init() {}

    /// Whether any key is configured (otherwise nodes accept no JWTs).
    public var isEnabled: Bool { secret != nil || publicKey != nil }
}
