package httpguard

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// orderPrices price "m" as testPrices do and "m2", which a Fallback's
// second target asks for, dearer.
var orderPrices = PriceTable{"m": {Input: Dollar, Output: 2 * Dollar}, "m2": {Input: 3 * Dollar, Output: 7 * Dollar}}

// The answers an orderServer gives, one drawn at random for each request.
const (
	orderJSON          = iota // usage as billed
	orderStream               // a stream (Anthropic's on /messages), its usage, its end
	orderStreamCutLate        // a stream cut after its usage, before its end
	orderStreamCut            // a stream cut before its usage
	orderStallCut             // a 2xx whose body stalls halfway, then is cut
	orderReset                // reset once the request is read, before headers
	order503                  // not billed
	orderSlowHeaders          // headers after 5-25ms, around the AttemptTimeout
	orderShouldRetry          // a 2xx saying X-Should-Retry: true
	order429                  // not billed
	orderEarlyHints           // a 103 before the answer
	orderGzip                 // a JSON answer gzipped (usage unreadable: the caller set Accept-Encoding)
	orderKinds
)

// orderServer is a loopback provider, over HTTP/1.1, HTTP/2 with TLS or
// h2c, that bills every request it reads whole at orderPrices (its
// prompt bound and all of max_tokens, which its usage reports), under
// the X-Attempt header a layer below the Budget sets, and answers it with
// one of the faults above.
type orderServer struct {
	srv    *httptest.Server
	ledger *orderLedger
	mu     sync.Mutex
	rng    *rand.Rand
}

func newOrderServer(t *testing.T, proto string, seed int64, ledger *orderLedger) *orderServer {
	s := &orderServer{rng: rand.New(rand.NewSource(seed)), ledger: ledger}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	switch proto {
	case "HTTP/2":
		s.srv.EnableHTTP2 = true
		s.srv.StartTLS()
	case "h2c":
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		s.srv.Config.Protocols = &p
		s.srv.Start()
	default:
		s.srv.Start()
	}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *orderServer) serve(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	sent := strings.Replace(string(b), `"stream_options":{"include_usage":true},`, "", 1) // asks the model for nothing
	cr, _ := parseChatRequest([]byte(sent))
	s.mu.Lock()
	kind := s.rng.Intn(orderKinds)
	s.mu.Unlock()
	if kind != order503 && kind != order429 {
		p := orderPrices[cr.Model]
		id, _ := strconv.ParseInt(r.Header.Get("X-Attempt"), 10, 64)
		s.ledger.bill(id, Money(len(sent))*p.Input/1_000_000+Money(cr.MaxOutput)*p.Output/1_000_000)
	}
	fl := http.NewResponseController(w)
	switch kind {
	case order503, order429:
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusServiceUnavailable - 74*b2i(kind == order429))
		return
	case orderReset:
		panic(http.ErrAbortHandler)
	case orderSlowHeaders:
		time.Sleep(time.Duration(5+len(sent)%20) * time.Millisecond)
	case orderEarlyHints:
		if r.ProtoMajor == 1 { // net/http's HTTP/2 server reads a 1xx's header map as the handler goes on
			w.Header().Set("Link", "</x>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}
	}
	cut := func(after int) {
		if kind == after {
			panic(http.ErrAbortHandler)
		}
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/messages") && cr.Stream:
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":%d,\"output_tokens\":1}}}\n\n", len(sent))
		fmt.Fprint(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\n")
		fl.Flush()
		cut(orderStreamCut)
		fmt.Fprintf(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":%d}}\n\n", cr.MaxOutput)
		fl.Flush()
		cut(orderStreamCutLate)
		fmt.Fprint(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	case strings.HasSuffix(r.URL.Path, "/messages"):
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"type":"message","content":[],"usage":{"input_tokens":%d,"output_tokens":%d}}`, len(sent), cr.MaxOutput)
	case cr.Stream && kind != orderStallCut:
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n")
		fl.Flush()
		cut(orderStreamCut)
		fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\n", len(sent), cr.MaxOutput)
		fl.Flush()
		cut(orderStreamCutLate)
		fmt.Fprint(w, "data: [DONE]\n\n")
	default:
		answer := fmt.Sprintf(`{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, len(sent), cr.MaxOutput)
		w.Header().Set("Content-Type", "application/json")
		switch kind {
		case orderShouldRetry:
			w.Header().Set("X-Should-Retry", "true")
		case orderGzip:
			w.Header().Set("Content-Encoding", "gzip")
			gz := gzip.NewWriter(w)
			io.WriteString(gz, answer)
			gz.Close()
			return
		case orderStallCut:
			w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
			io.WriteString(w, answer[:len(answer)/2])
			fl.Flush()
			time.Sleep(10 * time.Millisecond)
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, answer)
	}
}

// orderLedger ties each attempt a Budget sends on (every write of it,
// when a layer below sends it again) to what the servers billed for it
// and what the Budget charged it.
type orderLedger struct {
	attemptStamps
	mu      sync.Mutex
	billed  map[int64]Money
	settled map[int64][]Settlement
}

func newOrderLedger() *orderLedger {
	return &orderLedger{attemptStamps: newAttemptStamps(), billed: make(map[int64]Money), settled: make(map[int64][]Settlement)}
}

func (l *orderLedger) bill(id int64, m Money) {
	l.mu.Lock()
	l.billed[id] += m
	l.mu.Unlock()
}

func (l *orderLedger) onSettle(s Settlement) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if id, ok := l.idOf(s.Request); ok && s.Charged > 0 { // else never sent on, or released
		l.settled[id] = append(l.settled[id], s)
	}
}

