package httpguard

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A 101 Switching Protocols answer (a websocket, such as OpenAI's Realtime
// API) has a body net/http makes writable: websocket clients handed the
// guarded *http.Client (coder/websocket's HTTPClient) require an
// io.ReadWriteCloser and fail without one. With an AttemptTimeout the
// Retrier wraps the body it returns, to end the attempt's context when the
// body is closed; it must keep the body writable.
func TestAttemptTimeoutKeepsTheBodyOfASwitchingProtocolsAnswerWritable(t *testing.T) {
	srv := switchingServer(t, func(conn net.Conn, brw *bufio.ReadWriter) {
		line, _ := brw.ReadString('\n')
		io.WriteString(conn, "echo "+line)
	})
	p := DefaultRetryPolicy()
	p.AttemptTimeout = time.Minute
	retrier, _ := newTestRetrier(t, p)
	c := clientFor(t, retrier)

	req, err := http.NewRequest("GET", srv.URL+"/v1/realtime", nil)
	require.NoError(t, err)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)

	rw, ok := resp.Body.(io.ReadWriteCloser)
	require.True(t, ok, "the body of a 101 is writable, as net/http returns it; got %T", resp.Body)
	_, err = io.WriteString(rw, "hi\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(rw).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo hi\n", line)
}

// A request built by hand may have a nil Header (http.Client gives such a
// request an empty one; net/http's Transport refuses it with an error).
// The Fallback sets a target's headers on its copy of the request: with a
// nil Header that panicked, taking down the caller's goroutine.
func TestFallbackGivesARequestWithoutHeaderTheTargetsHeadersWithoutPanicking(t *testing.T) {
	srv := newServer(t, failFirst(0, http.StatusOK, nil))
	var seen *http.Request
	rig := newFallbackRig(t,
		Target{Name: "primary", BaseURL: srv.URL + "/v1", Header: http.Header{"Authorization": {"Bearer sk-primary"}}},
		Target{Name: "second", BaseURL: "http://127.0.0.1:1/v1"})
	rt := Chain(&http.Transport{}, rig.f, recordLast(&seen))

	u, err := url.Parse(srv.URL + "/v1/chat/completions")
	require.NoError(t, err)
	req := &http.Request{Method: "POST", URL: u, Body: io.NopCloser(strings.NewReader(chatBody("m", 16)))}
	var resp *http.Response
	require.NotPanics(t, func() { resp, err = rt.RoundTrip(req) })
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "Bearer sk-primary", seen.Header.Get("Authorization"))
	assert.Nil(t, req.Header, "the caller's request is left as it was")
}

// slowBody yields n chunks of size bytes, one every gap: an upload over a
// slow link.
type slowBody struct {
	n, size int
	gap     time.Duration
	at      int    // midway is called as n chunks are left to read, if set
	midway  func() // (tests)
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(b.gap)
	if b.midway != nil && b.n == b.at {
		b.midway()
	}
	b.n--
	return copy(p, bytes.Repeat([]byte("a"), min(b.size, len(p)))), nil
}

// AttemptTimeout bounds an attempt's wait for its response headers, as
// net/http's ResponseHeaderTimeout does: the wait after the request is
// written. An upload that takes longer than it to send (an audio file to
// transcribe, over a slow link) is not a server that hangs: cutting it
// makes every attempt fail the same way, and sends the file again each
// time.
func TestAttemptTimeoutDoesNotCutARequestBodyStillBeingSent(t *testing.T) {
	s := newServer(t, failFirst(0, http.StatusOK, nil)) // answers once it has read the body
	p := DefaultRetryPolicy()
	p.MaxRetries = 2
	// The timeout is fired by hand, not by real time (a real 60ms one, after
	// a 160ms upload, also ran out now and then on a loaded machine before
	// the server's answer came): halfway through the upload, the attempt's
	// timer is fired if it is running then, as a timeout shorter than the
	// upload would run out.
	p.AttemptTimeout = time.Hour
	r, _ := newTestRetrier(t, p)
	type armed struct {
		timer *time.Timer
		fire  func()
	}
	var attempt atomic.Pointer[armed]
	r.afterFunc = func(d time.Duration, f func()) *time.Timer {
		tm := time.AfterFunc(d, f)
		attempt.Store(&armed{tm, f})
		return tm
	}
	var cut atomic.Int32
	midway := func() {
		if a := attempt.Load(); a != nil && a.timer.Stop() {
			cut.Add(1)
			a.fire()
		}
	}
	c := clientFor(t, r)

	const chunks, size = 8, 1024
	body := func() io.ReadCloser {
		return io.NopCloser(&slowBody{n: chunks, size: size, gap: time.Millisecond, at: chunks / 2, midway: midway})
	}
	req, err := http.NewRequest("POST", s.URL, body())
	require.NoError(t, err)
	req.GetBody = func() (io.ReadCloser, error) { return body(), nil }
	req.ContentLength = chunks * size
	resp, err := c.Do(req)
	require.NoError(t, err, "the server answers at once after the upload")
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Zero(t, cut.Load(), "the attempt's timer ran while the body was being sent")
	assert.EqualValues(t, 1, s.hits.Load(), "the file is sent once")
}

