package httpguard

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keptTenantBody is the body caller id sends: its own bytes throughout, of
// a size that varies by id, up to near the largest body the Budget keeps;
// every other one a stream.
func keptTenantBody(id int) []byte {
	size := 1 + id*7919%(60<<10)
	fill := strings.Repeat(fmt.Sprintf("%06d", id), size/6+1)[:size]
	return fmt.Appendf(nil, `{"model":"m","stream":%t,"max_tokens":5,"messages":[{"role":"user","content":%q}]}`, id%2 == 1, fill)
}

// keptTenantSent is what the server receives of keptTenantBody(id): a
// stream with the include_usage the Budget adds.
func keptTenantSent(id int) []byte {
	body := keptTenantBody(id)
	if id%2 == 1 {
		return append([]byte(`{"stream_options":{"include_usage":true},`), body[1:]...)
	}
	return body
}

// startTLS starts srv over TLS, serving HTTP/2 when h2 is set.
func startTLS(t *testing.T, srv *httptest.Server, h2 bool) {
	srv.EnableHTTP2 = h2
	srv.StartTLS()
	t.Cleanup(srv.Close)
}

// Many callers, each with a body of its own that the Budget keeps (see
// keptBody), over HTTP/1 and HTTP/2: whatever the server does (answers
// before reading the body, reads part of it and fails, so that the
// Retrier sends it again, or reads it whole), each byte it receives is
// its caller's, never another request's from a buffer gone back too soon.
func TestBudgetKeptBodiesReachTheServerAsTheirCallersSent(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1", true: "HTTP/2"}[h2], func(t *testing.T) {
			var wrong atomic.Int32
			var billed atomic.Int64 // 2xx answers, each billed 1 input and 1 output token
			var mu sync.Mutex
			var firstWrong string
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				id, _ := strconv.Atoi(r.Header.Get("X-Id"))
				want := keptTenantSent(id)
				var got []byte
				switch r.Header.Get("X-Try") + ":" + strconv.Itoa(id%3) {
				case "0:0": // answered before its body is read
					w.WriteHeader(http.StatusRequestEntityTooLarge)
					return
				case "0:1": // part read, then a failure the Retrier retries
					got, _ = io.ReadAll(io.LimitReader(r.Body, int64(len(want)/2)))
					want = want[:len(got)]
					defer w.WriteHeader(http.StatusServiceUnavailable)
				default:
					got, _ = io.ReadAll(r.Body)
					billed.Add(1)
					if id%2 == 1 {
						defer answerStream(streamOf(`{"prompt_tokens":1,"completion_tokens":1}`, "a"))(w, r, got)
					} else {
						defer answerUsage(1, 1)(w, r, got)
					}
				}
				if !bytes.Equal(got, want) && wrong.Add(1) == 1 {
					mu.Lock()
					firstWrong = fmt.Sprintf("caller %d: got %d bytes %.40q, want %d bytes %.40q", id, len(got), got, len(want), want)
					mu.Unlock()
				}
			}))
			startTLS(t, srv, h2)

			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar})
			retrier, err := NewRetrier(RetryPolicy{MaxRetries: 1, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond})
			require.NoError(t, err)
			base := srv.Client().Transport
			tries := LayerFunc(func(next http.RoundTripper) http.RoundTripper { // numbers each attempt for the server
				var n sync.Map
				return roundTripFunc(func(req *http.Request) (*http.Response, error) {
					c, _ := n.LoadOrStore(req.Header.Get("X-Id"), new(atomic.Int32))
					req = req.Clone(req.Context())
					req.Header.Set("X-Try", strconv.Itoa(int(c.(*atomic.Int32).Add(1)-1)))
					return next.RoundTrip(req)
				})
			})
			client := &http.Client{Transport: Chain(base, retrier, tries, b)}

			const callers, each = 12, 12
			concurrently(callers, each, func(c, i int) {
				id := c*each + i
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", bytes.NewReader(keptTenantBody(id)))
				if err != nil {
					panic(err)
				}
				req.Header.Set("X-Id", strconv.Itoa(id))
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("caller %d: %v", id, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
			assert.Zero(t, wrong.Load(), firstWrong)
			assert.Positive(t, billed.Load())
			// Each billed answer costs 3 microdollars of testPrices' m.
			assert.GreaterOrEqual(t, int64(b.Spent()), billed.Load()*int64(3*Dollar/1_000_000))
		})
	}
}

