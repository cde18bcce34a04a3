package httpguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
		r.Body = readThenRest(b, req.Body)
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

// replayableCtx is replayable under the request's context (see
// underContext); on its end it returns req and the context's end.
func replayableCtx(req *http.Request, limit int64) (*http.Request, []byte, error) {
	type read struct {
		req  *http.Request
		body []byte
		err  error
	}
	r, err := underContext(req.Context(), req.Body, false, func() read {
		r, b, err := replayable(req, limit)
		return read{r, b, err}
	})
	if err != nil {
		return req, nil, err
	}
	return r.req, r.body, r.err
}

// underContext returns what read, which reads body, returns, or the end of
// ctx, should it come first: a layer must not outwait its caller, and a
// body not in memory (an io.Pipe an upload is written into) may block a
// Read as long as its writer likes. Such a body is read by a goroutine of
// its own, and closed at the context's end, as net/http closes a body it
// is writing when the request's context ends. With settle set it then
// waits for read to return (a pipe's Read returns once closed): for a
// body that rewinds a reader its GetBody's next copy rewinds too
// (openai-go's), which nothing may read once underContext returns.
func underContext[T any](ctx context.Context, body io.Closer, settle bool, read func() T) (T, error) {
	rc, _ := body.(io.ReadCloser)
	if _, ok := inMemory(rc); ok || ctx.Done() == nil {
		return read(), nil
	}
	done := make(chan T, 1)
	go func() { done <- read() }()
	select {
	case v := <-done:
		return v, nil
	case <-ctx.Done():
		body.Close() // ends a Read of a pipe, and with it the goroutine
		if settle {
			<-done
		}
		var zero T
		return zero, contextEnd(ctx)
	}
}

// errNoBody is what a GetBody that returns neither a body nor an error
// reports through callGetBody: nothing could read its nil reader.
var errNoBody = errors.New("GetBody returned neither a body nor an error")

// callGetBody calls getBody, a request's GetBody, and turns a nil body
// without an error, which breaks GetBody's contract, into errNoBody.
func callGetBody(getBody func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	rc, err := getBody()
	if rc == nil && err == nil {
		err = errNoBody
	}
	return rc, err
}

// readGetBody reads a fresh copy of req's body from req.GetBody into buf,
// growing it as needed, with replayable's limit and length check. A nil
// buf means a new slice sized by req.ContentLength. The bytes are buf's
// storage when it is large enough: a caller that reuses buf must be done
// with them.
func readGetBody(req *http.Request, limit int64, buf []byte) ([]byte, error) {
	rc, err := callGetBody(req.GetBody)
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
// means unknown, as it does to net/http. It is small enough to inline: the
// error is made apart, in lengthMismatch.
func checkLength(contentLength, n int64) error {
	if contentLength > 0 && n != contentLength {
		return lengthMismatch(contentLength, n)
	}
	return nil
}

// lengthMismatch is checkLength's error.
func lengthMismatch(contentLength, n int64) error {
	return fmt.Errorf("http: ContentLength=%d with Body length %d", contentLength, n)
}

// lengthError returns checkLength's error for a body read afresh from
// req.GetBody, or nil when the length is right or cannot be known; longer
// reports a body longer than declared. It is for error paths: net/http
// refuses such a body, but may report the connection it closed over it
// instead, an error worth retrying.
func lengthError(req *http.Request) (longer bool, err error) {
	if req.GetBody == nil || req.ContentLength <= 0 {
		return false, nil
	}
	rc, err := callGetBody(req.GetBody)
	if err != nil {
		return false, nil
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil {
		return false, nil
	}
	return n > req.ContentLength, checkLength(req.ContentLength, n)
}

// freshGetBody reports whether getBody is one that http.NewRequest or
// setBody sets, which hands out a new reader over the body's bytes each
// time, so that reading a copy leaves every other as it was. Any other
// GetBody may rewind and hand out the very reader the Body reads (see
// sentBody). Funcs compare by their code, as net/http recognises its
// in-memory bodies by their types.
func freshGetBody(getBody func() (io.ReadCloser, error)) bool {
	p, fresh := reflect.ValueOf(getBody).Pointer(), &freshGetBodies
	return p == fresh[0] || p == fresh[1] || p == fresh[2] || p == fresh[3] || p == fresh[4]
}

// freshGetBodies is the code of the GetBody funcs http.NewRequest sets for
// a *bytes.Buffer, *bytes.Reader and *strings.Reader body, setBody's, and
// the one a Retrier sends down over such a GetBody (see resendGate).
var freshGetBodies = func() (code [5]uintptr) {
	code[4] = reflect.ValueOf((&resendGate{}).getFresh).Pointer()
	bodies := []io.Reader{bytes.NewBufferString("x"), bytes.NewReader([]byte("x")), strings.NewReader("x"), nil}
	for i, body := range bodies {
		req, err := http.NewRequest(http.MethodPost, "http://localhost/", body)
		if err != nil {
			continue
		}
		if body == nil {
			setBody(req, []byte("x"))
		}
		if req.GetBody != nil {
			code[i] = reflect.ValueOf(req.GetBody).Pointer()
		}
	}
	return code
}()

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
	return appendAtMost(r, buf[:0], limit)
}

// appendAtMost is readAtMost appending to buf, whose bytes count toward
// limit: the rest of a body whose start was read.
func appendAtMost(r io.Reader, buf []byte, limit int64) ([]byte, error) {
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

// readThenRest returns a body that reads b, what was read of body, then
// the rest of body, and closes body.
func readThenRest(b []byte, body io.ReadCloser) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), body), body}
}

