import HTTPTypes
import Hummingbird

/// The Origin allow-list for CORS and WebSocket upgrades. Empty list: same origin only
/// (the `Origin` host must equal the `Host` header). Requests without `Origin`
/// (non-browser clients) are allowed. `*` allows every origin.
struct OriginPolicy {
    let allowed: [String]

    func isAllowed(_ request: Request) -> Bool {
        isAllowed(origin: request.headers[.origin], host: request.head.authority)
    }

    func isAllowed(origin: String?, host: String?) -> Bool {
        guard let origin else { return true }
        if allowed.contains("*") || allowed.contains(origin) { return true }
        guard let host else { return false }
        return origin == "http://\(host)" || origin == "https://\(host)"
    }

    func checkUpgrade(_ request: Request) throws {
        guard isAllowed(request) else { throw APIError(.forbidden, "origin_not_allowed", "origin not allowed") }
    }
}
