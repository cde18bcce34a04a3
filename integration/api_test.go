package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/require"
)

// api is a loopback OpenAI- and Anthropic-compatible server. It records
// every request it receives and answers the n-th one (from 1) with handle.
type api struct {
	*httptest.Server
	hits atomic.Int64
	hit  chan struct{} // closed at the first request

	mu       sync.Mutex
	bodies   [][]byte
	sdkCount []string                 // X-Stainless-Retry-Count of each request
	arrivals map[string]chan struct{} // by attemptHeader: see reachesServer
	sent     atomic.Int64             // attempts reachesServer has numbered
}

// attemptHeader numbers the attempts sent through reachesServer.
const attemptHeader = "X-Test-Attempt"

// answer writes the reply to the n-th request, from 1.
type answer func(w http.ResponseWriter, r *http.Request, n int)

func newAPI(t *testing.T, handle answer) *api {
	t.Helper()
	a := &api{hit: make(chan struct{}), arrivals: map[string]chan struct{}{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || (r.URL.Path != "/v1/chat/completions" && r.URL.Path != "/v1/messages" && r.URL.Path != "/v1/responses") {
			http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
			return
		}
		n := int(a.hits.Add(1))
		if n == 1 {
			close(a.hit)
		}
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.bodies = append(a.bodies, b)
		a.sdkCount = append(a.sdkCount, r.Header.Get("X-Stainless-Retry-Count"))
		if arrived, ok := a.arrivals[r.Header.Get(attemptHeader)]; ok {
			delete(a.arrivals, r.Header.Get(attemptHeader))
			close(arrived)
		}
		a.mu.Unlock()
		handle(w, r, n)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *api) received() [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]byte(nil), a.bodies...)
}

func (a *api) sdkRetryCounts() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.sdkCount...)
}

const (
	chatCompletion = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"deepseek-v3.2",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`
	anthropicMessage = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",` +
		`"content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","stop_sequence":null,` +
		`"usage":{"input_tokens":5,"output_tokens":1}}`
	openAIUnavailable  = `{"error":{"message":"upstream overloaded","type":"server_error","code":null}}`
	anthropicOverload  = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
	statusOverloaded   = 529 // Anthropic's "overloaded"
	retrierMaxRetries  = 3
	retrierMaxAttempts = retrierMaxRetries + 1
)

// reply writes status with a JSON body.
func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// always answers every request with status and body.
func always(status int, body string) answer {
	return func(w http.ResponseWriter, _ *http.Request, _ int) { reply(w, status, body) }
}

// failFirst answers the first n requests with status and errBody, the rest
// with 200 and okBody.
func failFirst(n, status int, errBody, okBody string) answer {
	return func(w http.ResponseWriter, _ *http.Request, i int) {
		if i <= n {
			reply(w, status, errBody)
			return
		}
		reply(w, http.StatusOK, okBody)
	}
}

// expiresOnHit returns a context whose deadline passes as soon as a has
// received a request: a fixed timeout could pass before the request
// arrives, on a loaded machine, and the test would then see no hit.
func expiresOnHit(a *api) context.Context {
	return hitDeadline{context.Background(), a.hit}
}

type hitDeadline struct {
	context.Context // never done
	hit             <-chan struct{}
}

func (c hitDeadline) Done() <-chan struct{} { return c.hit }

func (c hitDeadline) Err() error {
	select {
	case <-c.hit:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// reachesServer returns a layer, for below the Retrier, that passes the end
// of an attempt's context (its AttemptTimeout firing) on to the transport
// only once a has received the request. Dialling and writing a request may
// take longer than the timeout on a loaded machine, and the attempt would
// then end before a counted it; with this layer every attempt the Retrier
// sends reaches a, and one that a holds still times out: the Retrier reads
// its own timer, not the transport's error.
func (a *api) reachesServer() httpguard.Layer {
	return httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			id := strconv.FormatInt(a.sent.Add(1), 10)
			arrived, returned := make(chan struct{}), make(chan struct{})
			a.mu.Lock()
			a.arrivals[id] = arrived
			a.mu.Unlock()
			ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
			context.AfterFunc(r.Context(), func() {
				select {
				case <-arrived:
				case <-returned: // it never will arrive: a dial failed, say
				}
				cancel(context.Cause(r.Context()))
			})
			r = r.Clone(ctx)
			r.Header.Set(attemptHeader, id)
			resp, err := next.RoundTrip(r)
			close(returned)
			return resp, err
		})
	})
}

// hang holds every request until the client gives up on it.
func hang(w http.ResponseWriter, r *http.Request, _ int) {
	<-r.Context().Done()
}

// streamChunks answers with an OpenAI chat-completions SSE stream: one chunk
// per word, then the usage chunk (choices empty), then [DONE].
func streamChunks(words ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for i, word := range words {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"+
				"\"model\":\"deepseek-v3.2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},"+
				"\"finish_reason\":null}],\"usage\":null}\n\n", word)
			if i == 0 {
				io.WriteString(w, ": keep-alive\n\n")
			}
			f.Flush()
		}
		io.WriteString(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"+
			"\"model\":\"deepseek-v3.2\",\"choices\":[],"+
			"\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n")
		io.WriteString(w, "data: [DONE]\n\n")
		f.Flush()
	}
}

// fastPolicy is DefaultRetryPolicy with millisecond waits and
// retrierMaxRetries retries, so that the tests take milliseconds.
func fastPolicy() httpguard.RetryPolicy {
	p := httpguard.DefaultRetryPolicy()
	p.MaxRetries = retrierMaxRetries
	p.BaseDelay, p.MaxDelay, p.Jitter = time.Millisecond, 4*time.Millisecond, 0
	return p
}

// guardedClient returns an *http.Client whose transport is a fresh
// http.Transport under the given layers; its idle connections are closed
// when the test ends.
func guardedClient(t *testing.T, layers ...httpguard.Layer) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: httpguard.Chain(tr, layers...)}
}

// newRetrier returns a Retrier following p, failing the test on a bad p.
func newRetrier(t *testing.T, p httpguard.RetryPolicy) *httpguard.Retrier {
	t.Helper()
	r, err := httpguard.NewRetrier(p)
	require.NoError(t, err)
	return r
}