// contentEncoding returns the Content-Encoding of a request sent with
// the header h as a server reads it: every value, under any spelling of
// the name (a header built by hand may hold "content-encoding", which
// net/http sends as it is written), joined by commas.
func contentEncoding(h http.Header) string {
	var values []string
	for name, v := range h {
		if strings.EqualFold(name, "Content-Encoding") {
			values = append(values, v...)
		}
	}
	return strings.Join(values, ",")
}

// unencoded reports whether a body with the Content-Encoding enc is sent
// as it is: enc is empty or identity.
func unencoded(enc string) bool {
	enc = strings.TrimSpace(enc)
	return enc == "" || strings.EqualFold(enc, "identity")
}

// gzipped reports whether a body with the Content-Encoding enc is gzip
// (or x-gzip, its old name), once.
func gzipped(enc string) bool {
	enc = strings.TrimSpace(enc)
	return strings.EqualFold(enc, "gzip") || strings.EqualFold(enc, "x-gzip")
}

// boundedReader reads r, failing with errBodyTooLarge once more than n
// bytes came: a gzip body's decompressed bytes, which a small body may
// make many of.
type boundedReader struct {
	r io.Reader
	n int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n < 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.n+1 {
		p = p[:b.n+1]
	}
	n, err := b.r.Read(p)
	if b.n -= int64(n); b.n < 0 {
		return n, errBodyTooLarge
	}
	return n, err
}

