package redisguard

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ledgerStore records, per reservation ID, the window a store admitted it
// into, and what each settlement charged, so that a test can add up what a
// provider billed per window. Watch passes through.
type ledgerStore struct {
	*BudgetStore
	mu      sync.Mutex
	window  map[uint64]string
	charged map[uint64]httpguard.Money
}

func (s *ledgerStore) Reserve(ctx context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	res, err := s.BudgetStore.Reserve(ctx, r, limit)
	if err == nil && res.OK {
		s.mu.Lock()
		s.window[r.ID] = res.Window
		s.mu.Unlock()
	}
	return res, err
}

func (s *ledgerStore) Settle(ctx context.Context, window string, id uint64, actual httpguard.Money) (httpguard.Money, error) {
	s.mu.Lock()
	s.charged[id] += actual
	s.mu.Unlock()
	return s.BudgetStore.Settle(ctx, window, id, actual)
}

// Hundreds of callers through four processes' Budgets on one Redis, with
// windows from 2ms (shorter than a round trip under load: reservations
// follow the newest window) to 200ms, each allowed to wait for room for two
// windows: what the provider billed for the attempts admitted into each
// window stays within the Limit, and every attempt it received was admitted
// and charged its bill.
func TestBudgetFleetAtWindowBoundariesNeverPassesTheLimitPerWindow(t *testing.T) {
	for _, window := range []time.Duration{2 * time.Millisecond, 5 * time.Millisecond, 50 * time.Millisecond, 200 * time.Millisecond} {
		t.Run(window.String(), func(t *testing.T) {
			client := startRedis(t, redisOptions{}).client(t)
			name := fmt.Sprintf("edge-%d", storeNames.Add(1))
			const stores, callers, maxTokens = 4, 400, 100
			var billed atomic.Int64 // nano-dollars, as the provider prices what it answers
			var attempts atomic.Int64
			provider := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
				attempts.Add(1)
				in, out := 5+rand.IntN(5), 1+rand.IntN(maxTokens)
				billed.Add(int64(in)*1000 + int64(out)*2000)
				return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
					Body: io.NopCloser(strings.NewReader(fmt.Sprintf(`{"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, in, out)))}, nil
			})
			var ledgers []*ledgerStore
			var rts []http.RoundTripper
			limit := httpguard.Money(2_000_000) // about 8 reservations
			for range stores {
				l := &ledgerStore{BudgetStore: newStore(t, client, BudgetStoreConfig{Name: name}), window: map[uint64]string{}, charged: map[uint64]httpguard.Money{}}
				ledgers = append(ledgers, l)
				b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Window: window, Prices: testPrices, Store: l, MaxWait: 2 * window})
				require.NoError(t, err)
				rts = append(rts, b.Wrap(provider))
			}
			deadline := time.Now().Add(500 * time.Millisecond)
			var wg sync.WaitGroup
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rt := rts[i%stores]
					for time.Now().Before(deadline) {
						req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatBody(maxTokens)))
						resp, err := rt.RoundTrip(req)
						if err != nil {
							continue
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}()
			}
			wg.Wait()
			perWindow := map[string]httpguard.Money{}
			var charged httpguard.Money
			var admitted int
			for _, l := range ledgers {
				for id, w := range l.window {
					perWindow[w] += l.charged[id]
					charged += l.charged[id]
					admitted++
				}
			}
			t.Logf("%d attempts, %d admitted, %d windows, billed %v, charged %v", attempts.Load(), admitted, len(perWindow), httpguard.Money(billed.Load()), charged)
			assert.EqualValues(t, attempts.Load(), admitted, "every attempt the provider received was admitted")
			assert.EqualValues(t, billed.Load(), charged, "every bill charged")
			for w, m := range perWindow {
				assert.LessOrEqual(t, m, limit, "window %s", w)
			}
		})
	}
}

// An answer whose body is read for many leases keeps its reservation held
// in the fleet (its Budget renews the lease while the body is read): another
// process finds no room until it settles. The body is read for over three
// leases of 150 ms, each renewed every 50 ms and given 50 ms to answer: a
// 30 ms lease, renewed under a 10 ms timeout, lapsed once in CI under -race
// beside the other packages' tests (a lease must outlast any pause).
func TestBudgetLongStreamOutlivesManyLeasesHeld(t *testing.T) {
	c := startRedis(t, redisOptions{}).client(t)
	name := fmt.Sprintf("stream-%d", storeNames.Add(1))
	const maxTokens = 100
	release := make(chan struct{})
	var billed atomic.Int64
	provider := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		billed.Add(1)
		pr, pw := io.Pipe()
		go func() {
			<-release
			pw.Write([]byte(`{"usage":{"prompt_tokens":10,"completion_tokens":100}}`))
			pw.Close()
		}()
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: pr}, nil
	})
	reservation := reservationOf(t, chatBody(maxTokens))
	limit := reservation + reservation/2
	mk := func() http.RoundTripper {
		b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: testPrices, Lease: 150 * time.Millisecond, MaxWait: -1,
			Store: newStore(t, c, BudgetStoreConfig{Name: name})})
		require.NoError(t, err)
		return b.Wrap(provider)
	}
	a, b := mk(), mk()
	req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatBody(maxTokens)))
	resp, err := a.RoundTrip(req)
	require.NoError(t, err)
	for range 10 {
		time.Sleep(50 * time.Millisecond)
		req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatBody(maxTokens)))
		_, err := b.RoundTrip(req)
		require.ErrorIs(t, err, httpguard.ErrBudgetExceeded)
	}
	close(release)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.EqualValues(t, 1, billed.Load())
}
