package redisguard

// The LimitStore's own scripts, next to redis_rate's: Adjust's credit and
// debit, which redis_rate lacks, on a bucket in redis_rate's format; the
// pause; and the count of the stores sharing a name. Each touches the keys
// of one limiter key, or the count.
//
// Time is the Redis server's (TIME), as in redis_rate: in seconds since
// 2017-01-01 as a double (microseconds are exact there until 2048), so that
// the processes sharing a store need not agree on the time.

// limitLib is the prelude of the scripts that read the clock as
// redis_rate does.
const limitLib = `
local function clock()
  local t = redis.call('TIME')
  return (t[1] - 1483228800) + (t[2] / 1000000)
end
`

// takeScript takes n tokens from a bucket as redis_rate's allowN does, on
// its format, and also returns the bucket's time after the take: the
// turn's end, which a credit of the turn's tokens is bounded by (see
// adjustScript). It takes them as soon as the bucket will have them
// within ahead of now (see httpguard.AheadLimitStore); with ahead 0, only
// once it has them, as allowN. A bucket that lacks them so is left as it
// is, and the reply says how long until it has them.
//
// KEYS: the bucket, with redis_rate's "rate:". ARGV: the emission
// interval (seconds, as adjustScript's), burst, n, ahead (seconds).
// Reply: {1, the bucket's time, how long until the bucket has them (0
// when it has)} or {0, the wait}, the times as strings of seconds, as
// clock() reads them.
var takeScript = newScript(limitLib + `
local now = clock()
local interval = tonumber(ARGV[1])
local tat = redis.call('GET', KEYS[1])
if tat then tat = math.max(tonumber(tat), now) else tat = now end
local new_tat = tat + interval * tonumber(ARGV[3])
local allow_at = new_tat - interval * tonumber(ARGV[2])
if allow_at > now + tonumber(ARGV[4]) then return {0, string.format('%.17g', allow_at - now)} end
local reset_after = new_tat - now
if reset_after > 0 then
  redis.call('SET', KEYS[1], new_tat, 'EX', math.ceil(reset_after))
end
return {1, string.format('%.17g', new_tat), string.format('%.17g', math.max(allow_at - now, 0))}
`)

// peekScript returns how far a bucket's time is ahead of now (0: the
// bucket is full), as redis_rate's allowN asked for 0 tokens tells in its
// ResetAfter, without writing.
//
// KEYS: the bucket, with redis_rate's "rate:". Reply: the time, a string
// of seconds.
var peekScript = newScript(limitLib + `
local tat = redis.call('GET', KEYS[1])
if not tat then return '0' end
return string.format('%.17g', math.max(tonumber(tat) - clock(), 0))
`)

// adjustScript takes n more tokens from a bucket (n > 0, a debit that may
// leave it in debt by one burst at most, and never gives back from a
// deeper debt) or gives -n back (n < 0, a credit that never fills it past
// its burst). The bucket is GCRA's theoretical arrival time (TAT), as
// redis_rate's allowN keeps it: each token moves it on by the emission
// interval, the bucket is full when it is not after now, and the key
// expires, as redis_rate sets it, once the bucket is full again; a full
// bucket is no key.
//
// A credit of a turn whose end takeScript told (the bucket's time after
// the turn) gives back no more than the bucket still owes of the turn's
// tokens: those it refills after now, until that end, in whole tokens.
//
// A credit or a debit with a token counts once: its token, unique to one
// call, is kept in the credits set for a horizon, and the same correction
// run again within it (a retry of a script whose reply was lost, or a
// debit the store kept while Redis stalled and replays once it is back,
// the stalled call having run meanwhile) moves the bucket no more.
//
// KEYS: the bucket, with redis_rate's "rate:"; the credits. ARGV: the
// emission interval (seconds, as redis_rate computes it: period / rate),
// burst, n, the correction's token ("" for none), the horizon (ms), the
// turn's end (nanoseconds since 2017-01-01; "" for none).
var adjustScript = newScript(limitLib + `
local now = clock()
local interval = tonumber(ARGV[1])
local burst_offset = interval * tonumber(ARGV[2])
local n = tonumber(ARGV[3])
if n < 0 and ARGV[6] ~= '' then
  local owed = math.floor((tonumber(ARGV[6]) / 1e9 - now) / interval)
  if owed <= 0 then return 0 end
  n = math.max(n, -owed)
end
if ARGV[4] ~= '' then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', ms - tonumber(ARGV[5])))
  if redis.call('ZSCORE', KEYS[2], ARGV[4]) then return 0 end
  redis.call('ZADD', KEYS[2], string.format('%d', ms), ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
local tat = redis.call('GET', KEYS[1])
if tat then tat = math.max(tonumber(tat), now) else tat = now end
if n > 0 then
  tat = math.max(tat, math.min(tat + n * interval, now + 2 * burst_offset))
else
  tat = math.max(tat + n * interval, now)
end
local reset_after = tat - now
if reset_after > 0 then
  redis.call('SET', KEYS[1], tat, 'EX', math.ceil(reset_after))
else
  redis.call('DEL', KEYS[1])
end
return 0
`)

