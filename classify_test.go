package httpguard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
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