// check asserts the Budget's promise: each attempt billed was charged, once,
// at least its bill, and no window was billed more than limit.
func (l *orderLedger) check(t *testing.T, limit Money) (windows int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	billed := make(map[string]Money)
	for id, bill := range l.billed {
		sts := l.settled[id]
		if !assert.Len(t, sts, 1, "attempt %d billed %v, settled %d times", id, bill, len(sts)) {
			continue
		}
		assert.GreaterOrEqual(t, sts[0].Charged, bill, "attempt %d billed %v, charged %+v", id, bill, sts[0])
		billed[sts[0].Window] += bill
	}
	for w, bill := range billed {
		assert.LessOrEqual(t, bill, limit, "window %s", w)
	}
	return len(billed)
}

// Sixteen callers send chat requests (an Anthropic /messages one in five,
// half of them streams, some asking for gzip, each with a deadline of its
// own, reading the answer whole, in part or not at all) through a Budget
// whose 10ms windows roll on an injected clock as requests go, in every
// order of the layers, the recommended and not: a Retrier (AttemptTimeout
// 15ms, retrying a 2xx that says X-Should-Retry) above or below it, a
// Breaker, a Fallback above it (to a dearer model) or below it, a second
// Budget. The servers bill every request they read whole and answer with
// every fault at random, over HTTP/1.1, HTTP/2 and h2c. Every bill is
// charged, once; no window is billed past the Limit; nothing stays held.
func TestBudgetLimitHoldsInEveryStackOrderAcrossFaults(t *testing.T) {
	orders := []string{"retrier,budget", "budget,retrier", "fallback,retrier,breaker,budget", "retrier,breaker,budget",
		"retrier,budget,breaker", "budget,fallback,retrier", "retrier,budget,fallback", "retrier,outer,budget", "outer,budget,retrier"}
	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "h2c"} {
		for i, order := range orders {
			t.Run(proto+"/"+order, func(t *testing.T) {
				testBudgetLimitInOrder(t, proto, order, int64(i+1), i%2 == 1)
			})
		}
	}
}

func testBudgetLimitInOrder(t *testing.T, proto, order string, seed int64, leased bool) {
	ledger := newOrderLedger()
	primary := newOrderServer(t, proto, seed, ledger)
	second := newOrderServer(t, proto, seed+100, ledger)
	const maxTokens = 10
	body := func(i int) string {
		return fmt.Sprintf(`{"model":"m","max_tokens":%d,"stream":%v,"messages":[{"role":"user","content":"hello %03d"}]}`, maxTokens, i%2 == 0, i)
	}
	one := reservation(body(0), maxTokens)
	limit := 5*one + one/2
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	cfg := BudgetConfig{Limit: limit, Prices: orderPrices, Window: 10 * time.Millisecond, MaxWait: 20 * time.Millisecond, OnSettle: ledger.onSettle}
	if leased {
		cfg.Store, cfg.Lease = newMemoryBudgetStore(readClock), 5*time.Second
	}
	budget := newTestBudget(t, cfg)
	budget.now = now
	outer := newTestBudget(t, BudgetConfig{Limit: 3 * limit, Prices: orderPrices, Window: 10 * time.Millisecond, MaxWait: 20 * time.Millisecond})
	outer.now = now
	retrier, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond,
		AttemptTimeout: 15 * time.Millisecond, Classify: retryShouldRetry})
	require.NoError(t, err)
	breaker, err := NewBreaker(BreakerConfig{CoolDown: 3 * time.Millisecond, ConsecutiveFailures: 2, Probes: 1})
	require.NoError(t, err)
	second2 := Target{Name: "second", BaseURL: second.srv.URL + "/v1"}
	if strings.HasPrefix(order, "fallback") { // above the Budget, which prices the dearer model it asks for
		second2.Models = map[string]string{"m": "m2"}
	}
	fallback, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.srv.URL + "/v1"}, second2}})
	require.NoError(t, err)
	named := map[string]Layer{"retrier": retrier, "budget": budget, "outer": outer, "breaker": breaker, "fallback": fallback}
	var layers []Layer
	for _, name := range strings.Split(order, ",") {
		layers = append(layers, named[name])
		if name == "budget" {
			layers = append(layers, LayerFunc(ledger.stamp))
		}
	}
	base := primary.srv.Client().Transport.(*http.Transport).Clone()
	switch proto {
	case "HTTP/2":
		base.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // both servers' certificates
	case "h2c":
		base.Protocols = new(http.Protocols)
		base.Protocols.SetUnencryptedHTTP2(true)
	}
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(base, layers...)}

	var n atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed*1000 + int64(w)))
			for range 12 {
				i := int(n.Add(1))
				clock.Add(int64(time.Millisecond)) // windows roll as requests go, some mid-request
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(30+rng.Intn(200))*time.Millisecond)
				path := "/v1/chat/completions"
				if i%5 == 0 {
					path = "/v1/messages"
				}
				req, _ := http.NewRequestWithContext(ctx, "POST", primary.srv.URL+path, strings.NewReader(body(i)))
				if i%7 == 0 {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				if resp, err := client.Do(req); err == nil {
					switch rng.Intn(3) {
					case 0:
						io.Copy(io.Discard, resp.Body)
					case 1:
						io.ReadFull(resp.Body, make([]byte, rng.Intn(120)))
					}
					resp.Body.Close()
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	primary.srv.Close() // waits for the handlers, and their bills
	second.srv.Close()

	windows := ledger.check(t, limit)
	for _, b := range []*Budget{budget, outer} {
		s := b.store.(*MemoryBudgetStore)
		s.mu.Lock()
		for key, w := range s.windows {
			assert.Zero(t, w.held.Load(), "window %s", key)
			assert.Empty(t, w.holds, "window %s", key)
		}
		s.mu.Unlock()
	}
	t.Logf("%d attempts billed over %d windows", len(ledger.billed), windows)
}
