package httpguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Workers send through a Limiter with its own store to three keys while
// the clock moves on in small steps and, every few dozen requests, jumps
// past the next sweep: with an IdleTTL of a nanosecond every key is swept
// under requests that found it just before, and made again. Stats never
// goes back and, once all are answered, counts every request sent; the
// server, which counts every request it receives and bills its tokens,
// gets no more of a key than its Burst plus its rate times the time that
// passed, in requests (GETs) and in tokens (chats whose usage gives back
// part of the estimate, racing the sweeps).
func TestLimiterCountsAndLimitsAcrossSweepsUnderContention(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  LimitConfig
		body string
	}{
		{"requests bind", LimitConfig{RequestsPerSecond: 1, Burst: 4}, ""},
		{"tokens bind", LimitConfig{RequestsPerSecond: 1000, Burst: 1000, TokensPerMinute: 600, OutputEstimate: 100},
			`{"model":"m","max_tokens":95,"messages":[{"role":"user","content":"hi"}]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			testCountsAndLimitsAcrossSweeps(t, c.cfg, c.body)
		})
	}
}

func testCountsAndLimitsAcrossSweeps(t *testing.T, cfg LimitConfig, body string) {
	clk := &storeClock{base: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	cfg.IdleTTL, cfg.MaxWait = time.Nanosecond, -1
	cfg.Key = func(r *http.Request, _ string) string { return r.URL.Path }
	l, err := NewLimiter(cfg)
	require.NoError(t, err)
	l.now = clk.Now
	const keys, used = 3, 91 // the tokens each chat bills
	var hits [keys]atomic.Int64
	srv, client := newUsageServer(t, l, 1, used-1, func(r *http.Request) {
		var k int
		fmt.Sscanf(r.URL.Path, "/k%d", &k)
		hits[k].Add(1)
	})

	var sent, refused atomic.Int64
	var done atomic.Bool
	var wg sync.WaitGroup
	untilDone(&wg, &done, 64, 7, func(rng *rand.Rand) {
		sent.Add(1)
		u := fmt.Sprintf("%s/k%d", srv.URL, rng.IntN(keys))
		var err error
		if body == "" {
			_, err = getStatus(t, context.Background(), client, u)
		} else {
			_, err = sendStatus(t, context.Background(), client, http.MethodPost, u, strings.NewReader(body))
		}
		if errors.Is(err, ErrRateLimited) {
			refused.Add(1)
		} else if err != nil {
			t.Error(err)
		}
	})
	var backwards atomic.Int64
	wg.Add(1)
	go func() { // Stats, read as requests come and keys are swept
		defer wg.Done()
		var last uint64
		for !done.Load() {
			if n := l.Stats().Requests; n < last {
				backwards.Add(1)
			} else {
				last = n
			}
			runtime.Gosched()
		}
	}()
	const jumps, steps = 40, 10
	for range jumps {
		for range steps {
			clk.ns.Add(int64(20 * time.Millisecond))
			for from := sent.Load(); sent.Load() < from+4; {
				runtime.Gosched()
			}
		}
		clk.ns.Add(int64(1100 * time.Millisecond)) // past the next sweep
	}
	done.Store(true)
	wg.Wait()

	assert.Zero(t, backwards.Load(), "times Stats.Requests went back")
	st := l.Stats()
	assert.EqualValues(t, sent.Load(), st.Requests, "every request counted once")
	assert.EqualValues(t, refused.Load(), st.Rejected)
	elapsed := time.Duration(clk.ns.Load()).Seconds()
	var total int64
	for k := range keys {
		n := hits[k].Load()
		total += n
		if body == "" {
			assert.LessOrEqual(t, float64(n), float64(cfg.Burst)+cfg.RequestsPerSecond*elapsed+1, "key %d: requests the server got in %.1f s", k, elapsed)
		} else {
			tpm := float64(cfg.TokensPerMinute)
			assert.LessOrEqual(t, float64(n*used), tpm+tpm/60*elapsed, "key %d: tokens the server billed in %.1f s", k, elapsed)
		}
	}
	require.Positive(t, refused.Load(), "no key reached its limit: the test did not test it")
	t.Logf("sent %d, server got %d, refused %d, %.1f s", sent.Load(), total, refused.Load(), elapsed)
}

// A request to /a is in flight while its key is swept (idle past IdleTTL,
// its state unpinned and dropped by the store) and then answered 429
// with Retry-After: 30. The next request to /a, whose key is made again,
// reaches the server no earlier than the pause's end: the pause heard by
// the swept key's request holds in the store for the key made again.
func TestLimiterPauseHeardByASweptKeyHoldsForTheKeyMadeAgain(t *testing.T) {
	clk := newFakeClock(moveOn)
	l, err := NewLimiter(LimitConfig{
		RequestsPerSecond: 100, Burst: 1, IdleTTL: time.Minute, MaxPause: time.Hour, MaxWait: time.Hour,
		Key: func(r *http.Request, _ string) string { return r.URL.Path },
	})
	require.NoError(t, err)
	l.now, l.sleep = clk.Now, clk.Sleep
	arrived, release := make(chan struct{}), make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			arrived <- struct{}{}
			<-release
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	})
	first := make(chan int)
	go func() {
		code, err := getStatus(t, context.Background(), client, srv.URL+"/a")
		assert.NoError(t, err)
		first <- code
	}()
	<-arrived
	swept := l.last.Load()
	clk.Advance(2 * time.Minute)
	_, err = getStatus(t, context.Background(), client, srv.URL+"/b") // sweeps /a
	require.NoError(t, err)
	require.True(t, swept.dropped.Load(), "/a swept while its request is in flight")
	require.Equal(t, 1, l.own.Len(), "/a's state dropped by the store")

	heard := clk.Now()
	close(release)
	require.Equal(t, http.StatusTooManyRequests, <-first)
	_, err = getStatus(t, context.Background(), client, srv.URL+"/a")
	require.NoError(t, err)

	times := hits.Times()
	require.Len(t, times, 3)
	assert.False(t, times[2].Before(heard.Add(30*time.Second)), "/a again at %v, the pause heard at %v", times[2].Sub(heard), heard)
	assert.EqualValues(t, 3, l.Stats().Requests)
}

// newUsageServer starts a loopback server that calls arrived with every
// request it receives and answers it with a chat's usage of in and out
// tokens, and a client whose transport goes through l.
func newUsageServer(t *testing.T, l *Limiter, in, out int, arrived func(*http.Request)) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived(r)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`, in, out, in+out)
	}))
	tr := srv.Client().Transport.(*http.Transport)
	t.Cleanup(func() { tr.CloseIdleConnections(); srv.Close() })
	return srv, &http.Client{Transport: l.Wrap(tr)}
}

// untilDone runs f over and over in each of workers goroutines, each with
// a random source of its own (from seed), until done; wg counts them.
func untilDone(wg *sync.WaitGroup, done *atomic.Bool, workers int, seed uint64, f func(rng *rand.Rand)) {
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), seed))
			for !done.Load() {
				f(rng)
			}
		}()
	}
}

// A request refused before its key is known (its body fails to read)
// counts in Stats, as one that reaches its key does: the Limiter counts
// it, as no key does.
func TestLimiterCountsARequestRefusedBeforeItsKeyIsKnown(t *testing.T) {
	l, _, get := newPathKeyedLimiter(t)
	get("/a")
	srv, client := newUsageServer(t, l, 1, 1, func(*http.Request) { t.Error("a request whose body failed reached the server") })
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/b", io.MultiReader(strings.NewReader(`{"model":"m",`), iotest.ErrReader(errors.New("reset"))))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.Error(t, err)
	st := l.Stats()
	assert.EqualValues(t, 2, st.Requests)
	assert.Equal(t, 1, st.Keys, "no key made for the refused request")
}
