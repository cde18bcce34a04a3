package redisguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
)

// DefaultRetention is how long a window's keys outlive the window's end,
// when BudgetStoreConfig.Retention is zero.
const DefaultRetention = time.Hour

// BudgetStoreConfig configures a BudgetStore; NewBudgetStore copies it. Only
// Name is required; every other field's zero value is a documented default.
type BudgetStoreConfig struct {
	// Name names the cap: the Budgets of every process that uses a store
	// of this Name and Prefix on one Redis share one Limit. Required. Give
	// each budget configuration its own Name: windows are ordered by their
	// start, so a Daily and an hourly budget under one Name would mix.
	Name string
	// Prefix begins every key, as in "{httpguard:Name}:newest". Empty means
	// "httpguard". It may not hold ':', '{' or '}', nor Name '{' or '}':
	// Prefix "a:b" and Name "c" would share the keys of Prefix "a" and
	// Name "b:c".
	Prefix string

	// Timeout bounds each Redis call, whatever the client's own timeouts
	// (a client without ContextTimeoutEnabled is left to finish in the
	// background), the wait for one of the client's connections included:
	// give the client a PoolSize for the requests a process sends at once.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// Retention is how long a window's keys outlive the window's end, for
	// late settlements and for requests whose clocks lag. Zero means
	// DefaultRetention. The window that never ends is never dropped.
	Retention time.Duration

	// FailOpenShare, when above zero, makes the store fail open: while
	// Redis does not answer, each process admits money from a local store
	// capped at this fraction of the Limit per window, and adds what it
	// spent to Redis when Redis is back, before using it again. With N
	// processes the fleet may then spend up to N × FailOpenShare × Limit
	// beyond the cap. Meanwhile Reserve counts the rest of the Limit as
	// settled, so that a Budget refuses at once, without waiting, a
	// request the share has no room left for. Zero, the default, fails
	// closed: while Redis does not answer, Reserve and Totals fail with
	// ErrUnavailable, and the Budget refuses every request. In [0, 1].
	FailOpenShare float64
	// ProbeInterval is how often a store that lost Redis checks whether it
	// is back. Zero means DefaultProbeInterval. Keep the Budgets' Lease
	// above 20 probe intervals (the default Lease, a minute, is 60): a
	// hold comes back from a Redis outage with as little as a sixth of its
	// lease left, and until its owner's probe holds it again the processes
	// that never lost Redis may spend it (see the package documentation).
	ProbeInterval time.Duration

	// OnFailover, when set, is told each time the store loses Redis and
	// each time it has Redis back. It runs on the goroutine that noticed,
	// so it should return quickly.
	OnFailover func(FailoverEvent)
	// Logger, when set, receives a warning when the store loses Redis and
	// a record when it has it back, and one at the first call that reaches
	// Redis when Redis may evict the store's keys. Nil means silent.
	Logger *slog.Logger
}

func (c *BudgetStoreConfig) validate() error {
	switch {
	case c.Name == "":
		return errors.New(`Name is required: it names the cap the fleet shares, such as "openai-daily"`)
	case strings.ContainsAny(c.Prefix, ":{}"):
		return fmt.Errorf("Prefix must not hold ':', '{' or '}' (keys begin {Prefix:Name}: a Prefix with a colon would share keys with another Prefix and Name), got %q", c.Prefix)
	case strings.ContainsAny(c.Name, "{}"):
		return fmt.Errorf("Name must not hold '{' or '}' (keys begin with the Redis hash tag {Prefix:Name}), got %q", c.Name)
	case c.Timeout < 0:
		return fmt.Errorf("Timeout must be >= 0, got %v", c.Timeout)
	case c.Retention < 0:
		return fmt.Errorf("Retention must be >= 0, got %v", c.Retention)
	case !(c.FailOpenShare >= 0 && c.FailOpenShare <= 1):
		return fmt.Errorf("FailOpenShare must be in [0, 1], got %v", c.FailOpenShare)
	case c.ProbeInterval < 0:
		return fmt.Errorf("ProbeInterval must be >= 0, got %v", c.ProbeInterval)
	}
	return nil
}

