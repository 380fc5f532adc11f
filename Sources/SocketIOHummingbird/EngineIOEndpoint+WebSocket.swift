import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import SocketIO

extension EngineIOEndpoint {
    /// Runs one upgraded WebSocket of the endpoint's path (`query` is the request's query
    /// string, parsed with ``query(_:)``): a new session, or the upgrade of a polling
    /// one. Requests the protocol refuses are closed at once with 1008 and the error's
    /// JSON as the reason (servers that can should refuse them before the upgrade, with
    /// ``route(_:)``).
    ///
    /// Frames are written straight to `channel` from the session's loop; inbound frames
    /// are fed to the session one at a time, each one's effects issued before the next
    /// is read (the probe's answer goes out before the upgrade completes).
    public func serveWebSocket(
        query: [String: String], inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, channel: any Channel
    ) async {
        let request = EngineIORequest(method: "GET", query: query, isWebSocketUpgrade: true)
        let upgrading: String?
        switch route(request) {
        case .handshake(.websocket):
            upgrading = nil
        case .upgrade(let sid):
            upgrading = sid
        case .failure(let error):
            try? await outbound.close(.policyViolation, reason: error.json)
            return
        case .handshake(.polling), .poll, .post:
            try? await outbound.close(.policyViolation, reason: EngineIOServerError.badRequest.json)
            return
        }
        let writer = EngineIOSocketWriter(channel: channel, maxBacklog: maxBacklog)
        if let sid = upgrading, let forwarder, isRemote(sid) {
            // Another node's session: relayed there, frame by frame.
            guard let node = await forwarder.owner(of: sid) else {
                try? await outbound.close(.policyViolation, reason: EngineIOServerError.unknownSID.json)
                return
            }
            await forwarder.relay(
                sid: sid, to: node, inbound: inbound, outbound: outbound, writer: writer, maxPayload: configuration.maxPayload)
            return
        }
        let remote = channel.remoteAddress?.ipAddress
        guard let (host, socket) = await openWebSocket(upgrading: upgrading, writer: writer, remoteAddress: remote) else {
            try? await outbound.close(.policyViolation, reason: EngineIOServerError.badRequest.json)
            return
        }
        var logger = self.logger
        logger[metadataKey: "engine.sid"] = .string(socket.sid)
        logger.debug("websocket open", metadata: ["socket": "\(socket.number)"])
        var reason = EngineIOCloseReason.transportClose
        do {
            for try await message in inbound.messages(maxSize: configuration.maxPayload) {
                let frame: EngineIOFrame =
                    switch message {
                    case .text(let text): .text(text)
                    case .binary(let buffer): .binary(Array(buffer.readableBytesView))
                    }
                _ = await host.run { $0.receive(frame, on: socket) }
            }
        } catch {
            logger.debug("websocket inbound failed", metadata: ["error": "\(error)"])
            reason = .payloadTooLarge
        }
        let closeReason = reason
        _ = await host.run { $0.webSocketClosed(socket, reason: closeReason) }
        if closeReason == .payloadTooLarge { writer.close(code: .messageTooLarge) }
        logger.debug("websocket closed", metadata: ["socket": "\(socket.number)"])
    }
}
