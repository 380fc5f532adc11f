import Hummingbird
import HTTPTypes
import NIOCore
import SwitchboardCore

/// An error answered as `{"error": code, "message": …}` with an HTTP status.
struct APIError: HTTPResponseError {
    let status: HTTPResponse.Status
    let code: String
    let message: String?
    /// Why a token was refused (`token_expired`, …), next to `"error":"unauthorized"`.
    var reason: String?

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
    }

    /// 401 `{"error":"unauthorized","reason":…,"message":…}` for a refused token.
    init(_ refusal: TokenRefusal) {
        self.init(.unauthorized, ErrorCode.unauthorized.rawValue, refusal.message)
        self.reason = refusal.reason.rawValue
    }

    init(_ error: EventError) {
        let status: HTTPResponse.Status =
            switch error.code {
            case .nicknameTaken: .conflict
            case .unauthorized: .unauthorized
            case .loginClosed: .forbidden
            case .unavailable, .tooManyConnections: .serviceUnavailable
            case .rateLimited: .tooManyRequests
            default: .badRequest
            }
        self.init(status, error.code.rawValue, error.message)
    }

    static let unauthorized = APIError(.unauthorized, "unauthorized")

    func response(from request: Request, context: some RequestContext) throws -> Response {
        Response.json(JSONValue.object(bodyFields).jsonBytes, status: status)
    }

    /// `{"error": code, "reason"?, "message"?}`.
    var bodyFields: [String: JSONValue] {
        var fields: [String: JSONValue] = ["error": .string(code)]
        if let message { fields["message"] = .string(message) }
        if let reason { fields["reason"] = .string(reason) }
        return fields
    }
}

extension Response {
    static func json(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