func (c BudgetStoreConfig) withDefaults() BudgetStoreConfig {
	if c.Prefix == "" {
		c.Prefix = "httpguard"
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	return c
}

// BudgetStore is an httpguard.BudgetStore in Redis, so that the Budgets of
// many processes share one cap: set it as BudgetConfig.Store. Each
// operation is one Lua script that Redis runs atomically, on exact integer
// money; reservations hold their money until settled or until their lease
// ends on the Redis server's clock, so a process that dies gives its money
// back. It is also an httpguard.BudgetWatcher: a settlement in any process
// wakes the requests waiting for room in every other.
//
// When Redis does not answer within Timeout, the store fails closed (see
// ErrUnavailable) or, with FailOpenShare, open; it probes Redis and goes
// back to it by itself, and keeps the charges it could not record to add
// them first.
//
// Make one with NewBudgetStore; the zero value is not usable. Close it when
// done. A BudgetStore is safe for concurrent use by multiple goroutines.
type BudgetStore struct {
	cfg        BudgetStoreConfig
	now        func() time.Time // this process's clock (tests replace it)
	keys       keyspace
	call       caller
	link       link
	watch      watcher
	local      *httpguard.MemoryBudgetStore // the local share; nil: fail closed
	retention  string                       // cfg.Retention in ms, for the scripts
	channel    string
	lastKeys   atomic.Pointer[windowKeys] // the keys of the window last used
	lostLogged atomic.Pointer[string]     // the window last logged as lost
	evict      evictionCheck              // whether Redis's eviction policy was checked (checkEviction)
	// heard is when Redis last answered one of the store's calls that
	// fail alone when they wait for the client past the Timeout (see
	// caller.alone): reservations, renewals, totals and releases. Every
	// key of the budget is on one node.
	heard atomic.Int64

	mu      sync.Mutex // guards pending, unended, localIDs, holds, ends and born
	pending []charge   // charges Redis has not recorded yet
	// unended are the calls that failed while they may still reach Redis
	// (a reservation whose release is kept, a hold again): the probe goes
	// back to Redis only once they have ended (see awaitEnd).
	unended  []unendedCall
	localIDs map[uint64]struct{} // reservations held in local
	// holds are the reservations with a lease this store holds in Redis,
	// so that a Redis that was away while their leases ran (renewals
	// failing) gets them back before the store uses it again: the
	// attempts behind them are alive, and the provider may bill them.
	holds map[uint64]heldHere
	// born is what Redis named the opening of window bornWindow, the
	// window this store last reserved in: a reservation in that window
	// under another name finds that Redis lost the window's money (see
	// reserveScript).
	born, bornWindow string
	// ends are the ends of the windows last reserved in (see charge.end),
	// so that a settlement that reaches Redis before any reservation in
	// its window (a replay of the local share's spend) gives the window
	// its true lifetime, not a guess.
	ends [maxWindowEnds]windowEnd

	releasing sync.WaitGroup // releases of reservations whose reply was lost (releaseLost), charges sent again (send)
}

var (
	_ httpguard.BudgetStore   = (*BudgetStore)(nil)
	_ httpguard.BudgetWatcher = (*BudgetStore)(nil)
)

// windowKeys are a window's keys as the scripts take them: newest, win,
// lease, done (Renew and Totals take win and lease).
type windowKeys struct {
	window string
	keys   []string
}

// keysOf returns window's keys, made once for the window most calls use.
func (s *BudgetStore) keysOf(window string) []string {
	if k := s.lastKeys.Load(); k != nil && k.window == window {
		return k.keys
	}
	k := &windowKeys{window, []string{s.keys.newest(), s.keys.window(window), s.keys.leases(window), s.keys.done(window)}}
	s.lastKeys.Store(k)
	return k.keys
}

// heldHere is a reservation this store holds in Redis, as reholdScript
// takes it.
type heldHere struct {
	window, amount, lease string // lease in ms
}

// charge is money to add to a window's settled total, and the hold it ends
// ("" for none). Its token makes it count once however often it is sent
// (a reply lost, then a replay): made when it is first sent ("" until
// then, while charges of the local share kept for later add up).
type charge struct {
	window, id string
	token      string
	end        string // the window's end as reserveScript takes it ("0": never; "": unknown)
	amount     httpguard.Money
}

// NewBudgetStore returns a store on client (a single node, Sentinel or
// Cluster client), or an error saying which field of c is invalid. It does
// not contact Redis before its first call. It refuses a Ring: a Ring moves
// a key to another shard while the key's shard is down, where the money
// spent would start again from zero.
func NewBudgetStore(client redis.UniversalClient, c BudgetStoreConfig) (*BudgetStore, error) {
	if client == nil {
		return nil, errors.New("redisguard: budget store: client is nil")
	}
	if _, ok := client.(*redis.Ring); ok {
		return nil, errors.New("redisguard: budget store: a Ring moves a key to another shard while its shard is down, " +
			"where the money spent would start again from zero: use a single node, Sentinel or a Cluster")
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("redisguard: budget store: %w", err)
	}
	c = c.withDefaults()
	s := &BudgetStore{
		cfg:       c,
		now:       time.Now,
		keys:      newKeyspace(c.Prefix, c.Name),
		call:      newCaller(client, c.Timeout, reserveScript, settleScript, renewScript, reholdScript, totalsScript),
		retention: strconv.FormatInt(c.Retention.Milliseconds(), 10),
		holds:     make(map[uint64]heldHere),
	}
	s.channel = s.keys.settledChannel()
	s.watch = watcher{client: client, channel: s.channel, timeout: c.Timeout}
	s.link = link{
		what:     fmt.Sprintf("budget %q", c.Name),
		failOpen: c.FailOpenShare > 0,
		interval: c.ProbeInterval,
		onEvent:  c.OnFailover,
		logger:   c.Logger,
		now:      time.Now,
		recover:  s.recover,
		check:    s.check,
	}
	s.link.init()
	if c.FailOpenShare > 0 {
		s.local = httpguard.NewMemoryBudgetStore()
		s.localIDs = make(map[uint64]struct{})
	}
	return s, nil
}

// Reserve implements httpguard.BudgetStore.
func (s *BudgetStore) Reserve(ctx context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	var res httpguard.ReserveResult
	var lost error  // Redis is there, but lost the window's money
	var moved error // Redis is there, but its windows moved too often for this reservation
	if done, err := s.link.onRedis(ctx, "", func() (err error) {
		res, err = s.reserveShared(ctx, r, limit)
		switch {
		case errors.As(err, new(lostError)):
			lost, err = err, nil
		case errors.As(err, new(movedError)):
			moved, err = err, nil
		}
		return err
	}); done && lost == nil {
		if moved != nil {
			return httpguard.ReserveResult{}, moved
		}
		return res, err
	}
	if s.local == nil {
		if lost != nil {
			return httpguard.ReserveResult{}, lost
		}
		return httpguard.ReserveResult{}, s.link.unavailable("refusing what cannot be accounted for")
	}
	share := httpguard.Money(math.Floor(float64(limit) * s.cfg.FailOpenShare))
	res, err := s.local.Reserve(ctx, r, share)
	// The Budget weighs the result against the whole limit: the rest of
	// it is out of the share's reach, as if settled, so that a share spent
	// refuses at once (nothing in flight can make room) and a refusal says
	// what the share has left.
	res.Settled += min(max(limit, 0)-share, maxSettled) // no overflow: both at most maxSettled
	if err == nil && res.OK {
		s.mu.Lock()
		s.localIDs[r.ID] = struct{}{}
		s.mu.Unlock()
		if res.Window == r.Window {
			s.noteEnd(r.Window, windowEndArg(r.End))
		}
	}
	return res, err
}

// maxWindowEnds is how many window ends a store remembers: a few windows
// are live at once (the newest, and the one before while its last
// attempts settle).
const maxWindowEnds = 4

type windowEnd struct{ window, end string }

// nowArg is this process's clock as the scripts take it (Unix ms), so that
// they can move a window's end, read on this process's calendar, onto the
// server's clock.
func (s *BudgetStore) nowArg() string { return strconv.FormatInt(s.now().UnixMilli(), 10) }

// windowEndArg is a window's end as the scripts take it: Unix ms, or "0"
// for a window that never ends.
func windowEndArg(end time.Time) string {
	if end.IsZero() {
		return "0"
	}
	return strconv.FormatInt(end.UnixMilli(), 10)
}

// noteEnd remembers that window ends at end.
func (s *BudgetStore) noteEnd(window, end string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range s.ends {
		if e.window == window {
			s.ends[i].end = end
			return
		}
	}
	copy(s.ends[1:], s.ends[:len(s.ends)-1])
	s.ends[0] = windowEnd{window, end}
}

// endOf returns the end of window noted by noteEnd, or "" when unknown.
func (s *BudgetStore) endOf(window string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.ends {
		if e.window == window {
			return e.end
		}
	}
	return ""
}

// leaseArg is a lease (> 0) as the scripts take it: whole milliseconds,
// rounded up, without overflow for the longest Duration.
func leaseArg(d time.Duration) string {
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return strconv.FormatInt(int64(ms), 10)
}

// maxMoves bounds how often one reservation follows the newest window to a
// newer one: each move is a window boundary passing while the call was on
// its way, which happens only with windows not much longer than a round
// trip to Redis.
const maxMoves = 100

// reserveShared reserves r in Redis. A reservation that waited for the
// client's connections past the Timeout while Redis answered others fails
// alone (a queuedError), and the store stays on Redis: a burst of callers
// larger than the client's pool is no outage.
func (s *BudgetStore) reserveShared(ctx context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	call := s.call.alone(&s.heard)
	if err := s.checkEviction(ctx, call); err != nil {
		return httpguard.ReserveResult{}, err // nothing reserved
	}
	key := r.Window
	start := []any{strconv.FormatInt(r.Start.Unix(), 10), strconv.Itoa(r.Start.Nanosecond()), windowEndArg(r.End)}
	lease := "0"
	if r.Lease > 0 {
		lease = leaseArg(r.Lease)
	}
	id, amount, lim := strconv.FormatUint(r.ID, 10), strconv.FormatInt(int64(r.Amount), 10), strconv.FormatInt(int64(limit), 10)
	for range maxMoves {
		ended := make(chan struct{})
		s.mu.Lock()
		born, bornWindow := s.born, s.bornWindow
		s.mu.Unlock()
		v, err := call.scriptTracked(ctx, ended, reserveScript, s.keysOf(key), key, start[0], start[1], start[2], id, amount, lease, lim,
			s.retention, s.channel, s.nowArg(), born, bornWindow, strconv.FormatUint(rand.Uint64(), 10))
		if err != nil {
			s.releaseLost(ctx, key, id, err, ended)
			return httpguard.ReserveResult{}, err
		}
		rep, ok := v.([]any)
		if ok && len(rep) > 0 {
			born, ok = rep[len(rep)-1].(string)
			rep = rep[:len(rep)-1]
		}
		if ok && len(rep) == 3 && rep[0] == "lost" {
			s.sawBorn(born, key)
			cause, _ := rep[2].(string)
			return httpguard.ReserveResult{}, s.lost(key, cause)
		}
		if ok && len(rep) == 2 && rep[0] == "ahead" {
			return httpguard.ReserveResult{}, movedError{fmt.Errorf("redisguard: %s: window %q starts further ahead of the Redis server's clock "+
				"than its own length (this process's clock runs ahead of Redis's); refusing this request rather than open that window "+
				"for the fleet: %w", s.link.what, key, ErrUnavailable)}
		}
		if ok && len(rep) == 5 && rep[0] == "moved" {
			// A newer window: reserve there, with its start and end.
			key, _ = rep[1].(string)
			start = rep[2:5]
			continue
		}
		res, err := parseReserved(rep)
		if err == nil {
			s.sawBorn(born, key)
			end, _ := start[2].(string)
			s.noteEnd(key, end)
			if res.OK && lease != "0" {
				s.mu.Lock()
				s.holds[r.ID] = heldHere{key, amount, lease}
				s.mu.Unlock()
			}
		}
		return res, err
	}
	return httpguard.ReserveResult{}, movedError{fmt.Errorf("redisguard: %s: the newest window moved %d times during one reservation "+
		"(windows must be longer than a round trip to Redis); refusing this request: %w", s.link.what, maxMoves, ErrUnavailable)}
}

// sawBorn notes that Redis answered a reservation in window under born.
func (s *BudgetStore) sawBorn(born, window string) {
	s.mu.Lock()
	s.born, s.bornWindow = born, window
	s.mu.Unlock()
}

// movedError is the error of a reservation that followed the newest window
// maxMoves times, or whose window starts further ahead of the Redis
// server's clock than its own length. Redis answered every call: the store
// stays on Redis, and only this reservation fails (in both modes: a local
// share is for a Redis that is away, or lost the window).
type movedError struct{ error }

func (e movedError) Unwrap() error { return e.error }

// checkEviction warns the Logger, once, when Redis may evict the store's
// keys (see evictionCheck). A volatile-* policy takes the windows' keys,
// which the scripts notice (see lost); an allkeys-* policy may also take
// the key naming the newest window, which only a store that reserved in
// the window before notices.
func (s *BudgetStore) checkEviction(ctx context.Context, call caller) error {
	return s.evict.check(ctx, call, s.cfg.Logger, s.link.what,
		"Redis may evict the budget's keys when short of memory, forgetting the money spent")
}

// refused reports whether err is Redis refusing a command (unknown, renamed
// or not permitted), as opposed to Redis not answering or not ready yet
// (LOADING, BUSY, a failover's READONLY).
func refused(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.HasPrefix(msg, "ERR ") || strings.HasPrefix(msg, "NOPERM ")
}

// lostError is the error of a reservation in a window whose money Redis
// lost before the window ended: its keys were evicted (under any
// maxmemory-policy but noeviction) or deleted. Admitting more there would
// spend the Limit again, so the store fails closed in that window, or
// admits from its local share when it fails open.
type lostError struct{ error }

func (e lostError) Unwrap() error { return e.error }

// lost returns the lostError of window, and logs it once per window.
// cause is the script's: "emptied" when the window was opened again on
// data that did not have it (Redis lost even the key naming the newest
// window: it restarted empty, or from an older snapshot; a replica without
// it took over; it was flushed, or evicted under an allkeys-* policy; or it
// went back to an older window, which a process then moved on), "older"
// when that key went back to an older window (an older snapshot, a replica
// behind), "evicted" otherwise.
func (s *BudgetStore) lost(window, cause string) error {
	doing := "refusing until the next window (fail closed)"
	if s.local != nil {
		doing = "admitting from its local share until the next window (fail open)"
	}
	why := "its keys were evicted, as Redis does under a maxmemory-policy other than noeviction, or deleted"
	advice := "set maxmemory-policy noeviction"
	switch cause {
	case "older":
		why = "Redis went back to older data, from before the window opened: it restarted from an older snapshot " +
			"(RDB, or an AOF not synced), or a replica behind took over"
		advice = "give Redis persistence (appendonly yes, appendfsync always)"
	case "emptied":
		why = "Redis lost the key naming the newest window, or went back to an older one that a process then moved on: " +
			"it restarted without it (no persistence, or an older snapshot), a replica without it or behind took over, " +
			"it was flushed, or evicted under an allkeys-* maxmemory-policy"
		advice = "give Redis persistence (appendonly yes) and maxmemory-policy noeviction"
	}
	err := fmt.Errorf("redisguard: %s: Redis lost the money spent in window %q before the window ended "+
		"(%s); %s; to keep it from happening again, %s; "+
		"to accept the loss, delete the field \"lost\" of %s: %w", s.link.what, window, why, doing, advice, s.keys.newest(), ErrUnavailable)
	if prev := s.lostLogged.Swap(&window); s.cfg.Logger != nil && (prev == nil || *prev != window) {
		s.cfg.Logger.Error("redisguard: Redis lost a window's spend: "+advice, "store", s.link.what, "window", window, "err", err)
	}
	return lostError{err}
}

// releaseLost releases reservation id in window after its script failed
// without a reply: Redis may have run it and hold the money for an attempt
// that is refused, so never sent nor settled (and whose lease nobody
// renews, or that has none). When ctx ended, or the call waited for the
// client's connections while Redis answered others (a queuedError), Redis
// is there: the release goes in the background (see release), so that the
// caller does not wait for it (Close does), once the reservation's call
// has ended (closed ended), a Timeout at most: sent at once, on another
// connection, it could reach Redis before a reservation still on its way,
// release nothing, and leave that reservation holding its money for its
// lease. Otherwise Redis failed (err): the release is kept,
// and the store fails over here, so that the probe sends it before the
// store uses Redis again (the caller's deadline passing meanwhile changes
// nothing), once the reservation's call has ended, a Timeout at most: a
// client that does not follow its contexts may still be sending it, and a
// probe sooner than that would release nothing.
func (s *BudgetStore) releaseLost(ctx context.Context, window, id string, err error, called <-chan struct{}) {
	c := charge{window: window, id: id, end: s.endOf(window)}
	if ended(ctx) || errors.As(err, new(queuedError)) {
		s.releasing.Add(1)
		go func() {
			defer s.releasing.Done()
			t := time.NewTimer(s.cfg.Timeout)
			select {
			case <-called:
			case <-t.C: // a client that does not follow its contexts: its call may run for seconds more
			}
			t.Stop()
			s.release(ctx, c)
		}()
		return
	}
	s.mu.Lock()
	s.keep(c)
	s.mu.Unlock()
	s.awaitEnd(called) // before fail: the probe that follows waits for it
	s.link.fail(err)   // after keep: the probe that follows sends c
}

// release adds c, the release of a reservation whose call failed while
// Redis was there, to Redis, or keeps it for when Redis is back (see
// send).
func (s *BudgetStore) release(ctx context.Context, c charge) {
	c.token = newToken()
	s.send(context.WithoutCancel(ctx), c, sendTries)
}

// unendedCall is a call that failed, and that may still reach Redis until
// called is closed or until passes.
type unendedCall struct {
	called <-chan struct{}
	until  time.Time
}

// awaitEnd keeps the probe from going back to Redis until called is
// closed, a Timeout at most: a call that failed without a reply on a
// client that does not follow its contexts may still be on its way to
// Redis, where it would run after what the probe sends.
func (s *BudgetStore) awaitEnd(called <-chan struct{}) {
	select {
	case <-called:
		return
	default:
	}
	s.mu.Lock()
	s.unended = append(s.unended, unendedCall{called, time.Now().Add(s.cfg.Timeout)})
	s.mu.Unlock()
}

// callsEnded reports whether every call in unended has ended, and forgets
// those that have.
func (s *BudgetStore) callsEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.unended = slices.DeleteFunc(s.unended, func(c unendedCall) bool {
		select {
		case <-c.called:
			return true
		default:
			return !now.Before(c.until)
		}
	})
	return len(s.unended) == 0
}

