package redisguard

// Tests of the adversarial review of 2026-11-30 (fleet Budget on Redis).
// Each failed on main before its fix.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A live process keeps what it holds across a Redis outage shorter than
// its lease. A Budget renews its leases every Lease/3; an outage that
// spans two of those renewals (a little over Lease/3: 20 s with the
// default lease, a Sentinel failover) leaves the third to arrive when the
// lease has just ended on Redis's clock. The hold of an attempt still in
// flight (a stream, an answer not read yet) was then released, its renewal
// skipped it ("unknown or expired ids are skipped"), and another process
// was admitted into the money the provider was about to bill: the fleet
// passed its cap although no process died.
func TestALiveProcessKeepsItsHoldsAcrossARedisOutageShorterThanItsLease(t *testing.T) {
	// A probe every 50ms: go-redis's pool stops dialing for a second
	// after as many failed dials as it has connections, which a faster
	// probe would reach during the outage.
	cfg := BudgetStoreConfig{Name: "outage", ProbeInterval: 50 * time.Millisecond}
	assertHoldsOutlastAnOutage(t, cfg, func(srv *redisServer, lease time.Duration) {
		srv.kill()
		time.Sleep(lease * 5 / 6) // two renewals fail
		srv.restart()
		time.Sleep(2 * lease) // a live process keeps renewing
	})
}

// assertHoldsOutlastAnOutage has one process (a Budget on a store made
// with cfg) send an attempt whose answer it leaves unread, so that its
// reservation is held and renewed, runs outage on the store's Redis, and
// then has a second process sharing the store send an attempt that does
// not fit beside the first: it must be refused, and the provider, which
// bills every attempt it receives, never bill past the Limit.
func assertHoldsOutlastAnOutage(t *testing.T, cfg BudgetStoreConfig, outage func(srv *redisServer, lease time.Duration)) {
	t.Helper()
	srv := startRedis(t, redisOptions{persist: true})
	const maxTokens = 100
	api := newFaultServer(t, httpguardtest.Config{CompletionTokens: maxTokens})
	reservation := reservationOf(t, chatBody(maxTokens))
	limit := reservation + reservation/4 // one attempt fits, two do not; two answers cost more than limit
	const lease = 300 * time.Millisecond
	newClient := func() *http.Client {
		s := newStore(t, srv.client(t), cfg)
		b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: testPrices, Store: s, Lease: lease, MaxWait: -1})
		require.NoError(t, err)
		return &http.Client{Transport: httpguard.Chain(api.Client().Transport, b)}
	}
	a, b := newClient(), newClient()
	post := func(c *http.Client) (*http.Response, error) {
		return c.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(maxTokens)))
	}

	inFlight, err := post(a) // answered, not read yet: still held, and renewed
	require.NoError(t, err)
	defer inFlight.Body.Close()
	outage(srv, lease)

	resp, err := post(b)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.ErrorIs(t, err, httpguard.ErrBudgetExceeded, "the attempt in flight still holds its reservation")
	io.Copy(io.Discard, inFlight.Body)
	inFlight.Body.Close()
	assert.LessOrEqual(t, billed(api), limit, "what the provider may bill passed the cap")
}

// The same on the store: an outage longer than a lease. The store holds
// again what its attempts in flight hold before it uses Redis again, and
// a settlement kept meanwhile still ends its own hold, once.
func TestBudgetStoreHoldsItsAttemptsInFlightAgainWhenRedisIsBack(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	events := make(failovers, 10)
	s := newStore(t, srv.client(t), BudgetStoreConfig{ProbeInterval: 50 * time.Millisecond, OnFailover: events.record})
	other := newStore(t, srv.client(t), BudgetStoreConfig{Name: s.cfg.Name})
	ctx := context.Background()
	const lease = 100 * time.Millisecond
	r := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "lifetime", Amount: amount, Lease: lease}
	}
	require.True(t, reserve(t, s, r(1, 40), 100).OK)
	require.True(t, reserve(t, s, r(2, 30), 100).OK)

	srv.kill()
	_, err := s.Settle(ctx, "lifetime", 2, 25)
	require.ErrorIs(t, err, ErrUnavailable)
	require.True(t, events.next(t).Down)
	time.Sleep(2 * lease) // the leases end on Redis's clock
	srv.restart()
	up := events.next(t)
	require.False(t, up.Down)
	assert.Equal(t, httpguard.Money(25), up.Replayed)
	assert.Equal(t, [2]httpguard.Money{25, 40}, totals(t, other, "lifetime"), "1 is in flight: held again; 2 settled")
	assert.False(t, reserve(t, other, r(3, 36), 100).OK, "25 spent and 40 in flight: 36 do not fit")

	require.NoError(t, s.Renew(ctx, "lifetime", []uint64{1}, time.Minute), "the Budget renews it as before")
	_, err = s.Settle(ctx, "lifetime", 1, 40)
	require.NoError(t, err)
	assert.Equal(t, [2]httpguard.Money{65, 0}, totals(t, other, "lifetime"))
}

// A Budget refuses at once a request that the money already settled leaves
// no room for, and waits (up to MaxWait) only for room that attempts in
// flight hold. A store failing open to its local share answered with the
// share's totals, which the Budget compares with the whole Limit: once the
// share was spent, every request waited its full MaxWait (30 s by
// default) for room that nothing in flight could free, polling the store,
// before it was refused.
func TestAFailOpenShareSpentRefusesAtOnce(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	const maxTokens = 100
	api := newFaultServer(t, httpguardtest.Config{CompletionTokens: maxTokens})
	reservation := reservationOf(t, chatBody(maxTokens))
	s := newStore(t, srv.client(t), BudgetStoreConfig{FailOpenShare: 0.5, ProbeInterval: time.Hour})
	const maxWait = 2 * time.Second
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: 4 * reservation, Prices: testPrices, Store: s, MaxWait: maxWait})
	require.NoError(t, err)
	client := &http.Client{Transport: httpguard.Chain(api.Client().Transport, b)}
	post := func() error {
		resp, err := client.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(maxTokens)))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}

	srv.kill()
	require.NoError(t, post(), "from the local share of 2 reservations")
	require.NoError(t, post())
	start := time.Now()
	err = post()
	elapsed := time.Since(start)
	require.ErrorIs(t, err, httpguard.ErrBudgetExceeded, "the share is spent")
	assert.Less(t, elapsed, maxWait/2, "refused at once: nothing in flight can make room (%v)", err)
	assert.Contains(t, err.Error(), fmt.Sprintf("but %v remains", 2*reservation-billed(api)), "what the share has left")
	srv.restart() // for Close to record the share's spend
}
