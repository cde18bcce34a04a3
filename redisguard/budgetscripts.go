package redisguard

import (
	"strconv"

	"github.com/holysheep/httpguard"
)

// The BudgetStore's operations, each one Lua script that Redis runs
// atomically (EVALSHA, on scripts the store loads into Redis itself: see
// scriptSet). Every key a script touches is in its KEYS, and all of them share
// the budget's hash tag.
//
// Exact money. Redis hands Lua numbers as doubles, exact only below 2^53
// (about $9 million in nano-dollars), while a Budget's Limit may be up to
// MaxBudgetLimit (1e18 nano-dollars) and settled money saturates at twice
// that. So money never becomes one Lua number: it is stored as a decimal
// string and read as two limbs, hi·1e9 + lo with lo in [0, 1e9) and hi below
// 1e10, and the scripts add, subtract and compare limbs. Every number a
// script computes with (limbs, milliseconds since 1970, lease lengths) stays
// far below 2^53, so all of it is exact. Numbers go back to Redis through
// string.format('%d'), never through Lua's own conversion, which keeps only
// 14 digits.
//
// Time. Leases are measured on the Redis server's clock (TIME, in
// milliseconds), so that the processes sharing a store need not agree on
// the time, less the long pauses in the calls about their window (see
// leaseClock). Window starts and ends come from the Budgets' calendars, but a
// window opens for the fleet only once it has started on the server's
// clock: the fastest of the processes' clocks does not move every
// process's window boundary.

// budgetLib is the prelude of every script.
var budgetLib = `
local B = 1000000000
local function num(s)
  if not s then return 0, 0 end
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end
local function add(ah, al, bh, bl)
  local l = al + bl
  if l >= B then return ah + bh + 1, l - B end
  return ah + bh, l
end
local function sub(ah, al, bh, bl)
  local l = al - bl
  if l < 0 then return ah - bh - 1, l + B end
  return ah - bh, l
end
local function le(ah, al, bh, bl)
  return ah < bh or (ah == bh and al <= bl)
end
local function str(h, l)
  if h == 0 then return string.format('%d', l) end
  return string.format('%d%09d', h, l)
end
local function int(n) return string.format('%d', n) end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local CAP_H, CAP_L = num('` + strconv.FormatInt(int64(maxSettled), 10) + `')
-- expire releases the holds in win whose lease ended by now. h is the money
-- held there (nil: not read yet); it returns the money held after, and
-- whether it released any.
local function expire(win, leases, now, h)
  local released, hh, hl = false, 0, 0
  while true do
    local ids = redis.call('ZRANGEBYSCORE', leases, '-inf', int(now), 'LIMIT', 0, 500)
    if #ids == 0 then break end
    if not released then
      released = true
      if h == nil then h = redis.call('HGET', win, 'h') end
      hh, hl = num(h)
    end
    local fields = {}
    for i, id in ipairs(ids) do fields[i] = 'i:' .. id end
    local amounts = redis.call('HMGET', win, unpack(fields))
    for i = 1, #fields do
      if amounts[i] then hh, hl = sub(hh, hl, num(amounts[i])) end
    end
    redis.call('HDEL', win, unpack(fields))
    redis.call('ZREM', leases, unpack(ids))
  end
  if not released then return h, false end
  h = str(hh, hl)
  redis.call('HSET', win, 'h', h)
  return h, true
end
-- leaseClock returns the time the leases of window win run on (ms): the
-- server's clock, less what passed in each pause of the window's calls
-- longer than gap, half the shortest lease held there. A live process
-- renews its holds every third of their lease, so a longer pause means no
-- one could reach Redis (or no one was alive to call): the leases of the
-- processes that were cut off do not end meanwhile, and those processes
-- hold them again or renew them once they have Redis back. lease (ms, nil
-- or 0: none) is the caller's. It writes to win, which must exist after
-- the script.
local function leaseClock(win, now, lease)
  local v = redis.call('HMGET', win, 'seen', 'off', 'gap')
  local seen, off, gap = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3])
  if seen and gap and now - seen > gap then
    off = off + (now - seen - gap)
    redis.call('HSET', win, 'off', int(off))
  end
  if not seen or now > seen then redis.call('HSET', win, 'seen', int(now)) end
  if lease and lease > 0 and not (gap and gap <= math.floor(lease / 2)) then
    redis.call('HSET', win, 'gap', int(math.floor(lease / 2)))
  end
  return now - off
end
-- expireAt is when the keys of a window ending at endms (0: never) may go:
-- retention after the window ends for the fleet, or after now when that is
-- later. The end is on the calendar of the process that sent it, whose
-- clock read procms (Unix ms) when it did. The window ends for the fleet
-- once it has ended on that clock, moved onto the server's (which may not
-- agree: a server running ahead must not drop a window the fleet is still
-- in), and on the server's clock too: a newer window opens only once it
-- has started there (see reserveScript), so a fleet running ahead of the
-- server is kept in this one until then, and open takes its keys missing
-- meanwhile for a loss.
local function expireAt(endms, retention, now, procms)
  if endms == '0' then return nil end
  local e = tonumber(endms)
  return int(math.max(now + (e - tonumber(procms)), e, now) + tonumber(retention))
end
-- open reports whether a window ending at endms (as the newest window
-- keeps it) has not ended by now. Its keys live until Retention after
-- its end: when the newest window is open and its money is gone, Redis
-- lost it (evicted under a maxmemory-policy, or deleted), and the window
-- is marked lost in the newest window's key, which never expires, so that
-- no volatile-* policy evicts it.
local function open(endms, now)
  return endms == '0' or (endms ~= nil and tonumber(endms) > now)
end
-- extendTo makes key expire at exp (Unix ms), unless it lives longer
-- already: processes whose clocks disagree compute different ends for one
-- window, and the latest wins.
local function extendTo(key, exp, now)
  local ttl = redis.call('PTTL', key)
  if ttl == -1 or now + ttl < tonumber(exp) then redis.call('PEXPIREAT', key, exp) end
end
`

