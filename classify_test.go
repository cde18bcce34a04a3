package httpguard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultClassifierOnTransportErrors(t *testing.T) {
	opErr := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for name, c := range map[string]struct {
		err   error
		retry bool
	}{
		"connection refused": {opErr(syscall.ECONNREFUSED), true},
		"connection reset":   {opErr(syscall.ECONNRESET), true},
		"unexpected EOF":     {io.ErrUnexpectedEOF, true},
		"EOF":                {io.EOF, true},
		"http2 GOAWAY":       {errors.New("http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug=\"\""), true},
		"attempt timeout":    {fmt.Errorf("%w (1s)", ErrAttemptTimeout), true},
		"unknown authority":  {&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, false},
		"too many redirects": {&url.Error{Op: "Get", URL: "http://x", Err: errors.New("stopped after 10 redirects")}, false},
		"unsupported scheme": {errors.New(`unsupported protocol scheme "ftp"`), false},
		"a refusal":          {Refuse(fmt.Errorf("httpguard: limiter: %w", ErrRateLimited)), false},
	} {
		t.Run(name, func(t *testing.T) {
			retry, _ := DefaultClassifier(context.Background(), nil, c.err)
			assert.Equal(t, c.retry, retry)
		})
	}
}

func TestDefaultClassifierNeverRetriesOnceTheCallerIsDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	retry, reason := DefaultClassifier(ctx, nil, opErrReset())
	assert.False(t, retry)
	assert.ErrorIs(t, reason, context.Canceled)
}

func opErrReset() error { return &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET} }

func TestDefaultClassifierOnDNSErrors(t *testing.T) {
	for name, c := range map[string]struct {
		err   *net.DNSError
		retry bool
	}{
		"no such host":           {&net.DNSError{Err: "no such host", Name: "api.test", IsNotFound: true}, false},
		"server misbehaving":     {&net.DNSError{Err: "server misbehaving", Name: "api.test", IsTemporary: true}, true},
		"timeout":                {&net.DNSError{Err: "i/o timeout", Name: "api.test", IsTimeout: true}, true},
		"not found, temporarily": {&net.DNSError{Err: "no such host", Name: "api.test", IsNotFound: true, IsTemporary: true}, true},
	} {
		t.Run(name, func(t *testing.T) {
			err := &net.OpError{Op: "dial", Net: "tcp", Err: c.err}
			retry, _ := DefaultClassifier(context.Background(), nil, err)
			assert.Equal(t, c.retry, retry)
		})
	}
}

// dnsServer answers every DNS query it receives on a loopback UDP port
// with rcode and no records, and returns its address.
func dnsServer(t *testing.T, rcode byte) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			// The question: labels up to a zero byte, then type and class.
			end := 12
			for end < n && buf[end] != 0 {
				end += int(buf[end]) + 1
			}
			end += 5
			if end > n {
				continue
			}
			resp := append([]byte(nil), buf[:end]...)
			resp[2] = 0x80 | buf[2]&0x79 // a response, with the query's opcode and RD
			resp[3] = 0x80 | rcode       // recursion available
			copy(resp[4:12], []byte{0, 1, 0, 0, 0, 0, 0, 0})
			pc.WriteTo(resp, addr)
		}
	}()
	return pc.LocalAddr().String()
}

// resolvingClient is a client whose transport resolves names with the DNS
// server at addr.
func resolvingClient(t *testing.T, addr string, layers ...Layer) *http.Client {
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
	tr := &http.Transport{DialContext: (&net.Dialer{Resolver: res}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: Chain(tr, layers...)}
}

// A name that does not exist is not retried; a temporary DNS failure is.
func TestDNSFailuresAreRetriedOnlyWhenTemporary(t *testing.T) {
	const nxdomain, servfail = 3, 2
	for name, c := range map[string]struct {
		rcode    byte
		attempts int
		check    func(*net.DNSError) bool
	}{
		"no such name":       {nxdomain, 1, func(e *net.DNSError) bool { return e.IsNotFound }},
		"server misbehaving": {servfail, 3, func(e *net.DNSError) bool { return e.IsTemporary }},
	} {
		t.Run(name, func(t *testing.T) {
			p := DefaultRetryPolicy()
			p.MaxRetries = 2
			r, sl := newTestRetrier(t, p)
			_, err := resolvingClient(t, dnsServer(t, c.rcode), r).Get("http://api.httpguard.invalid/")
			var dns *net.DNSError
			require.ErrorAs(t, err, &dns)
			assert.True(t, c.check(dns), "%+v", dns)
			var re *RetryError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, c.attempts, re.Attempts)
			assert.Len(t, sl.all(), c.attempts-1)
		})
	}
}

func TestDefaultClassifierNeverRetriesA2xx(t *testing.T) {
	for _, status := range []int{200, 201, 204, 299} {
		resp := &http.Response{StatusCode: status, Header: http.Header{"X-Should-Retry": {"true"}}, Body: http.NoBody}
		retry, _ := DefaultClassifier(context.Background(), resp, nil)
		assert.False(t, retry, "status %d with x-should-retry: true", status)
	}
}
