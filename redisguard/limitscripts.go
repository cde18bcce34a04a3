package redisguard

import "github.com/redis/go-redis/v9"

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

// adjustScript takes n more tokens from a bucket (n > 0, a debit that may
// leave it in debt by one burst at most, and never gives back from a
// deeper debt) or gives -n back (n < 0, a credit that never fills it past
// its burst). The bucket is GCRA's theoretical arrival time (TAT), as
// redis_rate's allowN keeps it: each token moves it on by the emission
// interval, the bucket is full when it is not after now, and the key
// expires, as redis_rate sets it, once the bucket is full again; a full
// bucket is no key.
//
// A credit counts once: its token, unique to one call, is kept in the
// credits set for a horizon, and the same credit run again within it (a
// retry of a script whose reply was lost) gives nothing more back. A debit
// run twice takes twice: the store then admits less, never more.
//
// KEYS: the bucket, with redis_rate's "rate:"; the credits. ARGV: the
// emission interval (seconds, as redis_rate computes it: period / rate),
// burst, n, the credit's token ("" for a debit), the horizon (ms).
var adjustScript = redis.NewScript(limitLib + `
local now = clock()
local interval = tonumber(ARGV[1])
local burst_offset = interval * tonumber(ARGV[2])
local n = tonumber(ARGV[3])
if n < 0 then
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
var pauseScript = redis.NewScript(limitLib + `
local now = clock()
local d = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= now + d then return 0 end
redis.call('SET', KEYS[1], string.format('%.6f', now + d), 'PX', math.ceil(d * 1000))
return 0
`)

// pausedScript returns how long a key's pause still lasts, in
// microseconds (0: none). It reads the end rather than the key's TTL, so
// that a server whose expiry lags (miniredis) does not lengthen it.
//
// KEYS: the pause.
var pausedScript = redis.NewScript(limitLib + `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local left = tonumber(v) - clock()
if left <= 0 then return 0 end
return math.ceil(left * 1000000)
`)

// presenceScript counts a store in, drops the stores not seen for ttl, and
// returns how many remain.
//
// KEYS: the presence set. ARGV: the store's ID, ttl (ms).
var presenceScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
`)
