package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShutdownLetsAStreamInFlightFinishAndSettle(t *testing.T) {
	up, release := heldStream(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}},
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	br := r.openStream(t)

	r.stop() // SIGTERM
	addr := strings.TrimPrefix(r.URL, "http://")
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, time.Millisecond, "no new connections once shutting down")
	select {
	case err := <-r.served:
		t.Fatalf("Serve returned with a stream in flight: %v", err)
	case <-time.After(10 * time.Millisecond):
	}

	close(release)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Contains(t, string(rest), "[DONE]", "the stream finished")
	require.NoError(t, r.wait())
	want := testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: 7, OutputTokens: 2})
	assert.Equal(t, want, r.budget.Spent(), "settled before Serve returned")
	assert.Equal(t, httpguard.Dollar-want, r.budget.Remaining(), "nothing left held")
}

func TestShutdownCutsWhatOutlivesTheGraceAndChargesIt(t *testing.T) {
	up, _ := heldStream(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}},
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}, ShutdownGrace: 20 * time.Millisecond})
	br := r.openStream(t)

	r.stop()
	require.NoError(t, r.wait())
	_, err := io.ReadAll(br)
	assert.Error(t, err, "the stream was cut")
	assert.Positive(t, r.budget.Spent(), "a cut stream is charged what it may have cost")
	assert.Equal(t, httpguard.Dollar, r.budget.Spent()+r.budget.Remaining(), "nothing left held")
}

// Was a bug: when the grace ended, Serve closed the server and then waited
// for the requests that had joined its count of requests in flight, which
// a request joins only once its handler has started. A request the server
// had read but whose handler had not yet joined was not waited for: Serve
// returned (and the command closed the proxy and its stores) while it went
// on to the upstream and the budget. Its handler is held here at the first
// thing it does, setting the body's read deadline.
func TestShutdownWaitsForARequestWhoseHandlerHasJustStarted(t *testing.T) {
	up := faultServer(t, httpguardtest.Config{})
	p, err := New(Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.BaseURL())}},
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar},
		BodyReadTimeout: time.Hour, ShutdownGrace: time.Nanosecond, Getenv: func(string) string { return "" }})
	require.NoError(t, err)
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gl := &gatedListener{Listener: ln, held: make(chan struct{}), release: make(chan struct{})}
	release := sync.OnceFunc(func() { close(gl.release) })
	defer release()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, gl) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		resp, err := client.Post("http://"+ln.Addr().String()+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	defer func() { <-answered }()
	<-gl.held

	stop()
	select {
	case <-served:
		t.Fatal("Serve returned while a request it had read was still being handled")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	require.NoError(t, <-served)
	assert.Equal(t, httpguard.Dollar, p.budget.Spent()+p.budget.Remaining(), "settled before Serve returned")
}

// gatedListener's connections hold every read deadline set more than half
// an hour ahead (ServeHTTP's, with a BodyReadTimeout of an hour) until
// release is closed, having closed held.
type gatedListener struct {
	net.Listener
	held, release chan struct{}
	once          sync.Once
}

func (l *gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, l: l}, nil
}

type gatedConn struct {
	net.Conn
	l *gatedListener
}

func (c *gatedConn) SetReadDeadline(t time.Time) error {
	if time.Until(t) > 30*time.Minute {
		c.l.once.Do(func() { close(c.l.held) })
		<-c.l.release
	}
	return c.Conn.SetReadDeadline(t)
}

// Cut ends the grace at once, as a second SIGINT or SIGTERM does in the
// command, and Serve still returns only once the cut stream is settled;
// called before Serve's context ends, it stops Serve with no grace.
func TestCutEndsTheGraceAtOnceAndTheCutStreamIsCharged(t *testing.T) {
	for _, first := range []string{"context", "Cut"} {
		t.Run("first "+first, func(t *testing.T) {
			up, _ := heldStream(t)
			r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}},
				Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}, ShutdownGrace: time.Hour})
			br := r.openStream(t)

			if first == "context" {
				r.stop()
				select {
				case err := <-r.served:
					t.Fatalf("Serve returned with a stream in flight and an hour of grace: %v", err)
				case <-time.After(10 * time.Millisecond):
				}
			}
			r.Cut()
			require.NoError(t, r.wait())
			_, err := io.ReadAll(br)
			assert.Error(t, err, "the stream was cut")
			assert.Positive(t, r.budget.Spent(), "a cut stream is charged what it may have cost")
			assert.Equal(t, httpguard.Dollar, r.budget.Spent()+r.budget.Remaining(), "nothing left held")
		})
	}
}