// pauseScript makes a key's pause end d from now, unless it ends later
// already. The key holds the end and expires with it.
//
// KEYS: the pause. ARGV: d (seconds).
var pauseScript = newScript(limitLib + `
local now = clock()
local d = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= now + d then return 0 end
redis.call('SET', KEYS[1], string.format('%.6f', now + d), 'PX', math.ceil(d * 1000))
return 0
`)

// pausedScript returns how long a key's pause still lasts, in
// microseconds (0: none), and the key's adaptive rate (see fleetLib),
// having counted the requests admitted the store gives it. It
// reads the pause's end rather than the key's TTL, so that a server whose
// expiry lags (miniredis) does not lengthen it.
//
// KEYS: the pause, the adaptive rate. ARGV: the requests admitted, how
// long ago the first of them was (seconds).
var pausedScript = newScript(limitLib + fleetLib + `
local now = clock()
local f
local admitted = tonumber(ARGV[1])
if admitted > 0 then
  f = fleet_load(now, admitted, tonumber(ARGV[2]))
  f.last = now
  fleet_save(f, now)
else
  local v = redis.call('HMGET', KEYS[2], 'n', 'from', 'at')
  f = {n = tonumber(v[1]) or 0, from = tonumber(v[2]) or 0, at = tonumber(v[3]) or 0}
end
local left = 0
local v = redis.call('GET', KEYS[1])
if v then left = math.max(0, math.ceil((tonumber(v) - now) * 1000000)) end
return fleet_reply(left, f, now)
`)

