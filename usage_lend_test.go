package httpguard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lentUsage is what the server of TestEachSettlementIsChargedItsOwnAnswersUsage
// reports (and bills) for request id.
func lentUsage(id int) Usage {
	return Usage{InputTokens: int64(10 + id%37), OutputTokens: int64(1 + id%29)}
}

// recordingLimitStore records each key's estimates and corrections.
type recordingLimitStore struct {
	*MemoryLimitStore
	mu    sync.Mutex
	takes map[string][]int64
	adj   map[string]int64
	nadj  map[string]int
}

func newRecordingLimitStore() *recordingLimitStore {
	return &recordingLimitStore{MemoryLimitStore: NewMemoryLimitStore(), takes: map[string][]int64{}, adj: map[string]int64{}, nadj: map[string]int{}}
}

func (s *recordingLimitStore) Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, error) {
	s.mu.Lock()
	s.takes[key] = append(s.takes[key], n)
	s.mu.Unlock()
	return s.MemoryLimitStore.Take(ctx, key, reqs, toks, n)
}

func (s *recordingLimitStore) Adjust(ctx context.Context, key string, toks BucketLimit, n int64) error {
	s.record(key, n)
	return s.MemoryLimitStore.Adjust(ctx, key, toks, n)
}

// TakeTurn and CreditTurn, which the Limiter calls in place of Take and of
// Adjust's credits, record as those do.
func (s *recordingLimitStore) TakeTurn(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, int64, error) {
	s.mu.Lock()
	s.takes[key] = append(s.takes[key], n)
	s.mu.Unlock()
	return s.MemoryLimitStore.TakeTurn(ctx, key, reqs, toks, n)
}

func (s *recordingLimitStore) CreditTurn(ctx context.Context, key string, toks BucketLimit, end, n int64) error {
	s.record(key, -n)
	return s.MemoryLimitStore.CreditTurn(ctx, key, toks, end, n)
}

// record records a correction of n tokens asked for key.
func (s *recordingLimitStore) record(key string, n int64) {
	s.mu.Lock()
	s.adj[key] += n
	s.nadj[key]++
	s.mu.Unlock()
}