// The caller's client takes every answer for one of the URL it asked, the
// primary's. A cookie another target sets is that target's (a session, a
// load balancer's, a bot-management token): a client with a cookie jar
// would store it for the primary's host and send it there with every
// later request. The Fallback keeps the caller's cookies from other
// targets; it must keep theirs from the primary too.
func TestFallbackKeepsAnotherTargetsCookiesFromThePrimary(t *testing.T) {
	var cookies []string
	var mu sync.Mutex
	primary := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		mu.Lock()
		cookies = append(cookies, r.Header.Values("Cookie")...)
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	second := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "second-secret", Path: "/"})
		io.WriteString(w, "ok")
	})
	rig := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.URL + "/v1"}, Target{Name: "second", BaseURL: second.URL + "/v1"})
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := clientFor(t, rig.f)
	c.Jar = jar

	for call := 1; call <= 2; call++ {
		resp, err := c.Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, "second", resp.Header.Get(TargetHeader), "call %d", call)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, cookies, "the primary was sent the second target's cookie")
}

// A base URL with a typo ("https:/api.openai.com/v1": one slash) parses,
// with no host, and net/http refuses every request to it before sending
// anything ("http: no Host in request URL"), as it refuses a request
// without Header, one of a scheme it does not speak, one whose method or
// a header or trailer field is not valid HTTP (an API key read from a file
// with its newline). Retrying cannot
// help: the call must fail at once, not after the whole backoff (31s by
// default), the Breaker must not count the caller's mistake as the
// provider's failure, and the RetryError says nothing was sent.
func TestRequestsNetHTTPRefusesBeforeSendingAreNotRetriedNorCounted(t *testing.T) {
	srv := newServer(t, failFirst(0, http.StatusOK, nil))
	for name, req := range map[string]func() *http.Request{
		"no host": func() *http.Request {
			req, err := http.NewRequest("POST", "https:/api.openai.com/v1/chat/completions", strings.NewReader(chatBody("m", 16)))
			require.NoError(t, err)
			return req
		},
		"unsupported scheme": func() *http.Request {
			req, err := http.NewRequest("POST", "ftp://api.openai.com/v1/chat/completions", strings.NewReader(chatBody("m", 16)))
			require.NoError(t, err)
			return req
		},
		"nil header": func() *http.Request {
			u, err := url.Parse(srv.URL + "/v1/chat/completions")
			require.NoError(t, err)
			return &http.Request{Method: "POST", URL: u, Body: io.NopCloser(strings.NewReader(chatBody("m", 16)))}
		},
		"invalid method": func() *http.Request {
			u, err := url.Parse(srv.URL + "/v1/chat/completions")
			require.NoError(t, err)
			return &http.Request{Method: "PO ST", URL: u, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(chatBody("m", 16)))}
		},
		"invalid header value": func() *http.Request {
			req, err := http.NewRequest("POST", srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 16)))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer sk-read-from-a-file\n")
			return req
		},
		"invalid trailer": func() *http.Request {
			req, err := http.NewRequest("POST", srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 16)))
			require.NoError(t, err)
			req.Trailer = http.Header{"X-Checksum\n": nil}
			return req
		},
	} {
		t.Run(name, func(t *testing.T) {
			retrier, slept := newTestRetrier(t, DefaultRetryPolicy())
			br := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 3})
			rt := Chain(&http.Transport{}, retrier, br.b)

			for call := 0; call < 3; call++ {
				_, err := rt.RoundTrip(req())
				var re *RetryError
				require.ErrorAs(t, err, &re)
				assert.Zero(t, re.Attempts, "call %d", call)
				assert.ErrorContains(t, err, "httpguard: retry: nothing sent: ", "call %d", call)
				assert.True(t, IsRefusal(err), "call %d", call)
			}
			assert.Empty(t, slept.all(), "no backoff for a request that can never be sent")
			for _, s := range br.b.Stats() {
				assert.Zero(t, s.ConsecutiveFailures, "circuit %q", s.Key)
				assert.Zero(t, s.Opens, "circuit %q", s.Key)
			}
		})
	}
	assert.Zero(t, srv.hits.Load(), "nothing reached the server")
}