// maxSettled is where a window's settled money saturates, as in
// httpguard's in-memory store.
const maxSettled = 2 * httpguard.MaxBudgetLimit

// reserveScript holds an amount in a window if it fits under the limit, or
// answers "moved" when the store has seen a newer window, or when the window
// asked for is newer than the newest but has not started on the server's
// clock while the newest has not ended: a process whose clock runs ahead
// does not open the next window for the fleet, whose spend would then count
// twice in the window the provider is still billing. (When the newest has
// ended, the fleet was idle: the early window opens, and the current one's
// reservations follow it there.) It answers "ahead", opening nothing, for a
// window that starts further ahead of the server's clock than its own
// length: the fleet would follow it there, and be held to one Limit until
// that window ended (for a clock a year ahead, a year).
//
// KEYS: newest, win, lease. ARGV: window, start (Unix seconds), start
// (nanoseconds), end (Unix ms, 0: never), id, amount, lease (ms, 0: none),
// limit, retention (ms), channel, the sender's now (Unix ms), the born the
// sender last reserved under ("": none), the window it last reserved in
// there, a new born (for a window opened, or a Redis without one).
//
// Reply: {"moved", window, start s, start ns, end}, {"lost", window,
// "evicted"|"emptied"|"older"} (see open and born), {"ahead", window}, or
// {"ok"|"no", window, settled, held, free in (ms, -1: no lease)}; each
// followed by born.
var reserveScript = newScript(budgetLib + `
local now = clock()
local cur = redis.call('HMGET', KEYS[1], 'key', 'sec', 'nsec', 'end', 'lost', 'born', 'cause', 'noticed')
-- born names the newest window as Redis opened it: it is set anew each
-- time the newest key names another window (that key never expires), so
-- within a window it changes only when Redis lost that key (it restarted
-- empty; a replica without it took over; it was flushed), or went back to
-- an older window (a snapshot, a replica behind) that was then opened
-- again. And the newest window never goes back. A caller that reserved in
-- this window before knows that Redis lost the window's money when the
-- newest window is now an older one, or when born changed since: the
-- window is lost (see open), not opened again empty.
-- noticed keeps that the loss was noticed, so that once an operator
-- accepts it (deletes the field lost), a caller that knew the old data
-- does not notice it again.
local born = cur[6]
if not born then
  born = ARGV[14]
  redis.call('HSET', KEYS[1], 'born', born)
end
local win = KEYS[2]
local exp = expireAt(ARGV[4], ARGV[9], now, ARGV[11])
local gone
if ARGV[12] ~= '' and ARGV[13] == ARGV[1] and cur[8] ~= ARGV[1] and open(ARGV[4], now) then
  local older = cur[1] and cur[1] ~= ARGV[1] and (tonumber(cur[2]) < tonumber(ARGV[2])
      or (tonumber(cur[2]) == tonumber(ARGV[2]) and tonumber(cur[3]) < tonumber(ARGV[3])))
  if older then
    gone = 'older'
  elseif ARGV[12] ~= born and (not cur[1] or cur[1] == ARGV[1]) then
    gone = 'emptied'
  end
end
if gone then
  if cur[1] ~= ARGV[1] then
    born = ARGV[14]
    redis.call('HSET', KEYS[1], 'key', ARGV[1], 'sec', ARGV[2], 'nsec', ARGV[3], 'end', ARGV[4], 'born', born)
  end
  redis.call('HSET', KEYS[1], 'lost', ARGV[1], 'cause', gone, 'noticed', ARGV[1])
  if redis.call('EXISTS', win) == 0 then
    redis.call('HSET', win, 's', '0')
    if exp then extendTo(win, exp, now) end
  end
  return {'lost', ARGV[1], gone, born}
end
local opened = cur[1] ~= ARGV[1]
if opened then
  local startms = tonumber(ARGV[2]) * 1000 + math.floor(tonumber(ARGV[3]) / 1000000)
  if cur[1] then
    local s, cs = tonumber(ARGV[2]), tonumber(cur[2])
    if s < cs or (s == cs and tonumber(ARGV[3]) <= tonumber(cur[3]))
        or (startms > now and (cur[4] == '0' or tonumber(cur[4]) > now)) then
      return {'moved', cur[1], cur[2], cur[3], cur[4], born}
    end
  end
  if ARGV[4] ~= '0' and startms - now > tonumber(ARGV[4]) - startms then
    -- further ahead of the server's clock than its own length: the
    -- sender's clock is wrong, and the fleet would follow it there
    return {'ahead', ARGV[1], born}
  end
  born = ARGV[14]
  redis.call('HSET', KEYS[1], 'key', ARGV[1], 'sec', ARGV[2], 'nsec', ARGV[3], 'end', ARGV[4], 'born', born)
  if cur[5] or cur[8] then redis.call('HDEL', KEYS[1], 'lost', 'cause', 'noticed') end
end
local leases, hold = KEYS[3], 'i:' .. ARGV[5]
local w = redis.call('HMGET', win, 's', 'h', hold)
if not opened and (cur[5] == ARGV[1] or (not w[1] and open(cur[4], now))) then
  -- Redis lost the newest window's money (see lost): nothing more is
  -- admitted there
  local cause = cur[7] or 'evicted'
  if cur[5] ~= ARGV[1] then
    cause = 'evicted'
    redis.call('HSET', KEYS[1], 'lost', ARGV[1], 'cause', cause)
  end
  if not w[1] then
    -- the window from now on, empty: once an operator accepts the loss
    -- (deletes the field lost), it is open again, not lost once more
    redis.call('HSET', win, 's', '0')
    if exp then extendTo(win, exp, now) end
  end
  return {'lost', ARGV[1], cause, born}
end
local s, old = w[1] or '0', w[3]
local lnow = leaseClock(win, now, tonumber(ARGV[7]))
local h, released = expire(win, leases, lnow, w[2] or '0')
if released and old then old = redis.call('HGET', win, hold) end
local sh, sl = num(s)
local hh, hl = num(h)
local ok = 'no'
if string.sub(ARGV[6], 1, 1) ~= '-' then
  -- what the others hold: a hold with the same ID is replaced
  local oh, ol = hh, hl
  if old then oh, ol = sub(oh, ol, num(old)) end
  local th, tl = add(sh, sl, oh, ol)
  th, tl = add(th, tl, num(ARGV[6]))
  if le(th, tl, num(ARGV[8])) then
    ok = 'ok'
    hh, hl = add(oh, ol, num(ARGV[6]))
    redis.call('HSET', win, hold, ARGV[6], 'h', str(hh, hl), 's', s)
    if ARGV[7] ~= '0' then
      redis.call('ZADD', leases, int(lnow + tonumber(ARGV[7])), ARGV[5])
      if exp then extendTo(leases, exp, now) end
    elseif old then
      redis.call('ZREM', leases, ARGV[5])
    end
  end
end
-- the window exists from now on, until retention after its end (set on
-- every reservation: a settlement may have made the window first, not
-- knowing its end)
if not w[1] and ok == 'no' then redis.call('HSET', win, 's', s) end
if exp then extendTo(win, exp, now) else redis.call('PERSIST', win) end
local free = -1
if ok == 'no' then
  local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
  if first[2] then free = math.max(tonumber(first[2]) - lnow, 0) end
end
if released then redis.call('PUBLISH', ARGV[10], ARGV[1]) end
return {ok, ARGV[1], str(sh, sl), str(hh, hl), free, born}
`)

