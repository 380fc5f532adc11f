import SwitchboardCore

extension ChatService {
    /// The identity of a request's token — the check of every HTTP transport (SSE,
    /// iframe, polls, JSONP, `/api/send`, `/ws`) — or the 401 to answer, with the reason.
    func identity(token: String?) throws(APIError) -> Identity {
        try identity(bearer: token).get()
    }

    func identity(bearer token: String?) -> Result<Identity, APIError> {
        guard let token else {
            return .failure(APIError(TokenRefusal(.malformed, "no token: ?token=… or Authorization: Bearer …")))
        }
        return verify(token).mapError(APIError.init)
    }
}
