extension ServerEvent {
    /// The native JSON encoding: one compact object, keys in a fixed order, `type` first.
    public var jsonBytes: [UInt8] {
        var w = JSONWriter()
        write(into: &w)
        return w.bytes
    }

    public func write(into w: inout JSONWriter) {
        if case .encoded(_, let json) = self {
            w.bytes(json)
            return
        }
        w.byte(UInt8(ascii: "{"))
        w.key("type", first: true)
        w.string(type)
        switch self {
        case .welcome(let nickname, let avatar, let node, let transport, let cursor):
            w.key("nickname"); w.string(nickname.value)
            w.key("avatar"); w.string(avatar)
            w.key("node"); w.string(node)
            w.key("transport"); w.string(transport)
            w.key("cursor"); w.string(cursor)
        case .message(let id, let room, let from, let text, let ts):
            if let id { w.key("id"); w.string(id.description) }
            w.key("room"); w.string(room.value)
            w.key("from"); Self.write(from, into: &w)
            w.key("text"); w.string(text)
            w.key("ts"); w.raw(String(ts))
        case .privateMessage(let id, let from, let to, let text, let ts):
            if let id { w.key("id"); w.string(id.description) }
            w.key("from"); Self.write(from, into: &w)
            w.key("to"); w.string(to.value)
            w.key("text"); w.string(text)
            w.key("ts"); w.raw(String(ts))
        case .presence(let room, let count):
            w.key("room"); w.string(room.value)
            w.key("count"); w.raw(String(count))
        case .members(let ref, let room, let page):
            if let ref { w.key("ref"); ref.write(into: &w) }
            w.key("room"); w.string(room.value)
            w.key("count"); w.raw(String(page.total))
            w.key("members"); w.byte(UInt8(ascii: "["))
            for (index, member) in page.members.enumerated() {
                if index > 0 { w.byte(UInt8(ascii: ",")) }
                w.byte(UInt8(ascii: "{"))
                w.key("nickname", first: true); w.string(member.nickname.value)
                w.key("avatar"); w.string(member.avatar)
                w.byte(UInt8(ascii: "}"))
            }
            w.byte(UInt8(ascii: "]"))
            w.key("next")
            if let next = page.next { w.string(next.value) } else { w.raw("null") }
        case .joined(let room, let nickname), .left(let room, let nickname):
            w.key("room"); w.string(room.value)
            w.key("nickname"); w.string(nickname.value)
        case .ack(let ref, let id):
            if let ref { w.key("ref"); ref.write(into: &w) }
            if let id { w.key("id"); w.string(id.description) }
        case .error(let ref, let code, let message):
            if let ref { w.key("ref"); ref.write(into: &w) }
            w.key("code"); w.string(code.rawValue)
            w.key("message"); w.string(message)
        case .pong:
            break
        case .reset(let room, let cursor):
            if let room { w.key("room"); w.string(room.value) }
            w.key("cursor"); w.string(cursor)
        case .encoded:
            break
        case .application(let id, let target, let fields):
            if let id { w.key("id"); w.string(id.description) }
            switch target {
            case .room(let room): w.key("room"); w.string(room.value)
            case .user(let nickname): w.key("to"); w.string(nickname.value)
            }
            for key in fields.keys.sorted() where !["type", "id", "room", "to"].contains(key) {
                w.key(key)
                fields[key]!.write(into: &w)
            }
        }
        w.byte(UInt8(ascii: "}"))
    }

    private static func write(_ sender: Sender, into w: inout JSONWriter) {
        w.byte(UInt8(ascii: "{"))
        w.key("nickname", first: true); w.string(sender.nickname.value)
        w.key("avatar"); w.string(sender.avatar)
        w.byte(UInt8(ascii: "}"))
    }

    /// Parses the native encoding back (for tests, the bench and stored history).
    public static func parse(_ bytes: some Collection<UInt8>) -> ServerEvent? {
        guard let json = JSONValue.parse(bytes) else { return nil }
        return parse(json)
    }

    public static func parse(_ json: JSONValue) -> ServerEvent? {
        guard case .object(let f) = json, let type = f["type"]?.stringValue else { return nil }
        let id = f["id"]?.stringValue.flatMap { MessageID($0) }
        func int(_ key: String) -> Int64? {
            if case .int(let value)? = f[key] { return value }
            return nil
        }
        func sender() -> Sender? {
            guard let from = f["from"], let nick = from["nickname"]?.stringValue.flatMap(Nickname.init),
                let avatar = from["avatar"]?.stringValue
            else { return nil }
            return Sender(nickname: nick, avatar: avatar)
        }
        let room = f["room"]?.stringValue.flatMap(RoomName.init)
        switch type {
        case "welcome":
            guard let nick = f["nickname"]?.stringValue.flatMap(Nickname.init), let avatar = f["avatar"]?.stringValue,
                let node = f["node"]?.stringValue, let transport = f["transport"]?.stringValue,
                let cursor = f["cursor"]?.stringValue
            else { return nil }
            return .welcome(nickname: nick, avatar: avatar, node: node, transport: transport, cursor: cursor)
        case "message":
            guard let room, let from = sender(), let text = f["text"]?.stringValue, let ts = int("ts") else { return nil }
            return .message(id: id, room: room, from: from, text: text, ts: ts)
        case "private":
            guard let from = sender(), let to = f["to"]?.stringValue.flatMap(Nickname.init),
                let text = f["text"]?.stringValue, let ts = int("ts")
            else { return nil }
            return .privateMessage(id: id, from: from, to: to, text: text, ts: ts)
        case "presence":
            guard let room, let count = int("count") else { return nil }
            return .presence(room: room, count: Int(count))
        case "members":
            guard let room, let count = int("count"), case .array(let list)? = f["members"] else { return nil }
            var members: [RoomMember] = []
            for item in list {
                guard let nickname = item["nickname"]?.stringValue.flatMap(Nickname.init), let avatar = item["avatar"]?.stringValue
                else { return nil }
                members.append(RoomMember(nickname: nickname, avatar: avatar))
            }
            let next = f["next"]?.stringValue.flatMap(Nickname.init)
            return .members(ref: f["ref"], room: room, page: PresencePage(total: Int(count), members: members, next: next))
        case "joined", "left":
            guard let room, let nick = f["nickname"]?.stringValue.flatMap(Nickname.init) else { return nil }
            return type == "joined" ? .joined(room: room, nickname: nick) : .left(room: room, nickname: nick)
        case "ack":
            return .ack(ref: f["ref"], id: id)
        case "error":
            guard let code = f["code"]?.stringValue.flatMap(ErrorCode.init(rawValue:)),
                let message = f["message"]?.stringValue
            else { return nil }
            return .error(ref: f["ref"], code: code, message: message)
        case "pong":
            return .pong
        case "reset":
            guard let cursor = f["cursor"]?.stringValue else { return nil }
            return .reset(room: room, cursor: cursor)
        default:
            let target: StreamKey
            if let room {
                target = .room(room)
            } else if let to = f["to"]?.stringValue.flatMap(Nickname.init) {
                target = .user(to)
            } else {
                return nil
            }
            var fields = f
            for key in ["id", "room", "to"] { fields[key] = nil }
            return .application(id: id, target: target, fields: fields)
        }
    }
}
