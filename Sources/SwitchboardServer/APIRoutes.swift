import Hummingbird
import SwitchboardCore

/// `POST /api/login` (open login) and `POST /api/token` (tokens the application mints).
struct APIRoutes {
    let chat: ChatService
    let configuration: ServerConfiguration

    func register(on router: Router<SwitchboardRequestContext>) {
        router.post("/api/login") { request, context -> Response in
            guard configuration.login == .open else { throw Self.loginClosed }
            let body = try await readJSON(request, context: context)
            let nickname = body["nickname"]?.stringValue
            let avatar = try Self.avatar(in: body)
            switch await chat.login(nickname: nickname, avatar: avatar) {
            case .success(let login):
                return Response.json(
                    JSONValue.object([
                        "token": .string(login.token),
                        "nickname": .string(login.identity.nickname.value),
                        "avatar": .string(login.identity.avatar),
                        "node": .string(chat.nodeID),
                    ]).jsonBytes)
            case .failure(let error):
                throw APIError(error)
            }
        }
        router.post("/api/token") { request, context -> Response in
            try requireAPIKey(request)
            let body = try await readJSON(request, context: context)
            let ttl: Int64
            switch body["ttl"] {
            case nil, .null?: ttl = configuration.chat.tokenLifetimeSeconds
            case .int(let seconds)? where (1...configuration.maxMintedTokenSeconds).contains(seconds): ttl = seconds
            default:
                throw APIError(.badRequest, "invalid_ttl", "ttl is whole seconds, 1 to \(configuration.maxMintedTokenSeconds)")
            }
            let nickname: String?
            switch body["nickname"] {
            case .string(let value)?: nickname = value
            default: nickname = nil
            }
            switch chat.mint(nickname: nickname, avatar: try Self.avatar(in: body), ttlSeconds: ttl) {
            case .success(let login):
                return Response.json(
                    JSONValue.object([
                        "token": .string(login.token),
                        "nickname": .string(login.identity.nickname.value),
                        "avatar": .string(login.identity.avatar),
                        "expires": .int(login.identity.expiresAt),
                    ]).jsonBytes)
            case .failure(let error):
                throw APIError(error)
            }
        }
    }

    static let loginClosed = APIError(
        .forbidden, ErrorCode.loginClosed.rawValue,
        "this chat accepts only accounts of its application: sign in there, it hands you a token")

    /// `avatar` of a request body: absent, null or a string.
    static func avatar(in body: JSONValue) throws(APIError) -> String? {
        switch body["avatar"] {
        case nil, .null?: nil
        case .string(let value)?: value
        default: throw APIError(.badRequest, ErrorCode.invalidAvatar.rawValue, "avatar must be a string")
        }
    }

    /// `Authorization: Bearer <API key>` (compared in constant time), else 401.
    func requireAPIKey(_ request: Request) throws(APIError) {
        guard let key = configuration.apiKey, let header = request.headers[.authorization],
            constantTimeEqual(Array(header.utf8), Array("Bearer \(key)".utf8))
        else { throw APIError(.unauthorized, ErrorCode.unauthorized.rawValue, "this needs Authorization: Bearer <API key>") }
    }

    /// The request body as a JSON object, bounded in size.
    func readJSON(_ request: Request, context: SwitchboardRequestContext) async throws -> JSONValue {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: configuration.maxMessageBytes)
        } catch {
            throw APIError(.contentTooLarge, "body_too_large", "at most \(configuration.maxMessageBytes) bytes")
        }
        guard let json = JSONValue.parse(buffer.readableBytesView), case .object = json, json.depth <= 32 else {
            throw APIError(.badRequest, ErrorCode.invalidMessage.rawValue, "the body must be a JSON object")
        }
        return json
    }
}

/// Equal bytes, in time independent of where they differ.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) { difference |= x ^ y }
    return difference == 0
}
