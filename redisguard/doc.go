// Package redisguard keeps httpguard's limits in Redis, so that every
// process of a fleet shares them: twenty replicas with a "$50 a day" Budget
// spend $50 a day, not $1,000.
//
// A BudgetStore is an httpguard.BudgetStore on any go-redis
// UniversalClient (a single node, Sentinel, or Cluster: all the keys of
// one budget share a hash tag, so they live in one slot):
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
// lease later, and a live one renews the leases of its long streams. A
// settlement is published on the budget's channel, so that requests
// waiting for room in other processes wake at once; they still poll as a
// floor, in case a notice is lost.
//
// # When Redis fails
//
// Every call ends within BudgetStoreConfig.Timeout. When one fails, the
// store stops calling Redis and probes it every ProbeInterval until it
// answers again. Meanwhile it fails closed by default: reservations fail
// with ErrUnavailable, and the Budget refuses every request (no spend it
// cannot account for). With FailOpenShare it fails open instead, to a local
// store holding that share of the Limit per window. In both modes the
// charges it could not record (of attempts in flight, and of what its
// local share spent) are kept in memory and added to Redis when it is
// back, before any new reservation goes there. OnFailover and Logger hear
// of each switch.
//
// Redis must keep what it is told: a server that restarts empty (no AOF
// or RDB persistence) forgets the money spent so far in the window.
// appendfsync always loses nothing; everysec may lose the last second.
//
// # Keys
//
// With the default Prefix, the budget "openai-daily" uses
//
//	{httpguard:openai-daily}:newest               the newest window seen (never expires)
//	{httpguard:openai-daily}:win:<window>         settled and held money, and each hold
//	{httpguard:openai-daily}:lease:<window>       lease ends, by reservation ID
//	{httpguard:openai-daily}:settled              the pub/sub channel of settlements
//
// A window's keys expire Retention after the window ends; the lifetime
// window's never do. Nothing else is stored: no key, prompt or answer.
package redisguard