// settleScript releases a hold and adds the money charged to the window's
// settled money, saturating at maxSettled.
//
// A settlement is counted once: its token, unique to one call of Settle,
// is kept in done for a horizon, and the same settlement run again within
// it (a retry after a lost reply) changes nothing. Another settlement of
// the same reservation ID has another token, and counts.
//
// KEYS: newest, win, lease, done. ARGV: window, id ("" releases nothing),
// actual (in [0, maxSettled]), retention (ms), channel, the window's end
// (Unix ms, "0": never, "": unknown), horizon (ms), token, the sender's now
// (Unix ms). Reply: settled.
var settleScript = newScript(budgetLib + `
local now = clock()
local done = KEYS[4]
redis.call('ZREMRANGEBYSCORE', done, '-inf', int(now - tonumber(ARGV[7])))
if redis.call('ZSCORE', done, ARGV[8]) then
  return redis.call('HGET', KEYS[2], 's') or '0'
end
local win, leases, hold = KEYS[2], KEYS[3], 'i:' .. ARGV[2]
local w = redis.call('HMGET', win, 's', 'h', hold)
local a = w[3]
local h, released = expire(win, leases, leaseClock(win, now, nil), w[2] or '0')
if released and a then a = redis.call('HGET', win, hold) end
local sh, sl = num(w[1])
sh, sl = add(sh, sl, num(ARGV[3]))
if not le(sh, sl, CAP_H, CAP_L) then sh, sl = CAP_H, CAP_L end
local s = str(sh, sl)
if a then
  local hh, hl = num(h)
  hh, hl = sub(hh, hl, num(a))
  redis.call('HDEL', win, hold)
  redis.call('ZREM', leases, ARGV[2])
  redis.call('HSET', win, 's', s, 'h', str(hh, hl))
  released = true
else
  redis.call('HSET', win, 's', s)
end
if not w[1] then
  -- a window Redis no longer has (or never had): keep what it is charged
  -- as long as the window's own keys would live (its end, when the caller
  -- or the newest window says; otherwise from now)
  local cur = redis.call('HMGET', KEYS[1], 'key', 'end')
  if cur[1] == ARGV[1] and open(cur[2], now) then
    -- the newest window's money was lost (see lost): this charge does not
    -- make it whole, and nothing more is admitted there
    redis.call('HSET', KEYS[1], 'lost', ARGV[1], 'cause', 'evicted')
  end
  local endms = ARGV[6]
  if endms == '' then
    endms = ARGV[9] -- the sender's now: retention from now
    if cur[1] == ARGV[1] then endms = cur[2] end
  end
  local exp = expireAt(endms, ARGV[4], now, ARGV[9])
  if exp then extendTo(win, exp, now) end
end
-- the token last: a script that failed before here (Redis keeps what it
-- wrote) is counted again when replayed, never skipped
redis.call('ZADD', done, int(now), ARGV[8])
redis.call('PEXPIRE', done, ARGV[7])
if released then redis.call('PUBLISH', ARGV[5], ARGV[1]) end
return s
`)

