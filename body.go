package httpguard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
)

// DefaultMaxBufferedBody (4 MiB) is how many bytes of a request body a
// layer buffers in memory so that it can send the body again or read it:
// the default of RetryPolicy.MaxBufferedBody, LimitConfig.MaxBufferedBody
// and BudgetConfig.MaxBufferedBody.
const DefaultMaxBufferedBody = 4 << 20

// errBodyTooLarge reports a body that exceeds the buffering limit.
var errBodyTooLarge = errors.New("httpguard: request body exceeds the buffering limit")

// replayable makes req's body readable more than once, and returns the body's
// bytes when it fits in limit.
//
// When req has no body it is returned as is, with a nil slice. When GetBody
// is set, the bytes come from a fresh GetBody reader and req is returned
// as is. Otherwise the body is read into memory and a shallow copy of req is
// returned whose Body and GetBody replay those bytes; the caller's req is not
// changed, though its Body has been consumed (and closed).
//
// A body whose length differs from a positive req.ContentLength is an
// error, the one net/http would return, since sending it whole or cut to
// the declared length would send something the caller did not mean.
//
// When the body is longer than limit, replayable returns errBodyTooLarge and
// a copy of req whose Body yields the whole original body (the bytes read so
// far followed by the rest) exactly once, with GetBody nil: it can still be
// sent, but not rewound.
func replayable(req *http.Request, limit int64) (*http.Request, []byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil, nil
	}
	if req.GetBody != nil {
		b, err := readGetBody(req, limit, nil)
		return req, b, err
	}
	b, err := readAtMost(req.Body, sizedBuffer(req.ContentLength, limit), limit)
	r := *req
	if err == errBodyTooLarge {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), req.Body), req.Body}
		r.GetBody = nil
		return &r, nil, err
	}
	req.Body.Close()
	if err == nil {
		err = checkLength(req.ContentLength, int64(len(b)))
	}
	if err != nil {
		return req, nil, err
	}
	setBody(&r, b)
	return &r, b, nil
}

// readGetBody reads a fresh copy of req's body from req.GetBody into buf,
// growing it as needed, with replayable's limit and length check. A nil
// buf means a new slice sized by req.ContentLength. The bytes are buf's
// storage when it is large enough: a caller that reuses buf must be done
// with them.
func readGetBody(req *http.Request, limit int64, buf []byte) ([]byte, error) {
	rc, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	if buf == nil {
		buf = sizedBuffer(req.ContentLength, limit)
	}
	b, err := readAtMost(rc, buf, limit)
	rc.Close()
	if err == nil {
		err = checkLength(req.ContentLength, int64(len(b)))
	}
	return b, err
}

// checkLength returns net/http's error for a body of n bytes whose length
// differs from the one declared; a ContentLength of 0 or less with a body
// means unknown, as it does to net/http.
func checkLength(contentLength, n int64) error {
	if contentLength > 0 && n != contentLength {
		return fmt.Errorf("http: ContentLength=%d with Body length %d", contentLength, n)
	}
	return nil
}

// lengthError returns checkLength's error for a body read afresh from
// req.GetBody, or nil when the length is right or cannot be known. It is
// for error paths: net/http refuses such a body, but may report the
// connection it closed over it instead, an error worth retrying.
func lengthError(req *http.Request) error {
	if req.GetBody == nil || req.ContentLength <= 0 {
		return nil
	}
	rc, err := req.GetBody()
	if err != nil {
		return nil
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil {
		return nil
	}
	return checkLength(req.ContentLength, n)
}

// setBody makes r send b, replayably.
func setBody(r *http.Request, b []byte) {
	r.ContentLength = int64(len(b))
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	if len(b) == 0 {
		r.Body = http.NoBody
	}
}

// sizedBuffer returns an empty slice with room for a body of the declared
// length and the extra byte that confirms its end, so that reading it takes
// one allocation; nil when the length is unknown or over limit. The room
// is at most maxUpFront: a declared length is only a claim, and a client
// that declares megabytes and sends a byte must not hold megabytes (in a
// proxy, one buffer per layer per connection). A longer body grows the
// buffer as its bytes arrive.
func sizedBuffer(contentLength, limit int64) []byte {
	if contentLength <= 0 || contentLength > limit {
		return nil
	}
	return make([]byte, 0, min(contentLength, maxUpFront)+1)
}

// maxUpFront is the most sizedBuffer allocates before a body's bytes
// arrive: above nearly every chat request, well below MaxBufferedBody.
const maxUpFront = 256 << 10

// readAtMost reads r to EOF into buf[:0], growing it as needed, failing with
// errBodyTooLarge (and the bytes read so far) once more than limit bytes
// arrive. It never asks r for more than limit+1 bytes.
func readAtMost(r io.Reader, buf []byte, limit int64) ([]byte, error) {
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 512)
		}
		room := buf[len(buf):cap(buf)]
		// left+1, not limit+1: limit may be math.MaxInt64 ("no limit").
		if left := limit - int64(len(buf)); int64(len(room)) > left {
			room = room[:left+1]
		}
		n, err := r.Read(room)
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, errBodyTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// bodyBuffers holds the buffers a layer reads a request body into when it
// only parses it (it sends GetBody's or the caller's body): their bytes are
// not kept past the parse.
var bodyBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBody is the largest buffer kept in bodyBuffers, so that one huge
// request does not pin its memory.
const maxPooledBody = 64 << 10

