package httpguard

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// traceAskingTransport asks for the request's trace from several goroutines
// at once, as exchanges a layer below runs side by side would, and answers
// as cannedTransport does.
type traceAskingTransport struct {
	traces []*httptrace.ClientTrace
}

func (t *traceAskingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var wg sync.WaitGroup
	for i := range t.traces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.traces[i] = httptrace.ContextClientTrace(req.Context())
		}()
	}
	wg.Wait()
	return cannedTransport{openAIJSON}.RoundTrip(req)
}

// The attempt sets its trace's hooks when a transport first asks for the
// trace; every asker, however many at once, gets them set.
func TestBudgetAttemptHooksItsTraceForEveryAsker(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: ExamplePrices()})
	below := &traceAskingTransport{traces: make([]*httptrace.ClientTrace, 8)}
	req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", bytes.NewReader(benchBody))
	require.NoError(t, err)
	resp, err := b.Wrap(below).RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	for _, trace := range below.traces {
		require.NotNil(t, trace)
		assert.Same(t, below.traces[0], trace)
		assert.NotNil(t, trace.GetConn)
		assert.NotNil(t, trace.WroteRequest)
	}
}

// keptRequests returns bodies sent through a rewindingBody that keeps them
// (see keptBody), as the Budget sends a body http.NewRequest made
// replayable.
func keptRequests(body string) func() io.ReadCloser {
	return func() io.ReadCloser {
		req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			panic(err)
		}
		k := getKeptBody()
		if _, err := k.read(req, DefaultMaxBufferedBody); err != nil {
			panic(err)
		}
		var rb rewindingBody
		rb.keep(req, k)
		return req.Body
	}
}

// A kept body gives its last bytes with io.EOF, so that a reader of the
// whole body needs no Read only to learn of its end; read in pieces, it
// gives every byte once, and io.EOF from then on.
func TestKeptBodyEndsWithItsLastBytes(t *testing.T) {
	open := keptRequests(string(benchBody))
	body := open()
	p := make([]byte, len(benchBody)+1)
	n, err := body.Read(p)
	assert.Equal(t, len(benchBody), n)
	assert.ErrorIs(t, err, io.EOF)
	assert.Equal(t, string(benchBody), string(p[:n]))
	n, err = body.Read(p)
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF)
	require.NoError(t, body.Close())

	body = open()
	var got []byte
	for {
		piece := make([]byte, 7)
		n, err := body.Read(piece)
		got = append(got, piece[:n]...)
		if err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
	}
	assert.Equal(t, string(benchBody), string(got))
	require.NoError(t, body.Close())
}

// A kept body reads whole, refuses a Read once closed, and allows Close
// during a Read (HTTP/2 closes a body from a goroutine of its own), while
// its buffer goes on to other bodies: -race reports a buffer read after it
// went back.
func TestKeptBodyReadsWholeAndNotAfterClose(t *testing.T) {
	open := keptRequests(string(benchBody))
	body := open()
	got, err := io.ReadAll(body)
	require.NoError(t, err)
	assert.Equal(t, string(benchBody), string(got))
	require.NoError(t, body.Close())
	_, err = body.Read(make([]byte, 8))
	assert.ErrorIs(t, err, http.ErrBodyReadAfterClose)
	require.NoError(t, body.Close(), "a second Close")

	closeBeforeRead(t, open())
	closeDuringRead(open)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			closeDuringRead(open)
		}()
	}
	wg.Wait()
}

// A body http.NewRequest made replayable reaches the server whole, in
// every way the Budget sends it: priced, streamed with include_usage
// added, free (a moderation OpenAI does not bill), and retried.
func TestBudgetSendsWholeABodyItKept(t *testing.T) {
	var hits atomic.Int32
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		answerUsage(10, 5)(w, r, body)
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: ExamplePrices()})
	retrier, err := NewRetrier(RetryPolicy{MaxRetries: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	require.NoError(t, err)
	retried := api.client(t, LayerFunc(func(next http.RoundTripper) http.RoundTripper { return retrier.Wrap(b.Wrap(next)) }))
	send := func(client *http.Client, path, body string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, api.srv.URL+path, bytes.NewReader([]byte(body)))
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	send(retried, "/v1/chat/completions", string(benchBody)) // a 503, then retried
	assert.Equal(t, []string{string(benchBody), string(benchBody)}, api.bodies)

	send(api.client(t, b), "/v1/chat/completions", `{"model":"deepseek-v3.2","stream":true,"max_tokens":8,"messages":[]}`)
	assert.Equal(t, `{"stream_options":{"include_usage":true},"model":"deepseek-v3.2","stream":true,"max_tokens":8,"messages":[]}`, api.lastBody())

	const moderation = `{"model":"omni-moderation-latest","input":"hi"}`
	send(api.client(t, b), "/v1/moderations", moderation)
	assert.Equal(t, moderation, api.lastBody())
	assert.Positive(t, b.Spent(), "the chats were charged")
}

// A body the Budget kept and refused goes back, and the request's Body is
// closed, as for any refusal.
func TestBudgetClosesABodyItKeptAndRefused(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: 1, Prices: ExamplePrices()})
	req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", bytes.NewReader(benchBody))
	require.NoError(t, err)
	body := &closeCounter{Reader: req.Body} // GetBody stays http.NewRequest's
	req.Body = body
	_, err = b.Wrap(cannedTransport{openAIJSON}).RoundTrip(req)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.Positive(t, body.closed)
}

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error {
	c.closed++
	return nil
}

// A kept body is read as readAtMost reads a body, whether the body writes
// itself (io.WriterTo, as http.NewRequest's do) or is read: the same
// bytes, and errBodyTooLarge past the limit, with the bytes up to one past
// it.
func TestKeptBodyReadsAsReadAtMost(t *testing.T) {
	for _, n := range []int{0, 1, 9, 10, 11, 100, 5000} {
		for _, limit := range []int64{0, 1, 10, 100, DefaultMaxBufferedBody} {
			body := strings.Repeat("x", n)
			want, wantErr := readAtMost(strings.NewReader(body), nil, limit)
			for _, r := range []io.Reader{strings.NewReader(body), struct{ io.Reader }{strings.NewReader(body)}} {
				req, err := http.NewRequest(http.MethodPost, "http://api.test/", r)
				require.NoError(t, err)
				req.ContentLength = 0 // no length check: only the limit
				k := getKeptBody()
				got, err := k.read(req, limit)
				assert.Equal(t, string(want), string(got), "%d bytes, limit %d, %T", n, limit, r)
				assert.Equal(t, wantErr, err, "%d bytes, limit %d, %T", n, limit, r)
				k.Close()
			}
		}
	}
}
