import NIOCore

/// Something a `Heartbeat` calls every period, on its event loop.
protocol HeartbeatMember: AnyObject {
    func heartbeat()
}

/// One timer per event loop for all connections of a kind on it (WebSocket pings, stream
/// keep-alives), instead of one timer per connection: an idle connection costs a
/// dictionary entry here, not a scheduled task.
final class Heartbeat: Sendable {
    private let eventLoop: any EventLoop
    private let members: NIOLoopBoundBox<[ObjectIdentifier: any HeartbeatMember]>
    private let task: NIOLoopBoundBox<RepeatedTask?>

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.members = .makeBoxSendingValue([:], eventLoop: eventLoop)
        self.task = .makeBoxSendingValue(nil, eventLoop: eventLoop)
    }

    /// On the loop. The first member starts the timer with its `interval` (every member
    /// of one heartbeat has the same: a node's setting).
    func add(_ member: any HeartbeatMember, interval: Duration) {
        members.value[ObjectIdentifier(member)] = member
        guard task.value == nil else { return }
        let period = max(TimeAmount(interval), .milliseconds(1))
        task.value = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [self] _ in
            for member in members.value.values { member.heartbeat() }
        }
    }

    /// On the loop.
    func remove(_ member: any HeartbeatMember) {
        members.value[ObjectIdentifier(member)] = nil
    }

    /// On the loop: how many members it has.
    var count: Int { members.value.count }

    private static let webSocketLoops = PerEventLoop(Heartbeat.init)
    private static let streamLoops = PerEventLoop(Heartbeat.init)

    /// The WebSocket pings of `eventLoop`.
    static func webSockets(_ eventLoop: any EventLoop) -> Heartbeat { webSocketLoops.of(eventLoop) }
    /// The SSE / iframe keep-alives of `eventLoop`.
    static func streams(_ eventLoop: any EventLoop) -> Heartbeat { streamLoops.of(eventLoop) }
}
