-- Apply coalesced count updates to the dashboard's read model, atomically (read_model.py).
-- KEYS: counts hash, tombstones hash, stream, by-name index, by-value index, totals hash,
--       feed list
-- ARGV: updates (JSON), stream length kept, history key prefix, history points kept,
--       history lifetime (s), "1" if these updates are repairs (not events), feed length
--       kept, events per second ({"<epoch s>": n}), rate key prefix, rate keys' lifetime (s)
local counts, tombstones, stream, by_name, by_value, totals, feed = unpack(KEYS)
local history_prefix, history_points = ARGV[3], tonumber(ARGV[4])
local history_ttl, repair, feed_length = tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7])
local rate_prefix, rate_ttl = ARGV[9], tonumber(ARGV[10])

-- Every change is worked out before any is written: a script that fails on its input (a
-- Lua error) has written nothing, so its events can be applied again one by one.
local writes, changes = {}, {}
local function write(...) writes[#writes + 1] = {...} end

-- An int64's decimal string as two doubles that hold it exactly: value = hi * 1e9 + lo.
local function parts(value)
    if not value then return 0, 0 end
    local sign, digits = 1, value
    if string.sub(value, 1, 1) == '-' then sign, digits = -1, string.sub(value, 2) end
    local cut = #digits - 9
    local hi = cut > 0 and tonumber(string.sub(digits, 1, cut)) or 0
    return sign * hi, sign * tonumber(string.sub(digits, math.max(1, cut + 1)))
end

-- The sum of all values lives in two integer fields, so it stays exact beyond 2^53.
local function move_total(old, new)
    local old_hi, old_lo = parts(old)
    local new_hi, new_lo = parts(new)
    for field, delta in pairs({hi = new_hi - old_hi, lo = new_lo - old_lo}) do
        if delta ~= 0 then write('HINCRBY', totals, field, string.format('%.0f', delta)) end
    end
end

-- Index members sort by the case-folded name (`k`), then the id; nameless counts by id.
local function name_member(entry, id) return (entry.k or id) .. '\0' .. id end

for _, u in ipairs(cjson.decode(ARGV[1])) do
    local tomb = tonumber(redis.call('HGET', tombstones, u.id)) or 0
    if u.lift and tomb == tonumber(u.lift) then  -- a tombstone the database contradicts
        write('HDEL', tombstones, u.id)
        tomb = 0
    end
    local raw = redis.call('HGET', counts, u.id)
    local ok, entry = pcall(cjson.decode, raw or '{}')
    if not ok or type(entry) ~= 'table' then entry = {} end  -- a damaged entry is rebuilt
    entry.vv, entry.nv = tonumber(entry.vv) or 0, tonumber(entry.nv) or 0
    local old_member, old_value = raw and name_member(entry, u.id), entry.value
    local change = {id = u.id, ts = u.ts}
    if u.dv then
        if u.dv > tomb then
            write('HSET', tombstones, u.id, u.dv)
            if raw then
                write('HDEL', counts, u.id)
                write('ZREM', by_name, old_member)
                write('ZREM', by_value, u.id)
                write('DEL', history_prefix .. u.id)
                move_total(old_value, nil)
                change.action, change.name, change.version = 'deleted', entry.name, u.dv
                change.old = old_value
                changes[#changes + 1] = change
            end
        end
    else
        -- A repair (`r`) may have shown a change before its event came: the next event is
        -- still told (feed, history) when it comes, though it changes nothing; as the
        -- count's creation if the repair created it (`r` = 'created').
        local yielding = not repair and entry.r
        if u.vv > tomb and u.vv >= entry.vv and (u.value ~= entry.value or yielding) then
            if u.value ~= entry.value then change.old = entry.value end
            entry.value, entry.vv = u.value, u.vv
            change.action = yielding == 'created' and 'created' or 'value'
        end
        local renamed = u.name ~= entry.name or (yielding and u.created)
        if u.nv and u.nv > tomb and u.nv >= entry.nv and renamed then
            -- A value event can arrive before its count's `created` (another topic).
            change.action = (u.created or not entry.name) and 'created' or 'renamed'
            change.renamed_from = entry.name ~= u.name and entry.name or nil
            entry.name, entry.nv, entry.k = u.name, u.nv, u.k
        end
        if change.action then
            if not repair then
                entry.r = nil
            elseif change.action == 'created' or entry.r == 'created' then
                entry.r = 'created'
            else
                entry.r = true
            end
            change.name, change.value = entry.name, entry.value
            change.version = math.max(entry.vv, entry.nv)
            write('HSET', counts, u.id, cjson.encode(entry))
            local member = name_member(entry, u.id)
            if member ~= old_member then
                if old_member then write('ZREM', by_name, old_member) end
                write('ZADD', by_name, 0, member)
            end
            if entry.value ~= old_value or yielding then
                write('ZADD', by_value, entry.value, u.id)
                if entry.value ~= old_value then move_total(old_value, entry.value) end
                if not repair then  -- a history of what events did, like the feed
                    local history = history_prefix .. u.id
                    write('RPUSH', history, u.ts .. ' ' .. entry.value)
                    write('LTRIM', history, -history_points, -1)
                    write('EXPIRE', history, history_ttl)
                end
            end
            changes[#changes + 1] = change
        end
    end
end
-- The feed: events of named counts (a value event that overtook its count's `created` is
-- told by that `created`). A repair is no event: it updates figures, not the feed.
for _, change in ipairs(changes) do
    if repair then
        change.repair = true
    elseif change.name then
        write('LPUSH', feed, cjson.encode(change))
    end
end
if not repair and #changes > 0 then write('LTRIM', feed, 0, feed_length - 1) end
for second, events in pairs(cjson.decode(ARGV[8])) do
    write('INCRBY', rate_prefix .. second, events)
    write('EXPIREAT', rate_prefix .. second, tonumber(second) + rate_ttl)
end
local encoded = #changes > 0 and cjson.encode(changes) or '[]'
for _, command in ipairs(writes) do redis.call(unpack(command)) end
if #changes > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 'changes', encoded)
end
return encoded
