package httpguard

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pubsubStore is a shared store that tells every waiting attempt when
// another process releases money, as redisguard's pub/sub does, and whose
// reservations each take a round trip, counted.
type pubsubStore struct {
	*MemoryBudgetStore
	reserves         atomic.Int64
	asking, mostAsks atomic.Int64 // reservations under way, and the most at once
	roundTrip        time.Duration
	mu               sync.Mutex
	watchers         map[chan struct{}]struct{}
}

func newPubsubStore() *pubsubStore {
	return &pubsubStore{MemoryBudgetStore: NewMemoryBudgetStore(), roundTrip: time.Millisecond, watchers: make(map[chan struct{}]struct{})}
}

func (s *pubsubStore) Reserve(ctx context.Context, r Reservation, limit Money) (ReserveResult, error) {
	s.reserves.Add(1)
	n := s.asking.Add(1)
	defer s.asking.Add(-1)
	for most := s.mostAsks.Load(); n > most && !s.mostAsks.CompareAndSwap(most, n); most = s.mostAsks.Load() {
	}
	time.Sleep(s.roundTrip)
	return s.MemoryBudgetStore.Reserve(ctx, r, limit)
}

func (s *pubsubStore) Watch(ctx context.Context, _ string) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.watchers[ch] = struct{}{}
	s.mu.Unlock()
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		delete(s.watchers, ch)
		s.mu.Unlock()
	})
	return ch
}

// settleElsewhere settles, as another process, reservation id, and tells
// every watcher.
func (s *pubsubStore) settleElsewhere(t *testing.T, id uint64, actual Money) {
	_, err := s.MemoryBudgetStore.Settle(context.Background(), "lifetime", id, actual)
	require.NoError(t, err)
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// quiet waits until no reservation has been asked of s for 50 ms, and
// returns how many were.
func (s *pubsubStore) quiet(t *testing.T) int64 {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		n := s.reserves.Load()
		time.Sleep(50 * time.Millisecond)
		if s.reserves.Load() == n {
			return n
		}
	}
	t.Fatal("the waiters never stopped asking the store")
	return 0
}

// A settlement in another process wakes every attempt waiting for room in
// a shared store; each asked the store again (a round trip to Redis),
// though the first look showed the room freed was not enough for any of
// them: 200 waiters made 200 reservations per settlement anywhere in the
// fleet. On Redis, 1,000 waiters while the fleet settled 500 times a
// second sent 30,000 commands a second, and 400 waiters on a client of two
// connections at a millisecond each failed the store over (ErrUnavailable
// for every request) on a healthy Redis. The waiters woken together now
// share their looks: one looks, and the others look only when what it
// found leaves room for them. The one the room fits is still admitted at
// once, without waiting for a poll.
func TestBudgetWaitersWokenTogetherShareOneLookAtASharedStore(t *testing.T) {
	const waiters = 200
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	need := reservation(body, 10)
	store := newPubsubStore()
	limit := need * 3 / 2
	client, waiting := waitingBudget(t, api, store, store.MemoryBudgetStore, limit, time.Hour, need) // only notices wake the waiters

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var ended atomic.Int64
	for range waiters {
		sendWaiting(ctx, &wg, client, api, body, &ended)
	}
	require.Eventually(t, func() bool { return waiting.Load() == waiters }, 10*time.Second, time.Millisecond)
	before := store.quiet(t)

	res, err := store.MemoryBudgetStore.Reserve(context.Background(), Reservation{ID: 3, Window: "lifetime", Amount: 0, Lease: time.Minute}, limit)
	require.NoError(t, err)
	require.True(t, res.OK)
	store.settleElsewhere(t, 3, 0) // frees nothing any waiter could use
	looks := store.quiet(t) - before
	assert.LessOrEqual(t, looks, int64(10), "looks at the store after one settlement elsewhere, for %d waiters", waiters)
	t.Logf("%d waiters woken by a settlement that frees nothing they need: %d looks", waiters, looks)

	store.settleElsewhere(t, 1, 0) // room for one
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("no waiter was admitted when room for one freed")
	}
	looks = store.quiet(t) - before - looks
	select {
	case <-arrived:
		t.Fatal("a second waiter was admitted")
	default:
	}
	assert.LessOrEqual(t, looks, int64(10), "looks at the store after room for one freed")
	t.Logf("then room for one: one admitted, %d looks", looks)

	cancel()
	release()
	wg.Wait()
	assert.Equal(t, int64(waiters), ended.Load())
}

// Waiters woken together skip their looks only when a look found no room
// for them: a small request that fits the room a settlement freed is
// admitted at once, though the larger waiters' looks found none for them.
func TestBudgetWaiterThatFitsIsAdmittedThoughWaitersWokenWithItFoundNoRoom(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	small, large := chatBody("m", 1), chatBody("m", 100)
	store := newPubsubStore()
	limit := reservation(large, 100)
	// Another process holds all the room.
	client, waiting := waitingBudget(t, api, store, store.MemoryBudgetStore, limit, time.Hour, reservation(small, 1), limit-reservation(small, 1))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var ended atomic.Int64
	send := func(body string) { sendWaiting(ctx, &wg, client, api, body, &ended) }
	for range 50 {
		send(large)
	}
	send(small)
	for range 50 {
		send(large)
	}
	require.Eventually(t, func() bool { return waiting.Load() == 101 }, 10*time.Second, time.Millisecond)

	store.settleElsewhere(t, 1, 0) // room for the small one alone
	select {
	case <-arrived:
		assert.Equal(t, small, api.lastBody())
		assert.Zero(t, ended.Load(), "the large ones wait on")
	case <-time.After(5 * time.Second):
		t.Fatal("the small waiter was not admitted when room for it freed")
	}
	cancel()
	release()
	wg.Wait()
}

