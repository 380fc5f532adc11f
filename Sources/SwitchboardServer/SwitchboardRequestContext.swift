import Hummingbird
import NIOCore

/// The request context of every HTTP route: Hummingbird's core storage and the NIO
/// channel (the streaming transports write to it directly, grouped per event loop).
/// Not a `WebSocketRequestContext`: WebSocket upgrades are decided without the router,
/// whose handler slot would hold this context — and through it the channel — in a cycle.
struct SwitchboardRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }
}
