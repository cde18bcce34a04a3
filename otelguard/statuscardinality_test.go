package otelguard

import (
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// h2StatusServer is a loopback HTTP/2 server (cleartext, prior knowledge)
// that answers the n-th request on a connection with the status status(n),
// written as the :status pseudo-header: net/http's HTTP/2 client takes any
// integer there, where HTTP/1.1 carries three digits.
type h2StatusServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func newH2StatusServer(t *testing.T, status func(n int) string) *h2StatusServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &h2StatusServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				serveH2Statuses(c, status)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *h2StatusServer) url() string { return "http://" + s.ln.Addr().String() }

// writeFrame writes one HTTP/2 frame.
func writeFrame(w io.Writer, typ, flags byte, stream uint32, payload []byte) error {
	var h [9]byte
	h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], stream)
	_, err := w.Write(append(h[:], payload...))
	return err
}

// serveH2Statuses answers every request stream of c with a status and no
// body, until the client closes c.
func serveH2Statuses(c net.Conn, status func(n int) string) {
	preface := make([]byte, len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	if writeFrame(c, 0x4, 0, 0, nil) != nil { // SETTINGS
		return
	}
	n := 0
	for {
		var h [9]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		payload := make([]byte, int(h[0])<<16|int(h[1])<<8|int(h[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		typ, flags, stream := h[3], h[4], binary.BigEndian.Uint32(h[5:])&0x7fffffff
		switch {
		case typ == 0x4 && flags&0x1 == 0: // the client's SETTINGS: acknowledged
			if writeFrame(c, 0x4, 0x1, 0, nil) != nil {
				return
			}
		case typ == 0x1: // a request's HEADERS (a GET: no body)
			v := status(n)
			n++
			// A literal header field without indexing, its name new
			// (RFC 7541 §6.2.2), lengths below 127.
			block := append([]byte{0x00, byte(len(":status"))}, ":status"...)
			block = append(append(block, byte(len(v))), v...)
			if writeFrame(c, 0x1, 0x4|0x1, stream, block) != nil { // END_HEADERS, END_STREAM
				return
			}
		}
	}
}

// series counts the data points of the counter name.
func series(t *testing.T, r *rig, name string) int {
	got := r.collect(t)[name]
	if got == nil {
		return 0
	}
	return len(got.(metricdata.Sum[int64]).DataPoints)
}

// An HTTP/2 server may send any integer as a status: net/http's client
// takes it. Labelled as it came, every status a hostile or broken server
// makes up adds series to httpguard.requests and httpguard.attempts (and a
// reason to retries and switches), without bound. A status no HTTP status
// can be (not three digits) is recorded as one value.
func TestAMadeUpStatusAddsNoSeries(t *testing.T) {
	srv := newH2StatusServer(t, func(n int) string { return strconv.Itoa(1000 + n) })
	m, reader := newMetrics(t)
	r := &rig{reader: reader, m: m}
	base := &http.Transport{Protocols: new(http.Protocols)}
	base.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: httpguard.Chain(base, m.Requests(), m.Attempts())}

	const n = 20
	for range n {
		resp, err := client.Get(srv.url() + "/v1/models")
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.GreaterOrEqual(t, resp.StatusCode, 1000, "the server's status reached the caller as it was sent")
	}

	assert.Equal(t, 1, series(t, r, "httpguard.requests"))
	assert.Equal(t, 1, series(t, r, "httpguard.attempts"))
	assert.Equal(t, "status_invalid", failureReason(123456, nil))
	assert.Equal(t, "status_invalid", failureReason(-3, nil))
	assert.Equal(t, "status_503", failureReason(503, nil))
}

// An HTTP/1.1 server may send any three digits as its status, and
// net/http's client takes them: 600 to 999, which RFC 9110 (section 15)
// says no status is, and statuses in range that no registry lists. Each
// added a series to httpguard.attempts and, past a Fallback's primary, a
// switch reason (800 statuses from one server made 800 attempt series and
// 500 switch reasons). A status neither registered nor one that providers
// and CDNs send besides (529, Cloudflare's 52x) is recorded as one value.
func TestAMadeUpThreeDigitStatusAddsNoSeries(t *testing.T) {
	statuses := []int{600, 742, 999, 460, 487, 512, 577, 299, 333}
	var n atomic.Int64
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(statuses[int(n.Add(1)-1)%len(statuses)])
	}))
	t.Cleanup(bad.Close)
	good := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(good.Close)
	m, reader := newMetrics(t)
	r := &rig{reader: reader, m: m}
	fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{OnSwitch: m.OnSwitch(),
		Targets: []httpguard.Target{{Name: "made-up", BaseURL: bad.URL}, {Name: "good", BaseURL: good.URL}}})
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: httpguard.Chain(base, m.Requests(), fallback, m.Attempts())}

	for range statuses {
		resp, err := client.Get(bad.URL + "/v1/models")
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	require.EqualValues(t, len(statuses), n.Load(), "every status was sent")
	assert.Equal(t, 2, series(t, r, "httpguard.attempts"), "the made-up statuses, and the good target's 200s")
	assert.Equal(t, 2, series(t, r, "httpguard.requests"))
	assert.LessOrEqual(t, series(t, r, "httpguard.fallback.switches"), 1)
	for _, status := range []int{200, 404, 429, 499, 503, 520, 524, 529} {
		assert.Equal(t, status, statusLabel(status), "a status providers send is labelled as it is")
	}
}