func parseReserved(rep []any) (httpguard.ReserveResult, error) {
	var res httpguard.ReserveResult
	if len(rep) != 5 { // born taken off
		return res, fmt.Errorf("unexpected reply to a reservation: %v", rep)
	}
	status, _ := rep[0].(string)
	res.OK = status == "ok"
	res.Window, _ = rep[1].(string)
	settled, err1 := money(rep[2])
	held, err2 := money(rep[3])
	free, ok := rep[4].(int64)
	if err := errors.Join(err1, err2); err != nil || !ok || res.Window == "" {
		return res, fmt.Errorf("unexpected reply to a reservation: %v", rep)
	}
	res.Settled, res.Held = settled, held
	if !res.OK && free >= 0 {
		res.FreeIn = time.Duration(free) * time.Millisecond
	}
	return res, nil
}

// money reads an amount a script returned as a decimal string.
func money(v any) (httpguard.Money, error) {
	s, _ := v.(string)
	n, err := strconv.ParseInt(s, 10, 64)
	return httpguard.Money(n), err
}

// Settle implements httpguard.BudgetStore. A charge Redis cannot take now
// is kept and added when Redis is back; the error then says so.
func (s *BudgetStore) Settle(ctx context.Context, window string, id uint64, actual httpguard.Money) (httpguard.Money, error) {
	actual = min(max(actual, 0), maxSettled)
	s.mu.Lock()
	delete(s.holds, id)
	s.mu.Unlock()
	if s.takeLocal(id) {
		settled, err := s.local.Settle(ctx, window, id, actual)
		// What the local share spent counts in Redis too: now, or when
		// Redis is back. The caller hears only of the local total.
		s.record(ctx, charge{window: window, end: s.endOf(window), amount: actual})
		return settled, err
	}
	return s.record(ctx, charge{window: window, id: strconv.FormatUint(id, 10), end: s.endOf(window), amount: actual})
}