// fleetLib keeps a key's adaptive request rate for the fleet (see
// httpguard.AdaptiveLimitStore) in a hash: n, the decreases; from, the rate
// the last cut from; at, when (seconds, as clock()); and the requests
// admitted (s) and refused with a 429 (r) in two fixed windows of a second,
// the current one starting at ws (c) and the one before (p), counted since
// born (when the first request counted was admitted). The hash expires
// 600 s after the last decrease (httpguard.DefaultIdleTTL, as a
// MemoryLimitStore keeps it), or two seconds after the last count when
// there was none.
//
// A store sends the requests it admitted late, in a batch, with how long
// ago the first of them was (see admitCountEvery): fleet_load counts them
// in the window that time falls in, and not at all when it is older than
// the window before, as httpguard's MemoryLimitStore counts each request
// when it is admitted; so a burst followed by an idle key does not weigh
// in a 429's judgement seconds later.
const fleetLib = `
local function fleet_load(now, admitted, age)
  local first = now - math.max(age, 0)
  local v = redis.call('HMGET', KEYS[2], 'born', 'ws', 'sc', 'sp', 'rc', 'rp', 'n', 'from', 'at', 'last')
  local f = {born = tonumber(v[1]) or first, ws = tonumber(v[2]) or first, sc = tonumber(v[3]) or 0,
    sp = tonumber(v[4]) or 0, rc = tonumber(v[5]) or 0, rp = tonumber(v[6]) or 0,
    n = tonumber(v[7]) or 0, from = tonumber(v[8]) or 0, at = tonumber(v[9]) or 0, last = tonumber(v[10]) or now}
  -- A decrease cannot be later than now (a corrupted hash, or a clock
  -- that went back): its TTL, counted from it, would be past PEXPIRE's.
  if f.at > now then f.at = now end
  -- Requests admitted before the first counted, within a second of now,
  -- start the windows (born's, as the MemoryLimitStore's): a store's batch
  -- may come after a later one of another store's.
  if admitted > 0 and first < f.born and now - first < 1 then f.ws = first end
  -- The windows now and the first request admitted fall in, counted from
  -- ws before it moves on.
  local k, j = math.floor(now - f.ws), math.floor(first - f.ws)
  if k >= 1 then
    if k == 1 then f.sp, f.rp = f.sc, f.rc else f.sp, f.rp = 0, 0 end
    f.sc, f.rc, f.ws = 0, 0, f.ws + k
  end
  if admitted > 0 and j >= k - 1 then
    if j >= k then f.sc = f.sc + admitted else f.sp = f.sp + admitted end
    if first < f.born then f.born = first end
  end
  return f
end
local function fleet_save(f, now)
  redis.call('HSET', KEYS[2], 'born', string.format('%.6f', f.born), 'ws', string.format('%.6f', f.ws),
    'sc', f.sc, 'sp', f.sp, 'rc', f.rc, 'rp', f.rp, 'n', f.n, 'from', string.format('%.17g', f.from),
    'at', string.format('%.6f', f.at), 'last', string.format('%.6f', f.last))
  local ttl = 2
  if f.n > 0 then ttl = math.max(ttl, f.at + 600 - now) end
  redis.call('PEXPIRE', KEYS[2], math.ceil(ttl * 1000))
end
local function fleet_count(f, now, cur, prev)
  return cur + prev * (1 - (now - f.ws))
end
local function fleet_reply(left, f, now)
  local since = 0
  if f.n > 0 then since = math.max(0, math.floor((now - f.at) * 1000000)) end
  return {left, f.n, string.format('%.17g', f.from), since}
end
`

// slowDownScript counts a 429 (and the requests admitted since the last
// count) and judges whether the key's 429s over the last second are more
// than the tolerated share of its admitted requests; if so, unless a
// decrease came after the request was sent, it records one from the rate
// in force or the rate accepted over the last second, the lower (see
// httpguard.AdaptiveLimitStore.SlowDown); a decrease on 429s fewer than
// twice the share, with none other over the half second before it
// (httpguard's chanceCutSpacing), forgets them. The reply's first field,
// a pause check's pause left, is the verdict: 1 beyond the share, 0
// within.
//
// KEYS: the pause (unused but for the reply's shape), the adaptive rate.
// ARGV: the requests admitted and how long ago the first of them was, how
// long ago the request was sent (seconds), the rate in force, the share
// tolerated.
var slowDownScript = newScript(limitLib + fleetLib + `
local now = clock()
local f = fleet_load(now, tonumber(ARGV[1]), tonumber(ARGV[2]))
f.rc, f.last = f.rc + 1, now
local sent, refused = fleet_count(f, now, f.sc, f.sp), fleet_count(f, now, f.rc, f.rp)
local tolerated = tonumber(ARGV[5])
local beyond = 0
if refused > tolerated * sent then
  beyond = 1
  if not (f.n > 0 and now - tonumber(ARGV[3]) < f.at) then
    local from = tonumber(ARGV[4])
    local span = math.min(now - f.born, 1)
    if span > 0 then
      local accepted = math.max(sent - refused, 0) / span
      if accepted > 0 and accepted < from then from = accepted end
    end
    if refused < 2 * tolerated * sent and (f.n == 0 or now - f.at >= 0.5) then f.rc, f.rp = 0, 0 end
    f.n, f.from, f.at = f.n + 1, from, now
  end
end
fleet_save(f, now)
return fleet_reply(beyond, f, now)
`)

// presenceScript counts a store in, drops the stores not seen for ttl, and
// returns how many remain and how many of them counted in within the last
// lost.
//
// KEYS: the presence set. ARGV: the store's ID, ttl (ms), lost (ms).
var presenceScript = newScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[1], string.format('%d', now - tonumber(ARGV[3])), '+inf')}
`)