// getBodyBuffer returns an empty buffer to read a body into.
func getBodyBuffer() *[]byte { return bodyBuffers.Get().(*[]byte) }

// putBodyBuffer gives back p, whose storage the bytes read, b, now use
// (they may have grown it); a buffer grown past maxPooledBody is dropped.
func putBodyBuffer(p *[]byte, b []byte) {
	if cap(b) <= maxPooledBody {
		*p = b[:0]
		bodyBuffers.Put(p)
	}
}

// rewindingBody is the Body a layer that read a GetBody copy sends in place
// of the request's own: it reads that Body, unless the Body ends before its
// first byte, in which case it reads a fresh copy from GetBody instead.
// Some SDKs' GetBody rewinds and returns the very reader their Body reads
// (openai-go and anthropic-sdk-go, for a *bytes.Reader body): reading a
// GetBody copy empties that Body, and net/http would refuse it
// ("ContentLength=N with Body length 0"). A body that was priced or parsed
// is not empty, so an empty Body is such a reader. A layer that read only
// part of the copy (a prefix to sniff, or up to its buffer's limit) may
// have left such a reader in its middle, where no Read can tell: its
// rewindingBody reads a fresh copy from its first byte (partial).
//
// A request body must allow Close concurrently with Read (HTTP/2 closes it
// from a goroutine of its own): mu guards swapping and closing the reader.
type rewindingBody struct {
	mu      sync.Mutex
	rc      io.ReadCloser                 // the request's Body, then the fresh copy
	getBody func() (io.ReadCloser, error) // nil once a byte came or the copy is open
	closed  bool
	partial bool // the GetBody copy was read in part: read a fresh one at once
}

// withRewindingBody returns a copy of req, whose GetBody copy was just
// read (in part when partial is true), that sends a rewindingBody over
// req's Body: for a layer without a request of its own to hold one (the
// Budget keeps its in the attempt). It is one allocation.
func withRewindingBody(req *http.Request, partial bool) *http.Request {
	c := &struct {
		req  http.Request
		body rewindingBody
	}{req: *req}
	c.body.partial = partial
	c.body.rewind(&c.req)
	return &c.req
}

// rewind makes r, a request whose GetBody copy was read, send a
// rewindingBody b over its Body.
func (b *rewindingBody) rewind(r *http.Request) {
	b.rc, b.getBody = r.Body, r.GetBody
	r.Body = b
}

func (b *rewindingBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	rc, getBody, closed := b.rc, b.getBody, b.closed
	b.mu.Unlock()
	if closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if getBody == nil || !b.partial {
		n, err := rc.Read(p)
		switch {
		case getBody == nil:
			return n, err
		case n > 0 || err != io.EOF:
			if n > 0 {
				b.mu.Lock()
				b.getBody = nil
				b.mu.Unlock()
			}
			return n, err
		}
	}
	fresh, err := getBody()
	if err != nil {
		return 0, fmt.Errorf("GetBody: %w", err)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		fresh.Close()
		return 0, http.ErrBodyReadAfterClose
	}
	b.rc, b.getBody = fresh, nil
	b.mu.Unlock()
	rc.Close()
	return fresh.Read(p)
}

func (b *rewindingBody) Close() error {
	b.mu.Lock()
	rc, first := b.rc, !b.closed
	b.closed = true
	b.mu.Unlock()
	if !first {
		return nil
	}
	return rc.Close()
}