// takeLocal reports whether reservation id is held by the local share, and
// forgets it.
func (s *BudgetStore) takeLocal(id uint64) bool {
	if s.local == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.localIDs[id]
	delete(s.localIDs, id)
	return ok
}

// record adds c to Redis, or keeps it for when Redis is back. A charge is
// money the provider may bill: the caller's context ending does not drop
// it. A charge that waited for the client's connections past the Timeout
// while Redis answered others (a queuedError) is sent again in the
// background (see send), and the store stays on Redis: meanwhile Redis
// still holds the reservation's money, all of it unless the attempt cost
// more, until its lease ends, minutes later than the tries.
func (s *BudgetStore) record(ctx context.Context, c charge) (httpguard.Money, error) {
	s.mu.Lock()
	down := s.link.isDown()
	if down {
		s.keep(c)
	}
	s.mu.Unlock()
	if !down {
		c.token = newToken()
		ctx = context.WithoutCancel(ctx)
		settled, err := s.settleShared(ctx, s.call.alone(&s.heard), c)
		if err == nil {
			return settled, nil
		}
		if errors.As(err, new(queuedError)) {
			s.releasing.Add(1)
			go func() {
				defer s.releasing.Done()
				s.send(ctx, c, sendTries-1)
			}()
			return 0, s.link.wrap(fmt.Errorf("sending the charge of %v again: %w", c.amount, err))
		}
		s.mu.Lock()
		s.keep(c)
		s.mu.Unlock()
		s.link.fail(err) // after keep: the probe that follows replays c
	}
	return 0, s.link.unavailable(fmt.Sprintf("keeping the charge of %v to add when it is back", c.amount))
}