// Against a server that bills every request it reads whole and then cuts
// (HTTP/1: the connection closed; HTTP/2: the stream reset), with many
// requests at once, each attempt's trace hooks (set when net/http first
// asks for the trace) still see the write, so that the Budget charges at
// least what was billed.
func TestBudgetChargesAttemptsCutAfterTheServerReadThem(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1", true: "HTTP/2"}[h2], func(t *testing.T) {
			var billed atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				// The prompt's tokens (at most a token a byte of the caller's
				// body: include_usage is no prompt) and max_tokens' 5.
				body = bytes.Replace(body, []byte(`"stream_options":{"include_usage":true},`), nil, 1)
				billed.Add(int64(reservation(string(body), 5)))
				panic(http.ErrAbortHandler)
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			startTLS(t, srv, h2)

			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar})
			client := &http.Client{Transport: Chain(srv.Client().Transport, b)}
			postConcurrently(client, 12, 12, func(c, i int) *http.Request {
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", bytes.NewReader(keptTenantBody(c*12+i)))
				if err != nil {
					panic(err)
				}
				return req
			})
			require.Positive(t, billed.Load())
			assert.GreaterOrEqual(t, int64(b.Spent()), billed.Load())
		})
	}
}

// Against a server that bills every request it reads whole and then cuts
// it, over HTTP/1, HTTP/2 over TLS and h2c, with and without a trace of
// the caller's in the request's context (which the attempt's trace, made
// when net/http first asks for it, is composed with): many requests at
// once never get more billed than the Limit, the Budget charges every
// write, and the caller's hooks still run.
func TestBudgetLimitHoldsAgainstCutAttemptsOverEveryProtocolWithACallersTrace(t *testing.T) {
	const body = `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hello there"}]}`
	for _, proto := range []string{"h1", "h2", "h2c"} {
		for _, own := range []bool{false, true} {
			t.Run(proto+map[bool]string{false: "", true: "+trace"}[own], func(t *testing.T) {
				var billed atomic.Int64
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					billed.Add(int64(reservation(string(b), 5)))
					panic(http.ErrAbortHandler)
				}))
				srv.Config.ErrorLog = log.New(io.Discard, "", 0)
				var base http.RoundTripper
				switch proto {
				case "h2c":
					var p http.Protocols
					p.SetUnencryptedHTTP2(true)
					srv.Config.Protocols = &p
					srv.Start()
					t.Cleanup(srv.Close)
					base = h2cTransport(t)
				default:
					startTLS(t, srv, proto == "h2")
					base = srv.Client().Transport
				}
				limit := 10 * reservation(body, 5)
				b := newTestBudget(t, BudgetConfig{Limit: limit})
				client := &http.Client{Transport: Chain(base, b)}
				var hooks atomic.Int64
				postConcurrently(client, 8, 10, func(int, int) *http.Request {
					ctx := context.Background()
					if own {
						ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
							GetConn:      func(string) { hooks.Add(1) },
							WroteRequest: func(httptrace.WroteRequestInfo) { hooks.Add(1) },
						})
					}
					req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(body))
					if err != nil {
						panic(err)
					}
					return req
				})
				require.Positive(t, billed.Load())
				assert.LessOrEqual(t, billed.Load(), int64(limit))
				assert.GreaterOrEqual(t, int64(b.Spent()), billed.Load())
				if own {
					assert.Positive(t, hooks.Load())
				}
			})
		}
	}
}

// postConcurrently sends callers×each requests through client, callers at
// once, newReq making caller c's i-th; answers are closed, errors ignored.
func postConcurrently(client *http.Client, callers, each int, newReq func(c, i int) *http.Request) {
	concurrently(callers, each, func(c, i int) {
		if resp, err := client.Do(newReq(c, i)); err == nil {
			resp.Body.Close()
		}
	})
}

// concurrently runs f(c, i) for i < each in each of callers goroutines c,
// and returns when all are done.
func concurrently(callers, each int, f func(c, i int)) {
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				f(c, i)
			}
		}()
	}
	wg.Wait()
}
