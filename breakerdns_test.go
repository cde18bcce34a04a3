package httpguard

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A primary whose host name does not exist (a lapsed domain, a broken DNS
// zone) cannot be reached by this client: the Retrier does not ask again,
// and the Fallback moves on, but the Breaker counted nothing, so that its
// circuit never opened and every request looked the name up again before
// it moved (20 requests, 20 lookups, each a round trip to the resolver).
// The Breaker counts it a failure, as a connection refused: after 5 the
// circuit opens and the requests go to the second target at once.
func TestBreakerOpensOnAHostNameThatDoesNotExist(t *testing.T) {
	second := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, `{"choices":[]}`) })
	const primaryHost = "api.primary.invalid"
	resolver := dnsServer(t, 3) // NXDOMAIN to every question, on loopback
	dialer := &net.Dialer{Resolver: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", resolver)
	}}}
	var lookups atomic.Int32
	base := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, _ := net.SplitHostPort(addr); host == primaryHost {
			lookups.Add(1)
		}
		return dialer.DialContext(ctx, network, addr)
	}}
	t.Cleanup(base.CloseIdleConnections)
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: "http://" + primaryHost + "/v1"},
		Target{Name: "second", BaseURL: second.URL + "/v1", Header: http.Header{"Authorization": {secondKey}}})
	retrier, _ := newTestRetrier(t, RetryPolicy{MaxRetries: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	br := newBreakerRig(t, BreakerConfig{})
	c := &http.Client{Transport: Chain(base, r.f, retrier, br.b)}

	for range 20 {
		resp, err := c.Post("http://"+primaryHost+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, "second", resp.Header.Get(TargetHeader))
	}

	assert.Equal(t, int32(DefaultConsecutiveFailures), lookups.Load(), "the name is looked up until the circuit opens")
	s, ok := br.b.StatsOf(primaryHost + " m")
	require.True(t, ok)
	assert.Equal(t, CircuitOpen, s.State)
	assert.Equal(t, int64(20-DefaultConsecutiveFailures), s.Refused)
}

// What the Breaker counts of DNS errors: a name that does not exist, or
// cannot be resolved now, is the provider out of reach; an error
// net/http finds in the request itself says nothing.
func TestBreakerJudgesDNSErrors(t *testing.T) {
	ctx := context.Background()
	for name, c := range map[string]struct {
		err  error
		want outcome
	}{
		"no such host":       {&net.DNSError{Err: "no such host", Name: "api.test", IsNotFound: true}, outcomeFailure},
		"server misbehaving": {&net.DNSError{Err: "server misbehaving", Name: "api.test", IsTemporary: true}, outcomeFailure},
		"timeout":            {&net.DNSError{Err: "i/o timeout", Name: "api.test", IsTimeout: true}, outcomeFailure},
	} {
		err := &net.OpError{Op: "dial", Net: "tcp", Err: c.err}
		assert.Equal(t, c.want, judgeError(ctx, err), name)
	}
	assert.Equal(t, outcomeIgnored, judgeError(ctx, Refuse(&net.DNSError{Err: "no such host", IsNotFound: true})), "refused below, unsent")
}