// sendTries bounds how often a charge is sent while it waits for the
// client's connections past the Timeout, Redis answering others: a queue
// that lasts that many Timeouts is no burst.
const sendTries = 10

// send adds c, a charge with its token, to Redis, on at most tries calls:
// it is sent again, under the same token (Redis may have recorded a call
// that answered late), while its call fails only by waiting for the
// client behind a burst of callers (a queuedError). When Redis fails, or
// is lost meanwhile, or the tries run out, c is kept for when Redis is
// back, and the store fails over.
func (s *BudgetStore) send(ctx context.Context, c charge, tries int) {
	call := s.call.alone(&s.heard)
	var err error
	for range tries {
		s.mu.Lock()
		if s.link.isDown() {
			s.keep(c)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if _, err = s.settleShared(ctx, call, c); !errors.As(err, new(queuedError)) {
			break
		}
	}
	if err != nil {
		s.mu.Lock()
		s.keep(c)
		s.mu.Unlock()
		s.link.fail(err) // after keep: the probe that follows replays c
	}
}

// keep adds c to the charges to replay; s.mu is held. The local share's
// charges never sent add up per window, so that a long outage keeps a few
// of them; one that was sent keeps its token, as Redis may have recorded it.
func (s *BudgetStore) keep(c charge) {
	if c.id == "" && c.token == "" {
		for i, p := range s.pending {
			if p.id == "" && p.token == "" && p.window == c.window {
				s.pending[i].amount = min(p.amount+c.amount, maxSettled)
				return
			}
		}
	}
	s.pending = append(s.pending, c)
}

// doneHorizon is how long Redis remembers a settlement's token, so that the
// same settlement run again within it (go-redis retrying a command whose
// reply it lost; a charge replayed after a Redis that was only slow) is
// counted once. A replay after a longer outage is one whose first try
// never ran.
const doneHorizon = 15 * time.Minute

var doneHorizonMs = strconv.FormatInt(doneHorizon.Milliseconds(), 10)

// newToken returns a settlement's token, unique in the fleet.
func newToken() string {
	return strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

// settleShared adds c to Redis, on call.
func (s *BudgetStore) settleShared(ctx context.Context, call caller, c charge) (httpguard.Money, error) {
	v, err := call.script(ctx, settleScript, s.keysOf(c.window), c.window, c.id, strconv.FormatInt(int64(c.amount), 10), s.retention, s.channel, c.end,
		doneHorizonMs, c.token, s.nowArg())
	if err != nil {
		return 0, err
	}
	settled, err := money(v)
	if err != nil {
		return 0, fmt.Errorf("unexpected reply to a settlement: %v", v)
	}
	return settled, nil
}

// Renew implements httpguard.BudgetStore.
func (s *BudgetStore) Renew(ctx context.Context, window string, ids []uint64, lease time.Duration) error {
	if lease <= 0 || len(ids) == 0 {
		return nil
	}
	ids, err := s.renewLocal(ctx, window, ids, lease)
	if len(ids) == 0 || err != nil {
		return err
	}
	if done, err := s.link.onRedis(ctx, "", func() error { return s.renewShared(ctx, window, ids, lease) }); done {
		return err
	}
	return s.link.unavailable("not renewing leases")
}

// renewShared renews ids' leases in Redis. A renewal that waited for the
// client's connections past the Timeout while Redis answered others fails
// alone (a queuedError): the leases run on from the last renewal, and the
// Budget renews them again a third of a lease later.
func (s *BudgetStore) renewShared(ctx context.Context, window string, ids []uint64, lease time.Duration) error {
	args := make([]any, 0, 3+len(ids))
	args = append(args, leaseArg(lease), s.channel, window)
	for _, id := range ids {
		args = append(args, strconv.FormatUint(id, 10))
	}
	_, err := s.call.alone(&s.heard).script(ctx, renewScript, s.keysOf(window)[1:3], args...)
	return err
}

// renewLocal renews the leases the local share holds among ids, and returns
// the others.
func (s *BudgetStore) renewLocal(ctx context.Context, window string, ids []uint64, lease time.Duration) ([]uint64, error) {
	if s.local == nil {
		return ids, nil
	}
	var local, shared []uint64
	s.mu.Lock()
	for _, id := range ids {
		if _, ok := s.localIDs[id]; ok {
			local = append(local, id)
		} else {
			shared = append(shared, id)
		}
	}
	s.mu.Unlock()
	if len(local) == 0 {
		return ids, nil
	}
	return shared, s.local.Renew(ctx, window, local, lease)
}

// Totals implements httpguard.BudgetStore. While a store failing open has
// no Redis, it returns its local share's totals. A call that waited for
// the client's connections past the Timeout while Redis answered others
// fails alone, as a reservation does.
func (s *BudgetStore) Totals(ctx context.Context, window string) (settled, held httpguard.Money, err error) {
	if !s.link.isDown() {
		v, err := s.call.alone(&s.heard).script(ctx, totalsScript, s.keysOf(window)[1:3], s.channel, window)
		if err == nil {
			rep, _ := v.([]any)
			if len(rep) != 2 {
				return 0, 0, s.link.wrap(fmt.Errorf("unexpected reply to totals: %v", v))
			}
			settled, err1 := money(rep[0])
			held, err2 := money(rep[1])
			if errors.Join(err1, err2) != nil {
				return 0, 0, s.link.wrap(fmt.Errorf("unexpected reply to totals: %v", v))
			}
			return settled, held, nil
		}
		if ended(ctx) {
			if cutShort(err) {
				s.link.suspect("")
				err = callerEnd(ctx)
			}
			return 0, 0, s.link.wrap(err)
		}
		if errors.As(err, new(queuedError)) {
			return 0, 0, s.link.wrap(err) // Redis answers: this call waited for the client
		}
		s.link.fail(err)
	}
	if s.local != nil {
		return s.local.Totals(ctx, window)
	}
	return 0, 0, s.link.unavailable("refusing what cannot be accounted for")
}

// Watch implements httpguard.BudgetWatcher: the channel receives when any
// process releases money in window. The store's first Watch subscribes to
// the budget's channel; the subscription is shared by every later Watch
// and lasts until Close.
func (s *BudgetStore) Watch(ctx context.Context, window string) <-chan struct{} {
	return s.watch.watch(ctx, window)
}

// check asks Redis whether the budget's newest window exists: an answer
// says that Redis answers (see link.suspect). Every key of the budget is on
// that key's node: key is not needed.
func (s *BudgetStore) check(ctx context.Context, _ string) error {
	_, err := s.call.alone(&s.heard).do(ctx, func(ctx context.Context) (any, error) {
		return s.call.client.Exists(ctx, s.keys.newest()).Result()
	})
	return err
}

// recover is the link's probe: when Redis answers, it replays the charges
// kept meanwhile and then goes back to Redis.
func (s *BudgetStore) recover(ctx context.Context) (replayed httpguard.Money, outage time.Duration, ok bool) {
	if !s.callsEnded() {
		return 0, 0, false // a call that failed may still reach Redis (see awaitEnd)
	}
	if err := s.check(ctx, ""); err != nil {
		s.link.fail(err)
		return 0, 0, false
	}
	if err := s.call.reload(ctx); err != nil {
		s.link.fail(err)
		return 0, 0, false
	}
	reheld := false
	for {
		s.mu.Lock()
		if len(s.pending) == 0 && !reheld {
			// The leases of the attempts still in flight ran on while
			// their renewals failed: hold them again before anything
			// else is admitted. A settlement from now on is kept, and
			// replayed below, after its hold.
			holds := make(map[string]map[uint64]heldHere)
			for id, h := range s.holds {
				if holds[h.window] == nil {
					holds[h.window] = make(map[uint64]heldHere)
				}
				holds[h.window][id] = h
			}
			s.mu.Unlock()
			if err := s.rehold(ctx, holds); err != nil {
				s.link.fail(err)
				return replayed, 0, false
			}
			reheld = true
			continue
		}
		if len(s.pending) == 0 {
			// Up under s.mu: no charge can be kept after the last replay.
			outage = s.link.up()
			s.pending = nil
			s.mu.Unlock()
			return replayed, outage, true
		}
		c := s.pending[0]
		s.pending = s.pending[1:]
		s.mu.Unlock()
		if c.token == "" {
			c.token = newToken()
		}
		if _, err := s.settleShared(ctx, s.call, c); err != nil {
			s.mu.Lock()
			s.keep(c)
			s.mu.Unlock()
			s.link.fail(err)
			return replayed, 0, false
		}
		replayed += c.amount
	}
}

// rehold holds again, window by window, the reservations in holds whose
// holds Redis released, and gives all of them a lease from now. A call
// that fails may still run later, after the next probe's, and hold again
// a reservation settled meanwhile: the store stays failed over until it
// has ended (see awaitEnd).
func (s *BudgetStore) rehold(ctx context.Context, holds map[string]map[uint64]heldHere) error {
	for window, ids := range holds {
		args := make([]any, 0, 3*len(ids))
		for id, h := range ids {
			args = append(args, strconv.FormatUint(id, 10), h.amount, h.lease)
		}
		called := make(chan struct{})
		if _, err := s.call.scriptTracked(ctx, called, reholdScript, s.keysOf(window)[1:3], args...); err != nil {
			s.awaitEnd(called)
			return err
		}
	}
	return nil
}

// Close ends the store's subscription for Watch and its probes of a Redis
// that does not answer, and tries once more to add the charges it kept
// meanwhile. It returns an error saying how much money Redis did not
// record, if any. It does not close the client. The store must not be
// used after Close.
func (s *BudgetStore) Close() error {
	s.releasing.Wait() // each within 1+sendTries Timeouts (its reservation's call, then its own); a charge that failed is kept
	s.link.close()
	s.watch.close()
	s.mu.Lock()
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	var lost httpguard.Money
	var err error
	for _, c := range pending {
		if c.token == "" {
			c.token = newToken()
		}
		if err == nil { // once Redis fails, the rest is lost at once: Close is bounded by one Timeout
			_, err = s.settleShared(context.Background(), s.call, c)
		}
		if err != nil {
			lost += c.amount
		}
	}
	if lost > 0 {
		return fmt.Errorf("redisguard: %s: closed with %v of charges Redis did not record: %w", s.link.what, lost, err)
	}
	return nil
}
