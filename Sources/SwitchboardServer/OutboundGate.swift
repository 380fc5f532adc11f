import SwitchboardCore

/// Per-connection delivery rules, shared by every transport and run on the
/// connection's event loop:
/// * until the opening backlog is written, live frames wait (so `welcome` comes first
///   and history precedes live events);
/// * a frame whose id is not newer than the last one delivered on its stream is a
///   duplicate (at-least-once below, exactly-once per id above) and is dropped;
/// * exclusions (`echo: false`, a whisper's sending connection) are applied.
struct OutboundGate {
    private(set) var isLive = false
    private var pending: [Frame] = []
    private(set) var cursor = Cursor()
    let nickname: Nickname
    let connection: ConnectionID
    /// Frames that may wait while the backlog is written.
    let maxPending: Int

    init(nickname: Nickname, connection: ConnectionID, maxPending: Int) {
        self.nickname = nickname
        self.connection = connection
        self.maxPending = maxPending
    }

    /// `stale`: a live frame not newer than the last one written on its stream. Events
    /// reach a connection in id order per stream (the broker's and the hub's rule), so
    /// this is a duplicate; it is counted (`switchboard_gate_drops_total`), because if
    /// order ever broke, this is where it would show.
    enum Admission { case write, hold, drop, stale, overflow }

    /// What to do with a live frame.
    mutating func admit(_ frame: Frame) -> Admission {
        guard frame.isVisible(to: nickname, connection: connection) else { return .drop }
        guard isLive else {
            guard pending.count < maxPending else { return .overflow }
            pending.append(frame)
            return .hold
        }
        return advance(frame) ? .write : .stale
    }

    /// Records a frame written outside `admit` (backlog); false when it is a duplicate.
    mutating func advance(_ frame: Frame) -> Bool {
        guard let stream = frame.stream, let id = frame.id else { return true }
        if let last = cursor[stream], last >= id { return false }
        cursor.advance(stream, to: id)
        return true
    }

    /// Seeds positions from the welcome cursor (before the backlog is written, so every
    /// position — and SSE's `id:` line — covers every stream).
    mutating func seed(_ start: Cursor) {
        for (room, id) in start.rooms { cursor.advance(.room(room), to: id) }
        if let user = start.user { cursor.advance(.user(nickname), to: user) }
    }

    /// Switches to live; returns the frames held meanwhile, in arrival order (each still
    /// to pass `advance`: the backlog may have covered them).
    mutating func goLive() -> [Frame] {
        isLive = true
        defer { pending = [] }
        return pending
    }
}