// The usage an answer's scanner reads is lent to the Budget and the
// Limiters below it, and a JSON answer's scanner then goes back to a pool:
// answers of different usages, read whole, closed early, closed while
// another goroutine reads, closed twice, cut, bodiless, or discarded by
// the Retrier, each settle once, at their own usage, and each Limiter
// corrects by it; the provider, billing every attempt, bills no more than
// the Limit.
func TestEachSettlementIsChargedItsOwnAnswersUsage(t *testing.T) {
	var billed atomic.Int64
	var attempts sync.Map // id -> *atomic.Int64
	attemptsOf := func(id int) *atomic.Int64 {
		v, _ := attempts.LoadOrStore(id, new(atomic.Int64))
		return v.(*atomic.Int64)
	}
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		id, _ := strconv.Atoi(r.Header.Get("X-Id"))
		attemptsOf(id).Add(1)
		u := lentUsage(id)
		mode := id % 8
		if mode != 4 {
			billed.Add(int64(testPrices["m"].Cost(u)))
		}
		js := fmt.Sprintf(`{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi there, a longer answer"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, u.InputTokens, u.OutputTokens)
		switch mode {
		case 0:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, js)
		case 1:
			w.Header().Set("Content-Type", "text/event-stream")
			fl := w.(http.Flusher)
			for range 3 {
				io.WriteString(w, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n")
				fl.Flush()
			}
			io.WriteString(w, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
			fmt.Fprintf(w, "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\n", u.InputTokens, u.OutputTokens)
			io.WriteString(w, "data: [DONE]\n\n")
		case 2:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, js[:len(js)/2])
			w.(http.Flusher).Flush()
			time.Sleep(time.Duration(id%3) * 15 * time.Millisecond)
			io.WriteString(w, js[len(js)/2:])
		case 3: // cut short after half
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(js)))
			w.WriteHeader(200)
			io.WriteString(w, js[:len(js)/2])
			w.(http.Flusher).Flush()
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err == nil {
				buf.Flush()
				conn.Close()
			}
		case 4:
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(200)
		case 5: // Anthropic
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"usage\":{\"input_tokens\":%d,\"output_tokens\":1}}}\n\n", u.InputTokens)
			w.(http.Flusher).Flush()
			io.WriteString(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n")
			w.(http.Flusher).Flush()
			fmt.Fprintf(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":%d}}\n\n", u.OutputTokens)
			io.WriteString(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
		case 6, 7: // a stream without Content-Type; 7 cut after its usage chunk, before [DONE]
			w.Header().Set("Content-Type", "")
			fl := w.(http.Flusher)
			io.WriteString(w, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n")
			fl.Flush()
			io.WriteString(w, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
			fmt.Fprintf(w, "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\n", u.InputTokens, u.OutputTokens)
			fl.Flush()
			if mode == 7 {
				if conn, buf, err := w.(http.Hijacker).Hijack(); err == nil {
					buf.Flush()
					conn.Close()
				}
				return
			}
			io.WriteString(w, "data: [DONE]\n\n")
		}
	})

	var mu sync.Mutex
	settled := map[int][]Settlement{}
	b := newTestBudget(t, BudgetConfig{Limit: 15 * Cent, OnSettle: func(s Settlement) {
		id, _ := strconv.Atoi(s.Request.Header.Get("X-Id"))
		mu.Lock()
		settled[id] = append(settled[id], s)
		mu.Unlock()
	}})
	newLim := func(st LimitStore) *Limiter {
		l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e6, Burst: 1e6, TokensPerMinute: 1e9, Store: st,
			Key: func(r *http.Request, _ string) string { return r.Header.Get("X-Id") }})
		require.NoError(t, err)
		return l
	}
	outerSt, in1St, in2St := newRecordingLimitStore(), newRecordingLimitStore(), newRecordingLimitStore()
	var retried sync.Map
	rt, err := NewRetrier(RetryPolicy{MaxRetries: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond,
		Classify: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			if err == nil && resp.StatusCode == 200 {
				id, _ := strconv.Atoi(resp.Request.Header.Get("X-Id"))
				if (id/20)%3 == 0 {
					if _, again := retried.LoadOrStore(id, true); !again {
						return true, fmt.Errorf("discarding a 2xx")
					}
				}
			}
			return DefaultClassifier(ctx, resp, err)
		}})
	require.NoError(t, err)
	base := api.srv.Client().Transport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 64
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(base, newLim(outerSt), rt, b, newLim(in1St), newLim(in2St))}

	const workers, each = 8, 100
	var wg sync.WaitGroup
	var served, refused atomic.Int64
	var unsent sync.Map // the ids refused before any attempt was sent
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := g*each + i
				stream := ""
				path := "/v1/chat/completions"
				switch id % 8 {
				case 1, 6, 7:
					stream = `"stream":true,`
				case 5:
					stream, path = `"stream":true,`, "/v1/messages"
				}
				body := fmt.Sprintf(`{"model":"m",%s"max_tokens":64,"user":"u%05d","messages":[{"role":"user","content":"hello"}]}`, stream, id)
				req, _ := http.NewRequest("POST", api.srv.URL+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Id", strconv.Itoa(id))
				resp, err := client.Do(req)
				if err != nil {
					refused.Add(1)
					if IsRefusal(err) {
						unsent.Store(id, true)
					}
					continue
				}
				served.Add(1)
				switch (id / 5) % 4 {
				case 0:
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				case 1:
					_, _ = resp.Body.Read(make([]byte, 10))
					resp.Body.Close()
				case 2:
					done := make(chan struct{})
					go func() {
						defer close(done)
						_, _ = io.Copy(io.Discard, bufio.NewReaderSize(resp.Body, 16))
					}()
					if id%2 == 0 {
						time.Sleep(time.Duration(id%7) * 100 * time.Microsecond)
					}
					resp.Body.Close()
					<-done
					resp.Body.Close()
				case 3:
					_, _ = io.Copy(io.Discard, resp.Body)
					_, _ = resp.Body.Read(make([]byte, 4))
					var cw sync.WaitGroup
					for range 2 {
						cw.Add(1)
						go func() { defer cw.Done(); resp.Body.Close() }()
					}
					cw.Wait()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("served %d refused %d billed %v spent %v", served.Load(), refused.Load(), Money(billed.Load()), b.Spent())
	assert.Positive(t, served.Load())
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit())
	assert.GreaterOrEqual(t, b.Spent(), Money(billed.Load()))

	mu.Lock()
	defer mu.Unlock()
	var charged Money
	known := map[int]int{}
	for id := range workers * each {
		ss := settled[id]
		n := 0
		if v, ok := attempts.Load(id); ok {
			n = int(v.(*atomic.Int64).Load())
		}
		assert.Equal(t, n, len(ss), "id %d: settlements against attempts", id)
		want := lentUsage(id)
		for _, s := range ss {
			charged += s.Charged
			if s.UsageKnown {
				known[id]++
				assert.Equal(t, want.InputTokens, s.Usage.InputTokens, "id %d", id)
				assert.Equal(t, want.OutputTokens, s.Usage.OutputTokens, "id %d", id)
				assert.Equal(t, testPrices["m"].Cost(want), s.Charged, "id %d", id)
			} else {
				if !s.Usage.noTokens() { // what a stream cut short reported is its own
					assert.Equal(t, want.InputTokens, s.Usage.InputTokens, "id %d", id)
					assert.LessOrEqual(t, s.Usage.OutputTokens, want.OutputTokens, "id %d", id)
				}
				if id%8 != 4 {
					assert.GreaterOrEqual(t, s.Charged, testPrices["m"].Cost(want), "id %d", id)
				}
			}
		}
	}
	assert.Equal(t, b.Spent(), charged)
	// The Limiters below the Budget hear each known usage once.
	for _, st := range []*recordingLimitStore{in1St, in2St} {
		st.mu.Lock()
		require.NotEmpty(t, st.takes, "the store recorded the turns")
		for key, takes := range st.takes {
			id, _ := strconv.Atoi(key)
			want := lentUsage(id)
			used := want.InputTokens + want.OutputTokens
			est := takes[0]
			wantAdj := int64(known[id]) * (used - est)
			assert.Equal(t, wantAdj, st.adj[key], "id %d: corrections (estimate %d, known %d, takes %d)", id, est, known[id], len(takes))
		}
		st.mu.Unlock()
	}
	outerSt.mu.Lock()
	require.NotEmpty(t, outerSt.takes, "the store recorded the turns")
	for key, takes := range outerSt.takes {
		id, _ := strconv.Atoi(key)
		want := lentUsage(id)
		if _, ok := unsent.Load(id); ok {
			// Never sent: the outer Limiter gives its estimate back.
			assert.Equal(t, -takes[0], outerSt.adj[key], "outer id %d, unsent", id)
			continue
		}
		if adj := outerSt.adj[key]; adj != 0 {
			assert.Equal(t, want.InputTokens+want.OutputTokens-takes[0], adj, "outer id %d", id)
			assert.Equal(t, 1, outerSt.nadj[key])
		}
	}
	outerSt.mu.Unlock()
}