// sourceReader reads a request body or its copy: it counts the bytes
// read, and keeps the first error other than io.EOF, the body's own, from
// the errors of a decompressor or parser reading it.
type sourceReader struct {
	r   io.Reader
	n   int64
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
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

// keptBodies holds the buffers of keptBodys.
var keptBodies = sync.Pool{New: func() any { return new(keptBody) }}

// keptBody is a request body read whole, from the request's own Body, into
// a buffer of keptBodies, and sent from there: for a body whose GetBody is
// http.NewRequest's (see freshGetBody), reading the Body itself and
// sending what was read spares the GetBody copy a layer would otherwise
// read and throw away (two allocations). A rewindingBody sends it (see
// keep).
type keptBody struct {
	b     []byte
	off   int   // how much of b was read
	limit int64 // while read: the most b may hold
}

func getKeptBody() *keptBody { return keptBodies.Get().(*keptBody) }

// read reads req.Body whole into k, growing it as needed, and closes it,
// with readGetBody's limit and length check. The bodies http.NewRequest
// makes replayable write themselves whole (io.WriterTo) in one call,
// where reading them takes two.
func (k *keptBody) read(req *http.Request, limit int64) ([]byte, error) {
	var err error
	if w, ok := req.Body.(io.WriterTo); ok {
		k.b, k.limit = k.b[:0], limit
		_, err = w.WriteTo(k)
	} else {
		k.b, err = readAtMost(req.Body, k.b, limit)
	}
	req.Body.Close()
	if err == nil {
		err = checkLength(req.ContentLength, int64(len(k.b)))
	}
	return k.b, err
}

// Write appends p to k while it is read (see read), as readAtMost does:
// failing with errBodyTooLarge once more than k.limit bytes came, the
// first of them kept.
func (k *keptBody) Write(p []byte) (int, error) {
	if left := k.limit - int64(len(k.b)); int64(len(p)) > left {
		k.b = append(k.b, p[:left+1]...)
		return int(left + 1), errBodyTooLarge
	}
	k.b = append(k.b, p...)
	return len(p), nil
}

// Read reads k's bytes. The last of them come with io.EOF, as io.Reader
// allows: a reader of the whole body (net/http's, a server's io.ReadFull)
// then needs no further Read, under b.mu, only to learn of the end.
func (k *keptBody) Read(p []byte) (int, error) {
	if k.off >= len(k.b) {
		return 0, io.EOF
	}
	n := copy(p, k.b[k.off:])
	k.off += n
	if k.off == len(k.b) {
		return n, io.EOF
	}
	return n, nil
}

// Close gives k's buffer back for another body, unless it grew past
// maxPooledBody: nothing may read k after.
func (k *keptBody) Close() error {
	if cap(k.b) <= maxPooledBody {
		k.b, k.off = k.b[:0], 0
		keptBodies.Put(k)
	}
	return nil
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
// rewindingBody reads a fresh copy from its first byte (partial). A
// layer that read the Body itself sends the bytes it kept (see keep).
//
// A request body must allow Close concurrently with Read (HTTP/2 closes it
// from a goroutine of its own): mu guards swapping and closing the reader.
// Once it reads the fresh copy, the request's Body is closed only when this
// body is closed and no Read of it is under way, so that a Retrier above
// (see sentBody) does not call GetBody while the copy is still read.
type rewindingBody struct {
	mu      sync.Mutex
	rc      io.ReadCloser                 // the request's Body, then the fresh copy
	getBody func() (io.ReadCloser, error) // nil once a byte came or the copy is open
	use     bodyUse                       // replaced: the request's Body, once rc is the copy
	partial bool                          // the GetBody copy was read in part: read a fresh one at once
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

// keep makes r, whose Body was read whole into k (and closed), send k
// through b. b reads k under mu, so that its Close, which gives k's buffer
// back, waits for a Read under way, and no Read follows it.
func (b *rewindingBody) keep(r *http.Request, k *keptBody) {
	b.rc = k
	r.Body = b
}

func (b *rewindingBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if k, ok := b.rc.(*keptBody); ok {
		n, err := b.readKept(k, p)
		b.mu.Unlock()
		return n, err
	}
	rc, getBody, closed := b.rc, b.getBody, b.use.closed
	copied := b.use.replaced != nil && b.use.start()
	b.mu.Unlock()
	switch {
	case closed:
		return 0, http.ErrBodyReadAfterClose
	case copied:
		return b.readCopy(rc, p)
	}
	// The request's Body counts its own Reads, when it must (sentBody).
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
	fresh, err := b.openCopy(rc, getBody)
	if err != nil {
		return 0, err
	}
	return b.readCopy(fresh, p)
}

// readKept reads k, the body b keeps (see keep). b.mu is held.
func (b *rewindingBody) readKept(k *keptBody, p []byte) (int, error) {
	if b.use.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return k.Read(p)
}

// openCopy opens a fresh GetBody copy to read in place of rc, the
// request's Body, and begins a Read of it. GetBody runs under mu, so that a
// Close either comes first (and no copy is opened) or finds the copy to
// close.
func (b *rewindingBody) openCopy(rc io.Closer, getBody func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.use.closed {
		return nil, http.ErrBodyReadAfterClose
	}
	fresh, err := callGetBody(getBody)
	if err != nil {
		return nil, fmt.Errorf("GetBody: %w", err)
	}
	b.rc, b.getBody, b.use.replaced = fresh, nil, rc
	b.use.start() // not closed: mu is held
	return fresh, nil
}

// readCopy reads the GetBody copy, in a Read b.use counts.
func (b *rewindingBody) readCopy(rc io.Reader, p []byte) (int, error) {
	n, err := rc.Read(p)
	endUse(&b.mu, &b.use)
	return n, err
}

// Close closes the body read, and returns nil even when the caller's
// body's Close fails: net/http's HTTP/1 transport closes a request body
// once it has written it, and reports a Close error as the write's, after
// the body went out whole; the Budget, which counts a write by that
// report (see budgetAttempt.wroteRequest), would release an attempt the
// server read whole, and a Retrier would send it again.
func (b *rewindingBody) Close() error {
	b.mu.Lock()
	rc, first := b.rc, b.use.close()
	var replaced io.Closer
	if b.use.replaced != nil {
		replaced = b.use.release()
	}
	b.mu.Unlock()
	if !first {
		return nil
	}
	rc.Close()
	if replaced != nil {
		replaced.Close()
	}
	return nil
}

// bodyUse counts the Reads of a request body under way, and tells when the
// last of them ends once the body is closed: from then on nothing reads
// through the body. Close alone does not tell it: HTTP/2 closes a request
// body from a goroutine of its own while its writer may be in a Read. Its
// owner's mutex guards it.
type bodyUse struct {
	busy   int32 // Reads under way
	closed bool
	// replaced, when set, is the request body this one reads a GetBody copy
	// in place of: release hands it over to be closed once this body is
	// done, so that it too is done only when nothing reads the copy. Only
	// the Reads of the copy need counting: the body replaced counts its own.
	replaced io.Closer
}

// start begins a Read, or reports false once the body is closed.
func (u *bodyUse) start() bool {
	if u.closed {
		return false
	}
	u.busy++
	return true
}

// close marks the body closed, or reports false when it was before.
func (u *bodyUse) close() bool {
	first := !u.closed
	u.closed = true
	return first
}

// end ends a Read, and reports whether that left the body done.
func (u *bodyUse) end() bool {
	u.busy--
	return u.done()
}

// done reports whether the body is closed with nothing under way.
func (u *bodyUse) done() bool { return u.closed && u.busy == 0 }

// release returns, once the body is done, the body it replaced, to close
// (without the owner's mutex held); nil before, and after the first time.
func (u *bodyUse) release() io.Closer {
	if !u.done() {
		return nil
	}
	r := u.replaced
	u.replaced = nil
	return r
}

// endUse ends a Read of the body u counts, guarded by mu, and closes the
// body it replaced once that left it done.
func endUse(mu *sync.Mutex, u *bodyUse) {
	mu.Lock()
	u.busy--
	replaced := u.release()
	mu.Unlock()
	if replaced != nil {
		replaced.Close()
	}
}

// maxBodyWait bounds how long a Retrier waits, before an attempt's retry,
// for the transport below to be done with the attempt's body. net/http is
// done within about 50ms of the answer read (it then closes an HTTP/1
// connection whose write has not ended; HTTP/2 resets the stream): a body
// still read long after is a transport that does not close it.
const maxBodyWait = 5 * time.Second

// errBodyStillRead ends a request whose retry would have to read the
// caller's body while the transport below still reads it, when the
// Retrier kept no whole answer to return instead (see Retrier.keep).
var errBodyStillRead = fmt.Errorf("httpguard: the transport below had not closed the request body %v after the attempt ended "+
	"(a layer below that replaces a request's Body must close the one it replaced, as http.RoundTripper requires); "+
	"a retry could read it while it is still read, so none is sent", maxBodyWait)

// sentBody is the Body of an attempt that a Retrier sends, over the
// caller's Body or a GetBody copy. A transport may go on reading a request
// body after its RoundTrip returned (net/http writes it while the server
// reads, after an early answer such as a 503 or 413, and closes it when
// done, perhaps from another goroutine), and some SDKs' GetBody rewinds and
// returns the very reader their Body reads (openai-go and anthropic-sdk-go,
// for a *bytes.Reader): the next attempt's GetBody would race that read and
// send what it left. So the Retrier waits, before it calls GetBody again,
// until the body is closed and no Read of it is under way, as net/http
// tracks its own bodies before it rewinds one. A Read after Close fails.
type sentBody struct {
	rc   io.ReadCloser
	mu   sync.Mutex
	use  bodyUse
	idle chan struct{} // made by a waiter; closed once the body is done
	err  error         // set when a wait gave up for good
	gate *resendGate   // when set, told once the body is sent
}

func (b *sentBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	ok := b.use.start()
	b.mu.Unlock()
	if !ok {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.rc.Read(p)
	if n > 0 && b.gate != nil {
		b.gate.sent.Store(true)
	}
	b.end()
	return n, err
}

func (b *sentBody) Close() error {
	if b.gate != nil {
		b.gate.sent.Store(true)
	}
	b.mu.Lock()
	first := b.use.close()
	if first {
		b.use.busy++ // the caller's body is not done until its Close returns
	}
	b.mu.Unlock()
	if !first {
		return nil
	}
	err := b.rc.Close()
	b.end()
	return err
}

// end ends a Read or the Close, waking a waiter when that leaves the body
// done.
func (b *sentBody) end() {
	b.mu.Lock()
	if b.use.end() && b.idle != nil {
		close(b.idle)
	}
	b.mu.Unlock()
}

// wait returns nil once the body is closed and no Read of it is under way;
// or the cause of ctx's end; or, after maxBodyWait (from afterFunc),
// errBodyStillRead, which it then returns at once ever after.
func (b *sentBody) wait(ctx context.Context, afterFunc func(time.Duration, func()) *time.Timer) error {
	idle, err := b.waiting()
	if idle == nil {
		return err
	}
	expired := make(chan struct{})
	t := afterFunc(maxBodyWait, func() { close(expired) })
	defer t.Stop()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-expired:
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.use.done() {
			return nil
		}
		b.err = errBodyStillRead
		return b.err
	}
}

// waiting returns a channel closed once the body is done, or nil and what
// wait returns at once.
func (b *sentBody) waiting() (chan struct{}, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.use.done():
		return nil, nil
	case b.err != nil:
		return nil, b.err
	case b.idle == nil:
		b.idle = make(chan struct{})
	}
	return b.idle, nil
}

// errSentBelow is the error a Retrier's attempt, or a request a Limiter
// sent down (see sendBounded), gives the transport below for sending it
// again on its own (see resendGate).
var errSentBelow = errors.New("httpguard: the transport below would have sent the request again on its own " +
	"(its stream was reset or its connection broke after it was sent); a Retrier sends it again when its policy and retry budget allow")

// resendGate is the GetBody a Retrier sends each attempt down with, over
// the request's own: it hands out the request's body, for the layers below
// to read, until the attempt's Body is sent (a byte of it read; or, for a
// tracked body, see sentBody, closed), and fails from then on. net/http
// sends a request again on its own, from GetBody, when its HTTP/2 stream
// is reset with REFUSED_STREAM (up to seven times, waiting up to 32s
// between them, golang/go#47635) or PROTOCOL_ERROR (on a new connection
// each time, at once and without end), or its connection gets a GOAWAY:
// below the Retrier, such sends would escape its MaxRetries, its waits and
// its retry budget, and an overloaded server that resets every stream
// would get thousands of requests a second. The attempt fails instead, and
// the Retrier retries it as any other transport error.
//
// An attempt whose body is not tracked keeps the Body it was given, an
// in-memory reader that net/http writes with the request's headers (it
// flushes the headers first for any other body): the gate reads how much
// of it is left, which net/http changes only before it calls GetBody
// (it rewinds a body once its writer is done).
type resendGate struct {
	getBody func() (io.ReadCloser, error) // the request's GetBody
	sent    atomic.Bool                   // set by a tracked body (sentBody)
	unread  interface{ Len() int }        // the untracked Body's reader, if any
	size    int                           // its Len when sent down
}

// get is the gate's GetBody over a GetBody that may hand out the very
// reader the Body reads.
func (g *resendGate) get() (io.ReadCloser, error) {
	if g.sent.Load() || g.unread != nil && g.unread.Len() < g.size {
		return nil, errSentBelow
	}
	return callGetBody(g.getBody)
}

// getFresh is get over a GetBody that hands out a new reader each time
// (freshGetBody), which makes it one too: its code tells them apart.
func (g *resendGate) getFresh() (io.ReadCloser, error) { return g.get() }

// gatedGetBody reports whether getBody already keeps net/http from sending
// its request again on its own once sent: a resendGate's, or the one a
// Budget sends a priced attempt down with (see budgetAttempt.sendOnce).
func gatedGetBody(getBody func() (io.ReadCloser, error)) bool {
	p := reflect.ValueOf(getBody).Pointer()
	return p == gateCodes[0] || p == gateCodes[1] || p == gateCodes[2]
}

// gateCodes is the code of the GetBody funcs gatedGetBody knows.
var gateCodes = [3]uintptr{
	reflect.ValueOf((&resendGate{}).get).Pointer(),
	reflect.ValueOf((&resendGate{}).getFresh).Pointer(),
	sendOnceCode(),
}

// inMemory returns the reader of a body net/http writes with the request's
// headers (see isKnownInMemoryReader in net/http), and how much of it is
// left to read.
func inMemory(body io.ReadCloser) (interface{ Len() int }, bool) {
	t := reflect.TypeOf(body)
	if t != nopCloserTypes[0] && t != nopCloserTypes[1] {
		return nil, false
	}
	switch r := reflect.ValueOf(body).Field(0).Interface().(type) {
	case *bytes.Reader:
		return r, true
	case *strings.Reader:
		return r, true
	case *bytes.Buffer:
		return r, true
	}
	return nil, false
}

// nopCloserTypes are the types io.NopCloser returns.
var nopCloserTypes = [2]reflect.Type{
	reflect.TypeOf(io.NopCloser(strings.NewReader(""))),    // an io.WriterTo
	reflect.TypeOf(io.NopCloser(struct{ io.Reader }{nil})), // not one
}

func closeRequestBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
}
