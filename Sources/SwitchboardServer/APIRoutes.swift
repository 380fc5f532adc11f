import Hummingbird
import SwitchboardCore

/// `POST /api/login`.
struct APIRoutes {
    let chat: ChatService
    let configuration: ServerConfiguration

    func register(on router: Router<SwitchboardRequestContext>) {
        router.post("/api/login") { request, context -> Response in
            let body = try await readJSON(request, context: context)
            let nickname = body["nickname"]?.stringValue
            let avatar: String?
            switch body["avatar"] {
            case nil, .null?: avatar = nil
            case .string(let value)?: avatar = value
            default: throw APIError(.badRequest, ErrorCode.invalidMessage.rawValue, "avatar must be a string")
            }
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
