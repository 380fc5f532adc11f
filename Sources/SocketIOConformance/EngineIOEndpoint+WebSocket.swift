import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import SocketIO

extension EngineIOEndpoint {
    /// Decides a WebSocket upgrade request to the endpoint. Requests the protocol
    /// refuses are upgraded too, then closed at once with 1008 and the error's JSON as
    /// the reason (a refused upgrade would otherwise be answered with a redirect).
    ///
    /// Frames are written straight to the channel, one flush per batch, and the next
    /// batch waits until the previous one reached the socket — as the reference server's
    /// WebSocket transport does — so that separate packets leave as separate writes.
    func webSocketHandler(
        for head: HTTPRequest, channel: any Channel
    ) -> WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context> {
        let path = head.path ?? "/"
        let query = path.firstIndex(of: "?").map { String(path[path.index(after: $0)...]) }
        let request = EngineIORequest(method: "GET", query: Self.query(query), isWebSocketUpgrade: true)
        switch route(request) {
        case .handshake(.websocket):
            return { inbound, outbound, _ in
                await self.serve(inbound: inbound, outbound: outbound, channel: channel, upgrading: nil)
            }
        case .upgrade(let sid):
            return { inbound, outbound, _ in
                await self.serve(inbound: inbound, outbound: outbound, channel: channel, upgrading: sid)
            }
        case .failure(let error):
            return { _, outbound, _ in try await outbound.close(.policyViolation, reason: error.json) }
        case .handshake(.polling), .poll, .post:
            return { _, outbound, _ in try await outbound.close(.policyViolation, reason: EngineIOServerError.badRequest.json) }
        }
    }

    /// Runs one socket: a writer task drains the commands of the state machine while
    /// this task feeds it the inbound messages.
    private func serve(
        inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, channel: any Channel, upgrading sid: String?
    ) async {
        let (commands, continuation) = AsyncStream.makeStream(of: SocketCommand.self)
        guard let socket = await openWebSocket(upgrading: sid, continuation: continuation) else {
            try? await outbound.close(.policyViolation, reason: EngineIOServerError.badRequest.json)
            return
        }
        let logger = self.logger.with("engine.sid", socket.sid)
        logger.debug("websocket open", metadata: ["socket": "\(socket.number)"])
        await withDiscardingTaskGroup { group in
            group.addTask {
                await Self.write(commands, to: channel, closing: outbound)
            }
            var reason = EngineIOCloseReason.transportClose
            do {
                for try await message in inbound.messages(maxSize: configuration.maxPayload) {
                    let frame: EngineIOFrame =
                        switch message {
                        case .text(let text): .text(text)
                        case .binary(let buffer): .binary(Array(buffer.readableBytesView))
                        }
                    await run { $0.receive(frame, on: socket, now: .now) }
                    // What this frame caused is on the wire before the next frame is read
                    // (the probe's answer goes out before the upgrade completes).
                    await withCheckedContinuation { (barrier: CheckedContinuation<Void, Never>) in
                        if case .terminated = continuation.yield(.barrier(barrier)) { barrier.resume() }
                    }
                }
            } catch {
                logger.debug("websocket inbound failed", metadata: ["error": "\(error)"])
                reason = .payloadTooLarge
            }
            await webSocketEnded(socket, reason: reason)
        }
        logger.debug("websocket closed", metadata: ["socket": "\(socket.number)"])
    }

    /// Writes frames until told to close, then drains the remaining commands (resuming
    /// barriers) until the socket is forgotten.
    private static func write(
        _ commands: AsyncStream<SocketCommand>, to channel: any Channel, closing outbound: WebSocketOutboundWriter
    ) async {
        var open = true
        for await command in commands {
            switch command {
            case .write(let frames):
                guard open, !frames.isEmpty else { continue }
                do {
                    let written = channel.eventLoop.flatSubmit {
                        for frame in frames.dropLast() { channel.write(Self.frame(frame), promise: nil) }
                        return channel.writeAndFlush(Self.frame(frames.last!))
                    }
                    try await written.get()
                } catch {
                    // The connection is gone; the inbound side notices and ends the session.
                    open = false
                }
            case .close(let error):
                if open { try? await outbound.close(error == nil ? .normalClosure : .policyViolation, reason: error?.json) }
                open = false
            case .barrier(let barrier):
                barrier.resume()
            }
        }
    }
}

extension EngineIOEndpoint {
    static func frame(_ frame: EngineIOFrame) -> WebSocketFrame {
        switch frame {
        case .text(let text): WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text))
        case .binary(let bytes): WebSocketFrame(fin: true, opcode: .binary, data: ByteBuffer(bytes: bytes))
        }
    }
}

extension Logger {
    func with(_ key: String, _ value: String) -> Logger {
        var copy = self
        copy[metadataKey: key] = .string(value)
        return copy
    }
}