// renewScript moves the lease ends of live holds to lease from now.
//
// KEYS: win, lease. ARGV: lease (ms), channel, window, ids...
var renewScript = newScript(budgetLib + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = leaseClock(KEYS[1], clock(), tonumber(ARGV[1]))
local _, released = expire(KEYS[1], KEYS[2], now, nil)
local upto = int(now + tonumber(ARGV[1]))
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[2], 'XX', upto, ARGV[i])
end
if released then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 0
`)

// reholdScript holds again the reservations of a live process whose leases
// ended while Redis was away, and moves the lease ends of all of them to
// their lease from now. The money is held even beyond the limit: the
// attempts are in flight, and the provider may bill them. A window Redis no
// longer has is left alone: nothing is admitted there any more.
//
// KEYS: win, lease. ARGV: id, amount, lease (ms), for each reservation.
var reholdScript = newScript(budgetLib + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = leaseClock(KEYS[1], clock(), nil)
local h = expire(KEYS[1], KEYS[2], now, nil)
if h == nil then h = redis.call('HGET', KEYS[1], 'h') end
local hh, hl = num(h)
for i = 1, #ARGV, 3 do
  local hold = 'i:' .. ARGV[i]
  if redis.call('HEXISTS', KEYS[1], hold) == 0 then
    hh, hl = add(hh, hl, num(ARGV[i + 1]))
    redis.call('HSET', KEYS[1], hold, ARGV[i + 1])
  end
  redis.call('ZADD', KEYS[2], int(now + tonumber(ARGV[i + 2])), ARGV[i])
end
redis.call('HSET', KEYS[1], 'h', str(hh, hl))
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 0
`)

// totalsScript reads a window's settled and held money.
//
// KEYS: win, lease. ARGV: channel, window. Reply: {settled, held}.
var totalsScript = newScript(budgetLib + `
local w = redis.call('HMGET', KEYS[1], 's', 'h')
if not w[1] then return {'0', '0'} end
local h, released = expire(KEYS[1], KEYS[2], leaseClock(KEYS[1], clock(), nil), w[2] or '0')
if released then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return {w[1], h}
`)
