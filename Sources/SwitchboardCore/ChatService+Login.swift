/// `POST /api/login` and tokens.
extension ChatService {
    public struct Login: Sendable {
        public var token: String
        public var identity: Identity
    }

    /// `POST /api/login`: validates, claims the nickname cluster-wide, signs a token.
    public func login(nickname rawNickname: String?, avatar rawAvatar: String?) async -> Result<Login, EventError> {
        guard let rawNickname, let nickname = Nickname(rawNickname) else {
            return .failure(EventError(.invalidNickname, "a nickname is 1–32 characters, no control characters, no leading or trailing spaces, no |"))
        }
        let avatar = rawAvatar ?? ""
        guard avatar.utf8.count <= configuration.maxAvatarBytes, avatar.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
        else {
            return .failure(EventError(.invalidMessage, "avatar must be at most \(configuration.maxAvatarBytes) bytes of printable text"))
        }
        let session = hex64(UInt64.random(in: .min ... .max)) + hex64(UInt64.random(in: .min ... .max))
        do {
            guard try await claims.claim(nickname, session: session) else {
                return .failure(EventError(.nicknameTaken, "the nickname \(nickname) is in use"))
            }
        } catch {
            return .failure(EventError(.unavailable, "the cluster backend is unavailable; try again"))
        }
        let now = clock() / 1000
        let identity = Identity(
            nickname: nickname, avatar: avatar, session: session, issuedAt: now,
            expiresAt: now + configuration.tokenLifetimeSeconds)
        return .success(Login(token: signer.sign(identity), identity: identity))
    }

    public func authenticate(_ token: String) -> Identity? {
        signer.verify(token, now: clock() / 1000)
    }
}
