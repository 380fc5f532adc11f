import SwitchboardJSON

/// An error answered to an HTTP request, with the stable codes and messages of the
/// reference server: status 400 (403 for `forbidden`, 413 for `payloadTooLarge`) and
/// the body `{"code":N,"message":"…"}`.
public struct EngineIOServerError: Error, Sendable, Equatable, Hashable {
    /// The Engine.IO error code.
    public let code: Int
    /// The fixed message for the code.
    public let message: String
    /// The HTTP status of the response.
    public let status: Int

    private init(code: Int, message: String, status: Int = 400) {
        self.code = code
        self.message = message
        self.status = status
    }

    /// Code 0: the `transport` parameter is missing or not an enabled transport.
    public static let unknownTransport = Self(code: 0, message: "Transport unknown")
    /// Code 1: the `sid` parameter names no open session.
    public static let unknownSID = Self(code: 1, message: "Session ID unknown")
    /// Code 2: a handshake (no `sid`) that is not a `GET`.
    public static let badHandshakeMethod = Self(code: 2, message: "Bad handshake method")
    /// Code 3: any other request the protocol forbids (duplicate poll, concurrent POST,
    /// invalid packet, transport mismatch, WebSocket request without upgrade…).
    public static let badRequest = Self(code: 3, message: "Bad request")
    /// Code 4: refused by the application.
    public static let forbidden = Self(code: 4, message: "Forbidden", status: 403)
    /// Code 5: the `EIO` parameter is missing or not `4`.
    public static let unsupportedProtocolVersion = Self(code: 5, message: "Unsupported protocol version")
    /// A POST body larger than `maxPayload` (HTTP 413, code 3).
    public static let payloadTooLarge = Self(code: 3, message: "Payload too large", status: 413)

    /// The JSON body of the response.
    public var json: String {
        var writer = JSONWriter()
        writer.byte(UInt8(ascii: "{"))
        writer.key("code", first: true)
        writer.raw(String(code))
        writer.key("message")
        writer.string(message)
        writer.byte(UInt8(ascii: "}"))
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}
