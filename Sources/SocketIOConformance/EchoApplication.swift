import SocketIO
import SocketIOHummingbird

/// `/engine.io/`: the Engine.IO test-suite server sends every message back.
struct EchoApplication: EngineIOApplication {
    func open(_ session: EngineIOSessionHandle) -> any EngineIOSessionDelegate {
        EchoSession(session: session)
    }
}

final class EchoSession: EngineIOSessionDelegate {
    let session: EngineIOSessionHandle

    init(session: EngineIOSessionHandle) {
        self.session = session
    }

    func received(_ message: EngineIOMessage) {
        session.send([message])
    }

    func closed(_ reason: EngineIOCloseReason) {}

    var nextDeadline: EngineIOInstant? { nil }

    func tick(now: EngineIOInstant) {}
}
