package httpguard

import (
	"bytes"
	"errors"
	"io"
	"net/http"
)

// DefaultMaxBufferedBody is how many bytes of a request body without GetBody
// a layer buffers in memory so that it can send the body again or read it.
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
// When the body is longer than limit, replayable returns errBodyTooLarge and
// a copy of req whose Body yields the whole original body (the bytes read so
// far followed by the rest) exactly once, with GetBody nil: it can still be
// sent, but not rewound.
func replayable(req *http.Request, limit int64) (*http.Request, []byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil, nil
	}
	if req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			return req, nil, err
		}
		b, err := readAtMost(rc, limit)
		rc.Close()
		return req, b, err
	}
	b, err := readAtMost(req.Body, limit)
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
	if err != nil {
		return req, nil, err
	}
	setBody(&r, b)
	return &r, b, nil
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

// readAtMost reads r to EOF, failing with errBodyTooLarge (and the bytes read
// so far) once more than limit bytes arrive.
func readAtMost(r io.Reader, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return buf.Bytes(), err
	}
	if n > limit {
		return buf.Bytes(), errBodyTooLarge
	}
	return buf.Bytes(), nil
}
