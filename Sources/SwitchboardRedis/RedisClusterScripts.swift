/// The scripts only `RedisClusterBroker` runs. Each touches one slot: a partition's
/// streams and their lock keys (`sb:{tag}:lock:<stream>`) share its hash tag.
///
/// A publish to streams of one slot is one `clusterPublish`. A publish to streams of
/// several slots (a whisper between two partitions) keeps one id for all of them with
/// locks: `lockStreams` on each slot in turn (each returns the smallest id its streams
/// could take), the largest of those is the id, `clusterPublish` with that id on each
/// slot appends, publishes and unlocks. While a stream is locked, other publishes to it
/// are refused with `SBLOCKED` and retried, so nothing can take an id in between.
extension RedisScript {
    static let cluster: [RedisScript] = [clusterPublish, lockStreams, unlockStreams]

    /// The smallest id above every stream's newest and not below the server's time, for
    /// KEYS[1…n]; sets `next`.
    private static let nextID = """
        local now = redis.call('TIME')
        local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
        local seq = 0
        for i = 1, n do
          local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)[1]
          if last then
            local dash = string.find(last[1], '-', 1, true)
            local lms = tonumber(string.sub(last[1], 1, dash - 1))
            local lseq = tonumber(string.sub(last[1], dash + 1))
            if lms > ms or (lms == ms and lseq >= seq) then ms = lms; seq = lseq + 1 end
          end
        end
        local next = string.format('%d-%d', ms, seq)
        """

    /// KEYS: n history streams, then their n lock keys. ARGV: history limit, envelope,
    /// lock token ('' for none), id ('' to choose one), then the channel of each stream.
    /// Refuses with SBLOCKED when another token locks a stream (or a given id is not above
    /// a stream's newest); else appends under one id, trims exactly as `publish` does,
    /// SPUBLISHes `<id>\n<envelope>`, drops this token's locks and returns the ids.
    static let clusterPublish = RedisScript(
        name: "clusterPublish",
        source: """
            local n = #KEYS / 2
            local limit = tonumber(ARGV[1])
            for i = 1, n do
              local holder = redis.call('GET', KEYS[n + i])
              if holder and holder ~= ARGV[3] then return redis.error_reply('SBLOCKED stream locked by a cross-slot publish') end
            end
            """ + "\n" + nextID + "\n" + """
            if ARGV[4] ~= '' then
              -- chosen under the locks: it must still be above every stream's newest
              local dash = string.find(ARGV[4], '-', 1, true)
              local gms = tonumber(string.sub(ARGV[4], 1, dash - 1))
              local gseq = tonumber(string.sub(ARGV[4], dash + 1))
              for i = 1, n do
                local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)[1]
                if last then
                  local d = string.find(last[1], '-', 1, true)
                  local lms = tonumber(string.sub(last[1], 1, d - 1))
                  local lseq = tonumber(string.sub(last[1], d + 1))
                  if lms > gms or (lms == gms and lseq >= gseq) then
                    return redis.error_reply('SBLOCKED id ' .. ARGV[4] .. ' is not above ' .. last[1])
                  end
                end
              end
              next = ARGV[4]
            end
            local ids = {}
            for i = 1, n do
              local key = KEYS[i]
              local trimmed = nil
              local length = redis.call('XLEN', key)
              if length >= limit then
                local old = redis.call('XRANGE', key, '-', '+', 'COUNT', length - limit + 1)
                trimmed = old[#old][1]
              end
              local id = redis.call('XADD', key, 'MAXLEN', limit, next, 'e', ARGV[2])
              if trimmed then redis.call('XSETID', key, id, 'MAXDELETEDID', trimmed) end
              redis.call('SPUBLISH', ARGV[4 + i], id .. '\\n' .. ARGV[2])
              ids[i] = id
              if ARGV[3] ~= '' and redis.call('GET', KEYS[n + i]) == ARGV[3] then redis.call('DEL', KEYS[n + i]) end
            end
            return ids
            """)

    /// KEYS: n history streams, then their n lock keys. ARGV: token, ttl (ms). '' when
    /// another token holds one of the locks (nothing taken); else takes every lock and
    /// returns the smallest id the streams could take now.
    static let lockStreams = RedisScript(
        name: "lockStreams",
        source: """
            local n = #KEYS / 2
            for i = 1, n do
              local holder = redis.call('GET', KEYS[n + i])
              if holder and holder ~= ARGV[1] then return '' end
            end
            for i = 1, n do redis.call('SET', KEYS[n + i], ARGV[1], 'PX', ARGV[2]) end
            """ + "\n" + nextID + "\n" + """
            return next
            """)

    /// KEYS: lock keys. ARGV: token. Drops the locks this token holds.
    static let unlockStreams = RedisScript(
        name: "unlockStreams",
        source: """
            for _, key in ipairs(KEYS) do
              if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
            end
            return 1
            """)
}
