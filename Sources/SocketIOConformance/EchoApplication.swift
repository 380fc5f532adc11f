import SocketIO

/// `/engine.io/`: the Engine.IO test-suite server sends every message back.
struct EchoApplication: EngineIOApplication {
    func handle(_ events: [EngineIOAction], endpoint: EngineIOEndpoint) async {
        for event in events {
            if case .received(let sid, let message) = event {
                await endpoint.send([message], to: sid)
            }
        }
    }

    func tick(now: EngineIOInstant, endpoint: EngineIOEndpoint) async {}

    var nextDeadline: EngineIOInstant? { nil }
}
