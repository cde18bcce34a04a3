// Package redisguard keeps httpguard's limits in Redis, so that every
// process of a fleet shares them: twenty replicas with a "$50 a day" Budget
// spend $50 a day, not $1,000, and twenty with a Limiter at 10 requests per
// second send 10 a second, not 200.
//
// A BudgetStore is an httpguard.BudgetStore on a go-redis UniversalClient:
// a single node, Sentinel, or Cluster (all the keys of one budget share a
// hash tag, so they live in one slot), but not a Ring, which moves keys to
// another shard while theirs is down:
//
//	store, err := redisguard.NewBudgetStore(client, redisguard.BudgetStoreConfig{Name: "openai-daily"})
//	...
//	defer store.Close()
//	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{
//		Limit: 50 * httpguard.Dollar, Period: httpguard.Daily, Prices: prices, Store: store,
//	})
//
// Each reservation, settlement, renewal and read is one Lua script that
// Redis runs atomically, on exact integer nano-dollars. A reservation
// holds its money until it is settled or its lease ends (on the Redis
// server's clock): a process that dies gives its reservations back a
// lease later, and a live one renews the leases of its long streams.
// Lease time stands still while no process calls Redis about a window for
// longer than half its shortest lease (a live holder renews every third):
// after an outage, the leases that ran out while nobody could renew them
// still hold when another process calls first, until their processes hold
// them again; a dead process's reservations end once the fleet has called
// for the rest of their lease.
// Windows follow the Budgets' calendars, but a window opens only once it
// has started on the server's clock too: a process whose clock runs ahead
// spends in the window the others are still in, and a fleet whose clocks
// all run ahead of the server's, in the window the server's clock is
// still in, while the provider bills the next. (After a boundary the fleet
// crossed idle, the first reservation opens its window even if a little
// early, and the fleet spends one Limit across the two; but a reservation
// for a window that starts further ahead of the server's clock than its own
// length fails with ErrUnavailable: the fleet would follow it there, and
// stay until that window ended.) The other way round is not
// caught: a process whose clock runs behind goes on spending what an ended
// window has left until another process opens the next one (its
// reservations then follow there), while the provider bills the next:
// keep the fleet's clocks, and Redis's, in sync. A settlement is published
// on the budget's channel, so that requests waiting for room in other
// processes wake at once; they still poll as a floor, in case a notice is
// lost.
//
// A LimitStore is an httpguard.LimitStore on the same clients, for the
// Limiter (a Ring too: a limiter key it moves to another shard starts there
// with full buckets and no pause):
//
//	limits, err := redisguard.NewLimitStore(client, redisguard.LimitStoreConfig{Name: "openai-prod"})
//	...
//	defer limits.Close()
//	limiter, err := httpguard.NewLimiter(httpguard.LimitConfig{
//		RequestsPerSecond: 10, Burst: 5, TokensPerMinute: 200_000, Store: limits,
//	})
//
// Its buckets are github.com/go-redis/redis_rate's GCRA, on the Redis
// server's clock. The tokens a request was estimated at are corrected once
// its usage is known, by a script of the store's own on redis_rate's
// format (redis_rate cannot give tokens back): a credit gives back only
// what the bucket still owes of the request's tokens, whose end the
// script that took them told (httpguard.TurnLimitStore). A pause set by
// one process's 429 stops every process until it ends, and the key's adaptive
// request rate is the fleet's (httpguard.AdaptiveLimitStore): every
// process's 429s are counted in Redis and judged against all the fleet's
// requests, and a share beyond the tolerated one cuts the rate once per
// round for every process, from the rate the fleet's requests were
// accepted at. Turns are taken as soon as they are due within the
// Limiter's last round trip to Redis (httpguard.AheadLimitStore), and the
// request goes at its turn's time: over a network, an ask that reached
// Redis a moment early is not refused and asked again a round trip late,
// a turn lost. Take is a few calls,
// not one atomic step: a request taken when the tokens refuse is given
// back, so the store may admit a little less than the limits, never more.
//
// Both stores need Redis 5.0 or later: their scripts write after reading
// the server's clock, which an older Redis refuses. A store on one fails
// over at its first call, and its errors say so. A store loads its
// scripts into Redis (SCRIPT LOAD) at its first call, and again when Redis
// lost them (restarted, flushed, or a replica took over), once for all its
// callers; on a Cluster, or a Redis that refuses SCRIPT LOAD, a call sends
// a script Redis lost whole instead.
//
// # When Redis fails
//
// Every call ends within the store's Timeout, or as soon as its caller's
// context ends (cancelled or past its deadline), with the context's error;
// but for a BudgetStore's Settle, which records money the provider may
// bill: it runs up to the Timeout whatever the caller's context.
// A call its caller ended is not Redis's failure, but it has the store ask
// Redis a question of its own in the background, bounded by the Timeout
// alone (one at a time), and fail over when that gets no answer: so a Redis
// that stalls is found out within a Timeout even when every caller's
// deadline is shorter. A BudgetStore's reservation, renewal or Totals that
// runs out of Timeout while Redis answered its other calls within theirs
// meanwhile did not find Redis away: it waited for a connection of its
// client, all of them in use by a burst of callers. It fails alone, with
// ErrUnavailable (the Budget refuses that request), and the store stays on
// Redis. A settlement that waits so, and a reservation's release (due in
// case Redis ran it late), are sent in the background, again while they
// fail so, under one token, counted once. When a call fails otherwise,
// the store stops calling Redis and probes it every ProbeInterval until it
// answers again. Meanwhile it fails closed by default: reservations fail
// with ErrUnavailable, and the Budget refuses every request (no spend it
// cannot account for). With
// FailOpenShare it fails open instead, to a local store holding that share
// of the Limit per window. In both modes the charges it could not record
// (of attempts in flight, and of what its local share spent) are kept in
// memory and added to Redis when it is back, before any new reservation
// goes there; so are the reservations of its attempts still in flight,
// whose leases ran on while their renewals failed: they are held again,
// with a new lease. A charge counts once, however often it is sent: a
// settlement whose reply was lost (go-redis retrying a command, a Redis
// that was only slow) carries a token that Redis remembers for 15 minutes.
// Close tries the kept charges once more and gives up at the first failure,
// so it too ends within a Timeout. OnFailover and Logger hear of each
// switch.
//
// A LimitStore fails open by default instead: while Redis does not answer,
// each process paces its requests with a local httpguard.MemoryLimitStore
// holding its share of each limit (LimitStoreConfig.FailOpenShare; by
// default 1/N, N being the processes that used the store in the last 15
// seconds, which count themselves in Redis), so that the fleet stays near
// the limit; FailClosed makes the Limiter refuse instead. A pause it read
// from Redis before still holds in its share; the pauses it was told of
// meanwhile are set in Redis when it is back, and the debits of tokens it
// was told of (usage above a request's estimate, which the share is charged
// too) are taken from Redis's buckets then, unless the bucket would have
// refilled them by then: a request Redis took at its estimate before the
// outage is counted there at what it used. Redis is not given back the
// tokens the share took, when the credits of their answers come after it is
// back. Nor is the share given the credits of answers to requests Redis
// took alone, which end while Redis is away or while the store rejoins the
// fleet (below): the Limiter passes them with the turn's end
// (httpguard.TurnLimitStore), which tells the turns Redis took alone. A
// credit through Adjust, which is not told the turn, still refills the
// share, so that a caller of Adjust may send, once, up to the overestimates
// of its requests in flight when Redis went away beyond its share. While
// Redis is away the share adapts its request rate alone; back on Redis, the
// fleet's. A Take that runs out of Timeout while Redis answered the key's
// other Takes within theirs meanwhile did not find Redis away: it waited for a
// connection of its client, all of them in use by a burst of callers. It
// fails alone, with ErrUnavailable (the Limiter refuses that request), and
// the store stays on Redis: failing over, it would add its share's fresh
// burst to the one Redis had just admitted.
//
// The stores come back one after the other, each on its own probe (and
// go-redis waits up to a second before it dials again a server that
// refused it): a store back on Redis alone would take the whole rate
// there, and the full burst of a Redis that restarted empty, while the
// others still send on their shares. Three processes at 60 requests/s
// sent up to 74 in the second Redis came back, and three stores at 100/s
// coming back about 300 ms apart were admitted 66 in 400 ms. So a store back on
// Redis takes each request from its share too, until every store it
// counted before the outage has counted itself in since (it checks every
// ProbeInterval), or for three presence intervals (15 s) at most, after
// which a store not back no longer counts: meanwhile the fleet sends at
// most the sum of its shares, and Redis sees every request of the stores
// that are back, so that no window across the return admits more than
// rate·window + burst, but for the bursts saved meanwhile: the shares'
// (a burst in all, a request each at least), and Redis's, which the stores
// rejoining leave unused and the fleet spends once the last is back.
// Seeding Redis on return with what each share spent
// would not do: a store cannot tell what the others still send on their
// shares, and charging a whole outage's spend would stall the fleet for as
// long. A store cut off alone while the others keep Redis is not covered:
// they use the whole rate while it sends on its share, until it is back.
// Nor is a store that called Redis only once it was back (idle meanwhile,
// it never failed over): it takes the whole rate there while those still
// away send on their shares.
//
// A lease cannot tell a process that died from one that lives but cannot
// renew: a BudgetStore cut off from Redis alone (the others keep it), or a
// process paused (a long GC, SIGSTOP, a VM migrated), for longer than its
// Lease loses its holds to the others while the provider may still bill
// its attempts; and a hold comes back from an outage of Redis itself with
// as little as a sixth of its lease left, which the processes that never
// lost Redis may spend before its owner's probe holds it again (a store
// whose renewals failed holds them again on its first probe, every
// ProbeInterval, and go-redis may wait a second more before it dials). So
// set the Budgets' Lease above the longest partition or pause to be
// ridden out, and above 20 probe intervals: the default, a minute, is 60.
//
// Redis must keep what it is told: a server that restarts empty (no
// persistence), or is replaced by an empty one, forgets the money spent so
// far in the window, and one that restarts from an RDB snapshot alone
// (Redis's default persistence) forgets what was spent since the snapshot,
// minutes of it. A store that reserved in the window before notices, at
// its next reservation, when Redis lost the key naming the newest window
// (which records a name for each window's opening), or came back with an
// older window as the newest (a snapshot taken before the window opened),
// even when a process that never reserved there opened the window again
// first: the window is lost, as below, for the whole fleet. Until then the
// processes that never reserved there (or were restarted since: a store
// remembers only in memory) are admitted into the empty window, and when
// no store that reserved there is left, nobody notices; what was spent
// since a snapshot taken within the window goes unseen. Use AOF:
// appendfsync always loses nothing; everysec may lose the last second.
// Replication is asynchronous: a failover to a replica (Sentinel, Cluster)
// loses what the replica had not received yet. Nor may Redis evict: under
// any maxmemory-policy but noeviction, a Redis short of memory drops keys,
// and a volatile-* policy (the default of managed Redis) takes a window's
// keys first, as they expire. A window
// still open whose money is gone while the key naming the newest window
// (which never expires) is there was lost: the store does not reopen it
// empty, but fails for the rest of the window as if Redis were away
// (ErrUnavailable; the local share when it fails open) and logs an error.
// Under an allkeys-* policy that key may go too: then only a store that
// reserved in the window before notices (see above), at its next
// reservation, and the others are admitted into the empty window until
// then. Give the stores a Redis with maxmemory-policy noeviction: a
// BudgetStore with a Logger warns at its first reservation that reaches
// Redis when Redis may evict. So does a LimitStore at its first Take: a limiter key evicted
// is full again (a burst more for the fleet), and a pause evicted is
// forgotten (its key, expiring soonest, is the first volatile-ttl takes),
// unseen.
//
// # Keys
//
// With the default Prefix, the budget "openai-daily" uses
//
//	{httpguard:openai-daily}:newest               the newest window seen, and whether Redis lost it (never expires)
//	{httpguard:openai-daily}:win:<window>         settled and held money, and each hold
//	{httpguard:openai-daily}:lease:<window>       lease ends, by reservation ID
//	{httpguard:openai-daily}:done:<window>        the tokens of the last 15 minutes' settlements
//	{httpguard:openai-daily}:settled              the pub/sub channel of settlements
//
// A window's keys expire Retention after the window ends for the fleet:
// once the last of the processes' clocks has left it (a server whose clock
// runs ahead does not drop it sooner), and the server's clock too (the
// fleet stays in it until then), even when a settlement (a replay of what the local share spent) reached
// the window before any reservation; the lifetime window's never do. The
// limiter "openai-prod" keeps, per limiter key,
//
//	rate:{httpguard:openai-prod:<hash>}:requests  the requests bucket, as redis_rate keeps it
//	rate:{httpguard:openai-prod:<hash>}:tokens    the tokens bucket, likewise
//	{httpguard:openai-prod:<hash>}:pause          when the pause ends
//	{httpguard:openai-prod:<hash>}:credits        the tokens of the last minute's credits
//	{httpguard:openai-prod:<hash>}:adapt          the fleet's adaptive rate: its last decrease, the requests admitted and refused
//	{httpguard:openai-prod}:replicas              the stores sharing the name, by last call
//
// where <hash> is the first 96 bits of the limiter key's SHA-256: the key
// itself is not stored. Each key expires once it holds nothing a missing
// key would not mean. Nothing else is stored: no API key, prompt or
// answer.
package redisguard
