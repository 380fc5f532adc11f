/// `POST /api/login` and tokens.
extension ChatService {
    public struct Login: Sendable {
        public var token: String
        public var identity: Identity
    }

    /// `POST /api/login`: validates, claims the nickname cluster-wide, signs a token.
    public func login(nickname rawNickname: String?, avatar rawAvatar: String?) async -> Result<Login, EventError> {
        let nickname: Nickname, avatar: String
        switch validated(nickname: rawNickname, avatar: rawAvatar) {
        case .success(let parts): (nickname, avatar) = parts
        case .failure(let error): return .failure(error)
        }
        let session = hex64(UInt64.random(in: .min ... .max)) + hex64(UInt64.random(in: .min ... .max))
        do {
            guard try await claims.claim(nickname, session: session) else {
                return .failure(EventError(.nicknameTaken, "the nickname \(nickname) is in use"))
            }
        } catch {
            return .failure(EventError(.unavailable, "the cluster backend is unavailable; try again"))
        }
        return .success(signed(nickname: nickname, avatar: avatar, session: session, lifetime: configuration.tokenLifetimeSeconds))
    }

    /// A login's and a minted token's input rules: a valid nickname, an avatar the page
    /// can show (or none).
    private func validated(nickname rawNickname: String?, avatar rawAvatar: String?) -> Result<(Nickname, String), EventError> {
        guard let rawNickname, let nickname = Nickname(rawNickname) else {
            return .failure(EventError(.invalidNickname, "a nickname is 1–32 characters, no control characters, no leading or trailing spaces, no |"))
        }
        let avatar = rawAvatar ?? ""
        guard Avatar.isValid(avatar, maxBytes: configuration.maxAvatarBytes) else {
            return .failure(Avatar.refusal(maxBytes: configuration.maxAvatarBytes))
        }
        return .success((nickname, avatar))
    }

    /// A token for `session`, valid from now for `lifetime` seconds.
    private func signed(nickname: Nickname, avatar: String, session: String, lifetime: Int64) -> Login {
        let now = clock() / 1000
        let identity = Identity(nickname: nickname, avatar: avatar, session: session, issuedAt: now, expiresAt: now + lifetime)
        return Login(token: signer.sign(identity), identity: identity)
    }

    /// `POST /api/token`: a token for a user the application has authenticated itself.
    /// No nickname claim here (the application vouches for the person); the session id
    /// is derived from the nickname, so every token minted for one nickname shares one
    /// claim — several tabs or devices of one user are one session.
    public func mint(nickname rawNickname: String?, avatar rawAvatar: String?, ttlSeconds: Int64) -> Result<Login, EventError> {
        validated(nickname: rawNickname, avatar: rawAvatar).map { nickname, avatar in
            signed(nickname: nickname, avatar: avatar, session: Identity.applicationSession(for: nickname), lifetime: ttlSeconds)
        }
    }

    /// The identity in `token` (ours or the application's JWT), or nil.
    public func authenticate(_ token: String) -> Identity? {
        try? verifier.verify(token, now: clock() / 1000).get()
    }

    /// The identity in `token`, or why it is refused — what every transport checks.
    /// A token of this cluster for `identity` (a Socket.IO `pid`).
    public func token(for identity: Identity) -> String {
        signer.sign(identity)
    }

    /// Signs `bytes` with the cluster secret (Socket.IO offsets).
    public func authenticate(_ bytes: [UInt8]) -> String {
        signer.authenticate(bytes)
    }

    /// Whether `mac` is ``authenticate(_:)`` of `bytes`.
    public func isAuthentic(_ mac: String, for bytes: [UInt8]) -> Bool {
        signer.isAuthentic(mac, for: bytes)
    }

    public func verify(_ token: String) -> Result<Identity, TokenRefusal> {
        verifier.verify(token, now: clock() / 1000)
    }
}
