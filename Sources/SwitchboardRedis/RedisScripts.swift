/// A Lua script run with EVALSHA (loaded with SCRIPT LOAD on every connect; EVAL when
/// Redis answers NOSCRIPT).
struct RedisScript: Sendable, Hashable {
    let name: String
    let source: String

    static let all: [RedisScript] = [
        publish, history, setPresence, removePresence, presenceCount, presenceMembers, claimNickname, releaseNickname, heartbeat, liveNodes,
    ]

    /// KEYS: history streams. ARGV: history limit, envelope, then the channel of each
    /// stream. Appends the envelope to every stream under one id (the server's time, or
    /// just above the newest id of any of the streams), trimmed to exactly `limit`
    /// (recording the newest trimmed id as the stream's max-deleted-entry-id so readers
    /// can detect gaps), and publishes `<id>\n<envelope>` on its channel. Returns the ids.
    static let publish = RedisScript(
        name: "publish",
        source: """
            local limit = tonumber(ARGV[1])
            local now = redis.call('TIME')
            local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
            local seq = 0
            for _, key in ipairs(KEYS) do
              local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
              if last then
                local dash = string.find(last[1], '-', 1, true)
                local lms = tonumber(string.sub(last[1], 1, dash - 1))
                local lseq = tonumber(string.sub(last[1], dash + 1))
                if lms > ms or (lms == ms and lseq >= seq) then ms = lms; seq = lseq + 1 end
              end
            end
            local next = string.format('%d-%d', ms, seq)
            local ids = {}
            for i, key in ipairs(KEYS) do
              local trimmed = nil
              local length = redis.call('XLEN', key)
              if length >= limit then
                local old = redis.call('XRANGE', key, '-', '+', 'COUNT', length - limit + 1)
                trimmed = old[#old][1]
              end
              local id = redis.call('XADD', key, 'MAXLEN', limit, next, 'e', ARGV[2])
              if trimmed then redis.call('XSETID', key, id, 'MAXDELETEDID', trimmed) end
              redis.call('PUBLISH', ARGV[2 + i], id .. '\\n' .. ARGV[2])
              ids[i] = id
            end
            return ids
            """)

    /// KEYS: a history stream. ARGV: exclusive start id or '', count. Returns the entries
    /// and the stream's max-deleted-entry-id ('' when the stream does not exist).
    static let history = RedisScript(
        name: "history",
        source: """
            local entries = {}
            local count = tonumber(ARGV[2])
            if count > 0 then
              local start = '-'
              if ARGV[1] ~= '' then start = '(' .. ARGV[1] end
              entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)
            end
            local deleted = ''
            if ARGV[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then
              local info = redis.call('XINFO', 'STREAM', KEYS[1])
              for i = 1, #info, 2 do
                if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
              end
            end
            return {entries, deleted}
            """)

    /// KEYS: the presence set and avatar hash of each entry, in pairs. ARGV: expiry (Unix
    /// ms), key margin (ms), then per entry its member and its avatar ('' to keep the
    /// recorded one, else '=' followed by the avatar). Both keys expire `margin` after the
    /// set's newest entry.
    static let setPresence = RedisScript(
        name: "setPresence",
        source: """
            local margin = tonumber(ARGV[2])
            local n = #KEYS / 2
            for i = 1, n do
              local key, avatars = KEYS[2 * i - 1], KEYS[2 * i]
              local member, avatar = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
              redis.call('ZADD', key, ARGV[1], member)
              if avatar ~= '' then
                redis.call('HSET', avatars, string.match(member, '([^|]*)$'), string.sub(avatar, 2))
              end
              local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
              local at = string.format('%d', tonumber(newest[2]) + margin)
              redis.call('PEXPIREAT', key, at)
              if redis.call('EXISTS', avatars) == 1 then redis.call('PEXPIREAT', avatars, at) end
            end
            return n
            """)

    /// KEYS: the presence set and avatar hash of each entry, in pairs. ARGV: the member of
    /// each entry. An emptied set takes its avatars with it.
    static let removePresence = RedisScript(
        name: "removePresence",
        source: """
            local removed = 0
            for i = 1, #KEYS / 2 do
              removed = removed + redis.call('ZREM', KEYS[2 * i - 1], ARGV[i])
              if redis.call('EXISTS', KEYS[2 * i - 1]) == 0 then redis.call('DEL', KEYS[2 * i]) end
            end
            return removed
            """)

    /// Shared by `presenceCount` and `presenceMembers` (KEYS: presence set, avatar hash;
    /// ARGV[1]: now): drops expired entries, collects the distinct nicknames (the part
    /// after the last `|`) of the rest, and drops avatars of nicknames no longer there.
    private static let liveNicknames = """
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
        local seen = {}
        local nicknames = {}
        for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          local nickname = string.match(member, '([^|]*)$')
          if not seen[nickname] then
            seen[nickname] = true
            nicknames[#nicknames + 1] = nickname
          end
        end
        if redis.call('HLEN', KEYS[2]) > #nicknames then
          for _, nickname in ipairs(redis.call('HKEYS', KEYS[2])) do
            if not seen[nickname] then redis.call('HDEL', KEYS[2], nickname) end
          end
        end
        """

    /// KEYS: a presence set, its avatar hash. ARGV: now (Unix ms). The number of
    /// distinct live nicknames.
    static let presenceCount = RedisScript(
        name: "presenceCount",
        source: liveNicknames + "\n" + """
            return #nicknames
            """)

    /// KEYS: a presence set, its avatar hash. ARGV: now (Unix ms). The distinct live
    /// nicknames, unordered: the broker sorts them by bytes (Lua's `<` follows the
    /// server's locale) and reads the avatars of the page it keeps.
    static let presenceMembers = RedisScript(
        name: "presenceMembers",
        source: liveNicknames + "\n" + """
            return nicknames
            """)

    /// KEYS: a nickname key. ARGV: session, ttl (ms). 1 when claimed or refreshed.
    static let claimNickname = RedisScript(
        name: "claimNickname",
        source: """
            local holder = redis.call('GET', KEYS[1])
            if holder == false or holder == ARGV[1] then
              redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
              return 1
            end
            return 0
            """)

    /// KEYS: a nickname key. ARGV: session. Deletes the claim only if `session` holds it.
    static let releaseNickname = RedisScript(
        name: "releaseNickname",
        source: """
            if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
            return 0
            """)

    /// KEYS: nodes set, node key. ARGV: now (Unix ms), node id, connections, ttl (ms).
    static let heartbeat = RedisScript(
        name: "heartbeat",
        source: """
            redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
            redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
            return 1
            """)

    /// KEYS: nodes set. ARGV: oldest live heartbeat (Unix ms), node key prefix. Drops older
    /// nodes; returns a flat list of id, last heartbeat, connections ('' when unknown).
    static let liveNodes = RedisScript(
        name: "liveNodes",
        source: """
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
            local nodes = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
            local result = {}
            for i = 1, #nodes, 2 do
              result[#result + 1] = nodes[i]
              result[#result + 1] = nodes[i + 1]
              result[#result + 1] = redis.call('GET', ARGV[2] .. nodes[i]) or ''
            end
            return result
            """)
}
