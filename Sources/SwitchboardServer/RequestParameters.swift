import Hummingbird
import HTTPTypes
import SwitchboardCore

/// Query parameters and headers every transport reads, parsed and validated.
extension Request {
    /// The token from `?token=` or `Authorization: Bearer …`.
    var token: String? {
        if let bearer = headers[.authorization], bearer.hasPrefix("Bearer ") {
            return String(bearer.dropFirst(7))
        }
        return uri.queryParameters["token"].map(String.init)
    }

    /// `rooms=a,b` — nil entries are invalid room names.
    func rooms(limit: Int) throws -> [RoomName] {
        guard let raw = uri.queryParameters["rooms"], !raw.isEmpty else { return [] }
        let parts = raw.split(separator: ",", omittingEmptySubsequences: true)
        guard parts.count <= limit else {
            throw APIError(.badRequest, ErrorCode.tooManyRooms.rawValue, "at most \(limit) rooms")
        }
        return try parts.map {
            guard let room = RoomName(String($0)) else {
                throw APIError(.badRequest, ErrorCode.invalidRoom.rawValue, "a room is 1–64 of letters, digits, _ - . :")
            }
            return room
        }
    }

    /// `cursor=` (or the given header, e.g. `Last-Event-ID`).
    func cursor(header: HTTPField.Name? = nil) throws -> Cursor? {
        var raw = uri.queryParameters["cursor"].map(String.init)
        if let header, let value = headers[header] { raw = value }
        guard let raw else { return nil }
        guard let cursor = Cursor(raw) else { throw APIError(.badRequest, "invalid_cursor", "malformed cursor") }
        return cursor
    }
}