// roundTripStore is a shared store without notices whose reservations
// each take a round trip, counted.
type roundTripStore struct {
	*MemoryBudgetStore
	reserves atomic.Int64
}

func (s *roundTripStore) Reserve(ctx context.Context, r Reservation, limit Money) (ReserveResult, error) {
	s.reserves.Add(1)
	time.Sleep(time.Millisecond) // the round trip
	return s.MemoryBudgetStore.Reserve(ctx, r, limit)
}

// Each attempt waiting for room in a shared store polled it on its own,
// every poll interval (200 ms): a round trip per waiter five times a
// second, however many waited. 200 waiters polling every 5 ms made about
// 5,000 looks in 200 ms; now those woken while a look is under way
// take the next one together: 110 to 130 looks. Room that
// another process frees, unannounced, is still found by the next poll.
func TestBudgetWaitersPollingASharedStoreShareTheirLooks(t *testing.T) {
	const waiters, poll, span = 200, 5 * time.Millisecond, 200 * time.Millisecond
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	need := reservation(body, 10)
	store := &roundTripStore{MemoryBudgetStore: NewMemoryBudgetStore()}
	limit := need * 3 / 2
	client, waiting := waitingBudget(t, api, store, store.MemoryBudgetStore, limit, poll, need)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var ended atomic.Int64
	for range waiters {
		sendWaiting(ctx, &wg, client, api, body, &ended)
	}
	require.Eventually(t, func() bool { return waiting.Load() == waiters }, 10*time.Second, time.Millisecond)
	before := store.reserves.Load()
	time.Sleep(span)
	looks := store.reserves.Load() - before
	t.Logf("%d waiters polling every %v: %d looks in %v", waiters, poll, looks, span)
	assert.Less(t, looks, int64(2*span/time.Millisecond), "at most a look or two per round trip")

	_, err := store.MemoryBudgetStore.Settle(context.Background(), "lifetime", 1, 0) // unannounced
	require.NoError(t, err)
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("no waiter found the room freed")
	}
	cancel()
	release()
	wg.Wait()
}

// When the room freed fits many of the waiters, as when another process's
// large reservations settle or a new window opens, those it fits look at
// the store at once, as they did before waiters shared their looks: taking
// turns, one look at a time, 200 waiters that all fitted would be admitted
// one round trip after another (1.1 s at 5 ms a round trip).
func TestBudgetWaitersTheRoomFreedFitsLookAtOnce(t *testing.T) {
	const waiters = 200
	api := newFakeAPI(t, answerUsage(1, 1))
	body := chatBody("m", 10)
	need := reservation(body, 10)
	store := newPubsubStore()
	store.roundTrip = 5 * time.Millisecond
	limit := need * (waiters + 1)
	// Another process holds all the room; only notices wake the waiters.
	client, waiting := waitingBudget(t, api, store, store.MemoryBudgetStore, limit, time.Hour, limit)

	var wg sync.WaitGroup
	var failed atomic.Int64
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := send(t, client, api.srv.URL, body); err != nil {
				failed.Add(1)
			}
		}()
	}
	require.Eventually(t, func() bool { return waiting.Load() == waiters }, 10*time.Second, time.Millisecond)
	store.quiet(t) // every waiter waits for a notice
	store.mostAsks.Store(0)
	start := time.Now()
	store.settleElsewhere(t, 1, 0) // room for every waiter
	wg.Wait()
	assert.Zero(t, failed.Load())
	t.Logf("%d waiters the room fits: admitted in %v, at most %d looks at once", waiters, time.Since(start), store.mostAsks.Load())
	assert.GreaterOrEqual(t, store.mostAsks.Load(), int64(waiters/2), "the waiters the room fits look at once")
}

// waitingBudget is a Budget of limit on store, a shared store polled every
// poll, in whose MemoryBudgetStore mem another process holds held (one
// reservation each, IDs from 1), with a client to api and the count of its
// attempts that started waiting for room.
func waitingBudget(t *testing.T, api *fakeAPI, store BudgetStore, mem *MemoryBudgetStore, limit Money, poll time.Duration, held ...Money) (*http.Client, *atomic.Int64) {
	t.Helper()
	for i, amount := range held {
		res, err := mem.Reserve(context.Background(), Reservation{ID: uint64(i + 1), Window: "lifetime", Amount: amount, Lease: time.Minute}, limit)
		require.NoError(t, err)
		require.True(t, res.OK, "another process holds the room")
	}
	b := newTestBudget(t, BudgetConfig{Limit: limit, Store: store, MaxWait: time.Minute})
	b.poll = poll
	waiting := new(atomic.Int64)
	b.onWait = func() { waiting.Add(1) }
	return api.client(t, b), waiting
}

// sendWaiting posts body to api through client in a goroutine of wg, with
// ctx, and counts it in ended when its call returns.
func sendWaiting(ctx context.Context, wg *sync.WaitGroup, client *http.Client, api *fakeAPI, body string, ended *atomic.Int64) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequestWithContext(ctx, "POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
		ended.Add(1)
	}()
}
