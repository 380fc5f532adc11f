/// A Lua script run with EVALSHA (loaded with SCRIPT LOAD on every connect; EVAL when
/// Redis answers NOSCRIPT).
struct RedisScript: Sendable, Hashable {
    let name: String
    let source: String

    static let all: [RedisScript] = [
        publish, history, setPresence, removePresence, presenceCount, claimNickname, releaseNickname, heartbeat, liveNodes,
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

    /// KEYS: presence sets (one per entry). ARGV: expiry (Unix ms), key margin (ms), then
    /// the member of each entry. The key itself expires `margin` after its newest entry.
    static let setPresence = RedisScript(
        name: "setPresence",
        source: """
            local margin = tonumber(ARGV[2])
            for i, key in ipairs(KEYS) do
              redis.call('ZADD', key, ARGV[1], ARGV[2 + i])
              local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
              redis.call('PEXPIREAT', key, string.format('%d', tonumber(newest[2]) + margin))
            end
            return #KEYS
            """)

    /// KEYS: presence sets (one per entry). ARGV: the member of each entry.
    static let removePresence = RedisScript(
        name: "removePresence",
        source: """
            local removed = 0
            for i, key in ipairs(KEYS) do removed = removed + redis.call('ZREM', key, ARGV[i]) end
            return removed
            """)

    /// KEYS: a presence set. ARGV: now (Unix ms). Drops expired entries and counts the
    /// distinct nicknames (the part after the last `|`) of the rest.
    static let presenceCount = RedisScript(
        name: "presenceCount",
        source: """
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
            local seen = {}
            local count = 0
            for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
              local nickname = string.match(member, '([^|]*)$')
              if not seen[nickname] then
                seen[nickname] = true
                count = count + 1
              end
            end
            return count
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
