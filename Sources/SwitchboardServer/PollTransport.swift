import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardCore

/// `GET /poll?token=…&rooms=a,b&cursor=…&wait=25[&callback=fn]`: long-poll (`wait` 1–30 s),
/// short poll (`wait=0`) and JSONP. Stateless: any poll may land on any node; it reads
/// history after its cursor (its rooms' parked subscriber is already subscribed — subscribe
/// first, then read) and only waits when nothing is there. Every pending event comes back
/// in one batch with the new cursor: `{"cursor":…,"events":[…]}`.
struct PollTransport {
    let chat: ChatService
    let sessions: PollSessions
    let configuration: ServerConfiguration

    func register(on router: Router<SwitchboardRequestContext>) {
        router.get("/poll") { request, context in
            let callback = try request.callback()
            let identity = try chat.identity(token: request.token)
            let rooms = try request.rooms(limit: configuration.chat.maxRoomsPerConnection)
            let cursor = try request.cursor()
            let wait = try request.wait()
            let transport: Transport = callback != nil ? .jsonp : (wait == 0 ? .shortPoll : .longPoll)
            let subscriber: PollSubscriber
            let ticket: UInt64
            do {
                (subscriber, ticket) = try await sessions.acquire(identity, rooms: rooms, eventLoop: context.channel.eventLoop, transport: transport,
                    remote: context.channel.remoteAddress?.ipAddress)
            } catch let error as EventError {
                throw APIError(error)
            }
            let waiter = PollWaiter(subscriber: subscriber)
            defer { sessions.release(identity, rooms: rooms, ticket: ticket, clientGone: waiter.isGone) }
            let (position, events) = try await poll(
                identity, rooms: rooms, cursor: cursor, wait: wait, subscriber: subscriber, transport: transport,
                waiter: (waiter, context.channel))
            var body: [UInt8] = []
            body.reserveCapacity(64 + events.reduce(0) { $0 + $1.count + 1 })
            if let callback { body += Array(callback.utf8) + [UInt8(ascii: "(")] }
            var writer = JSONWriter()
            writer.raw("{")
            writer.key("cursor", first: true)
            writer.string(position.description)
            writer.key("node")
            writer.string(chat.nodeID)
            writer.key("events")
            body += writer.bytes + [UInt8(ascii: "[")]
            for (index, event) in events.enumerated() {
                if index > 0 { body.append(UInt8(ascii: ",")) }
                body += event
            }
            body += Array("]}".utf8)
            if callback != nil { body += Array(");".utf8) }
            let contentType = callback != nil ? "application/javascript; charset=utf-8" : "application/json; charset=utf-8"
            return Response(
                status: .ok,
                headers: [
                    .contentType: contentType, .cacheControl: "no-store", .xContentTypeOptions: "nosniff",
                    HTTPField.Name("X-Switchboard-Node")!: chat.nodeID,
                ],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
    }

    private func poll(
        _ identity: Identity, rooms: [RoomName], cursor: Cursor?, wait: Int, subscriber: PollSubscriber, transport: Transport,
        waiter: (PollWaiter, any Channel)
    ) async throws -> (Cursor, [[UInt8]]) {
        let start = try await subscriber.eventLoop.submit { subscriber.sequence }.get()
        let caughtUp: (backlog: [StreamEntry], resets: [ServerEvent], cursor: Cursor)
        do {
            caughtUp = try await chat.catchUp(identity, rooms: rooms, after: cursor, connection: nil)
        } catch {
            throw APIError(.serviceUnavailable, ErrorCode.unavailable.rawValue, "the cluster backend is unavailable")
        }
        var position = caughtUp.cursor
        guard cursor != nil else {
            // First poll: the welcome, with the cursor to poll from.
            let welcome = ServerEvent.welcome(
                nickname: identity.nickname, avatar: identity.avatar, node: chat.nodeID, transport: transport.rawValue,
                cursor: position.description)
            return (position, [welcome.jsonBytes] + (await chat.presenceSnapshot(rooms)).map(\.jsonBytes))
        }
        var events = caughtUp.resets.map(\.jsonBytes)
        for entry in caughtUp.backlog {
            position.advance(entry.stream, to: entry.id)
            events.append(encoded(entry, reusing: []))
        }
        if !events.isEmpty || wait == 0 { return (position, events + (await presenceEvents(rooms, already: events))) }

        // Nothing missed: wait for the parked subscriber to see something new. Its frames
        // only wake the poll (and carry the events history does not keep: presence,
        // joined/left); stored events are read again after the cursor, from the node's
        // cache or history. Answering from the frames alone would advance the cursor past
        // any id the subscriber did not see — a look that came late, after the window
        // moved on, or a subscription that was not active yet — and lose it for good.
        let deadline = NIODeadline.now() + .seconds(Int64(wait))
        var seen = start
        let eventLoop = subscriber.eventLoop
        // A client that goes away (its tab closed) ends the wait: nobody reads the answer.
        PollWaiters.register(waiter.0, on: waiter.1)
        defer { PollWaiters.unregister(waiter.0, on: waiter.1) }
        while true {
            // Look and register for the next batch in one step on the loop, so nothing
            // slips between.
            let after = seen
            let look = try await eventLoop.submit {
                (subscriber.frames(after: after), subscriber.sequence, subscriber.storedSince(after), subscriber.nextBatch(), subscriber.isClosed)
            }.get()
            let (frames, sequence, stored, batch, closed) = look
            seen = sequence
            for frame in frames where frame.id == nil { events.append(frame.bytes) }
            if stored {
                let more: (backlog: [StreamEntry], resets: [ServerEvent], cursor: Cursor)
                do {
                    more = try await chat.catchUp(identity, rooms: rooms, after: position, connection: nil)
                } catch {
                    throw APIError(.serviceUnavailable, ErrorCode.unavailable.rawValue, "the cluster backend is unavailable")
                }
                events += more.resets.map(\.jsonBytes)
                for entry in more.backlog {
                    position.advance(entry.stream, to: entry.id)
                    events.append(encoded(entry, reusing: frames))
                }
            }
            if !events.isEmpty || closed || waiter.0.isGone || NIODeadline.now() >= deadline { break }
            let timer = eventLoop.scheduleTask(deadline: deadline) { subscriber.wakeAll() }
            try? await batch.get()
            timer.cancel()
        }
        return (position, events + (await presenceEvents(rooms, already: events)))
    }

    /// The native encoding of `entry`: the bytes of the live frame that carried it when
    /// the subscriber has it (encoded once for every poller), else encoded here.
    private func encoded(_ entry: StreamEntry, reusing frames: [Frame]) -> [UInt8] {
        if let frame = frames.last(where: { $0.id == entry.id && $0.stream == entry.stream }) { return frame.bytes }
        return chat.hub.encode(entry.envelope.event, format: .native, stream: entry.stream, id: entry.id, envelope: entry.envelope).bytes
    }

    /// Polls see the current online count of their rooms in every answer (a count that
    /// changed between two polls would otherwise be missed), unless the answer already
    /// carries one for that room.
    private func presenceEvents(_ rooms: [RoomName], already events: [[UInt8]]) async -> [[UInt8]] {
        let snapshot = await chat.presenceSnapshot(rooms)
        return snapshot.compactMap { event in
            guard case .presence(let room, _) = event else { return nil }
            let marker = Array(#""type":"presence","room":"\#(room.value)""#.utf8)
            if events.contains(where: { $0.count < 256 && $0.firstRange(of: marker) != nil }) { return nil }
            return event.jsonBytes
        }
    }
}

extension Request {
    /// `wait=` seconds: default 25, at most 30; 0 = short poll.
    func wait() throws -> Int {
        guard let raw = uri.queryParameters["wait"] else { return 25 }
        guard let value = Int(raw), (0...30).contains(value) else {
            throw APIError(.badRequest, "invalid_wait", "wait must be 0–30 seconds")
        }
        return value
    }

    /// `callback=` validated against PROTOCOL.md's regex; nil when absent.
    func callback() throws -> String? {
        guard let raw = uri.queryParameters["callback"].map(String.init) else { return nil }
        guard CallbackName.isValid(raw) else {
            throw APIError(.badRequest, "invalid_callback", "callback must match ^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$")
        }
        return raw
    }
}
