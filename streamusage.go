package httpguard

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// This file makes an OpenAI-style stream report its usage when the caller
// did not ask: withStreamUsage adds stream_options.include_usage to the
// request without copying its body, and newUsageChunkStripper hides the
// usage-only chunk the stream then carries, so the caller gets the stream
// it asked for.

// bodyEdit is one change to a request body, made as the body is sent:
// insert goes at offset at, in place of the cut bytes there.
type bodyEdit struct {
	at, cut int64
	was     string // the bytes cut: "null" or "false"
	insert  string
	length  int64 // the edited body's length
}

// maxStreamUsageInsert is the most bytes withStreamUsage adds to a body.
const maxStreamUsageInsert = int64(len(`"stream_options":{"include_usage":true},`))

// withStreamUsage returns the edit that sets stream_options.include_usage
// to true in body, which parseChatRequestFallbacks read into cr and at,
// and whether one is needed: bodies that do not stream, or that already
// ask for usage, need none. Whether the API knows the member is the
// path's to say (see acceptsStreamOptions), not the body's: members of
// Anthropic's (a top-level system, stop_sequences) in a body sent to
// /chat/completions are extras that OpenAI-compatible servers ignore.
// The edit sets the member in the last stream_options object (where every
// decoder reads it): it replaces the value of its last include_usage
// (false or null; a repeated key would be refused by strict decoders), or
// adds the member. It replaces a null stream_options, or adds
// stream_options first in the body; every other byte is sent as it is
// (see apply).
func withStreamUsage(body []byte, cr *chatRequest, at *streamOptionsAt) (bodyEdit, bool) {
	if !cr.Stream || cr.IncludeUsage || at.bodyLen != len(body) || at.bodyLen == 0 {
		return bodyEdit{}, false
	}
	var e bodyEdit
	switch {
	case at.end == 0: // no stream_options
		e.at, e.insert = int64(at.objectStart+1), `"stream_options":{"include_usage":true}`
		if at.members {
			e.insert = `"stream_options":{"include_usage":true},`
		}
	case at.isNull:
		e.at, e.cut, e.was, e.insert = int64(at.start), int64(len("null")), "null", `{"include_usage":true}`
	case at.incEnd > 0: // include_usage false or null: replaced, not repeated (strict decoders refuse duplicate keys)
		e.was = string(body[at.incStart:at.incEnd])
		e.at, e.cut, e.insert = int64(at.incStart), int64(len(e.was)), "true"
	default: // an object: before its '}'
		e.at, e.insert = int64(at.end-1), `"include_usage":true`
		if at.hasMembers {
			e.insert = `,"include_usage":true`
		}
	}
	e.length = int64(len(body)) - e.cut + int64(len(e.insert))
	return e, true
}

// apply makes r send its body with the edit. r.GetBody must give the body
// the edit was made for: each read of the new body (r.Body, opened when
// first read, and each GetBody copy) reads the original from a GetBody copy
// and adds the edit as it passes, so the body is never copied. A request
// without GetBody is left as it is. r.Body, which the new body replaces, is
// closed with it, once no Read of it is under way (see rewindingBody).
func (e *bodyEdit) apply(r *http.Request) {
	if r.GetBody == nil {
		return
	}
	e.applyAs(r, &editedBody{open: r.GetBody, use: bodyUse{replaced: r.Body}})
}

// applyKept is apply for r whose Body holds the very bytes the edit was
// made for (a body the Budget read and priced, see keptBody): r.Body reads
// them, edited, rather than a GetBody copy, which need not hold the same
// bytes when the caller set a Body of its own after http.NewRequest.
func (e *bodyEdit) applyKept(r *http.Request) {
	e.applyAs(r, &editedBody{rc: r.Body})
}

// applyAs makes r send body, which reads r's body with the edit, and its
// GetBody copies with the edit too.
func (e *bodyEdit) applyAs(r *http.Request, body *editedBody) {
	open, edit := r.GetBody, *e
	body.edit = edit
	r.ContentLength = edit.length
	r.Body = body
	r.GetBody = func() (io.ReadCloser, error) {
		rc, err := open()
		if err != nil {
			return nil, err
		}
		return &editedBody{rc: rc, edit: edit}, nil
	}
}

var errBodyChanged = errors.New("httpguard: request body changed between reads of GetBody")

// editedBody is an original body read with an edit: the original up to
// edit.at, then edit.insert (skipping edit.cut bytes of the original), then
// the rest of the original.
//
// A request body must allow Close concurrently with Read (HTTP/2 closes it
// from a goroutine of its own): mu guards opening and closing the original,
// so that a body closed before its first Read never opens one.
type editedBody struct {
	open func() (io.ReadCloser, error) // when rc is nil: opens it
	mu   sync.Mutex
	rc   io.ReadCloser
	use  bodyUse
	edit bodyEdit
	pos  int64 // bytes of the original read
	sent int   // bytes of edit.insert sent
	cut  [len("false")]byte
}

func (b *editedBody) Read(p []byte) (int, error) {
	rc, err := b.original()
	if err != nil {
		return 0, err
	}
	n, err := b.read(rc, p)
	endUse(&b.mu, &b.use)
	return n, err
}

func (b *editedBody) read(rc io.Reader, p []byte) (int, error) {
	switch {
	case b.pos < b.edit.at:
		return b.readOriginal(rc, p[:min(int64(len(p)), b.edit.at-b.pos)])
	case b.sent < len(b.edit.insert):
		return b.readInsert(rc, p)
	}
	return b.readOriginal(rc, p)
}

// original begins a Read: it returns the original body, opening it at the
// first Read, or http.ErrBodyReadAfterClose once the body is closed.
func (b *editedBody) original() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rc == nil && !b.use.closed {
		rc, err := b.open()
		if err != nil {
			return nil, err
		}
		b.rc = rc
	}
	if !b.use.start() {
		return nil, http.ErrBodyReadAfterClose
	}
	return b.rc, nil
}

func (b *editedBody) readOriginal(rc io.Reader, p []byte) (int, error) {
	n, err := rc.Read(p)
	b.pos += int64(n)
	if err == io.EOF && b.pos < b.edit.at+b.edit.cut {
		err = errBodyChanged // shorter than the body edited
	}
	return n, err
}

func (b *editedBody) readInsert(rc io.Reader, p []byte) (int, error) {
	if b.sent == 0 && b.edit.cut > 0 {
		n, err := io.ReadFull(rc, b.cut[:b.edit.cut])
		b.pos += int64(n)
		if err != nil || string(b.cut[:n]) != b.edit.was {
			return 0, errBodyChanged
		}
	}
	n := copy(p, b.edit.insert[b.sent:])
	b.sent += n
	return n, nil
}

// Close closes the body read, and returns nil even when the caller's
// body's Close fails, as rewindingBody.Close does: net/http's HTTP/1
// transport would report that error as the write's, after the body went
// out whole.
func (b *editedBody) Close() error {
	b.mu.Lock()
	rc, first := b.rc, b.use.close()
	replaced := b.use.release()
	b.mu.Unlock()
	if !first {
		return nil
	}
	if rc != nil {
		rc.Close()
	}
	if replaced != nil {
		replaced.Close()
	}
	return nil
}

// maxHeldEvent bounds the event the stripper holds back while deciding on
// it; a longer event passes on as it is.
const maxHeldEvent = 1 << 20

// The stripper reads into the caller's buffer when it has room for the
// event held back and stripMinRead more; an event held back beyond
// stripMaxMoved is not moved there, but read on in the stripper's buffer,
// stripReadSize bytes at a time.
const (
	stripMinRead  = 512
	stripMaxMoved = 4096
	stripReadSize = 4096
)

// newUsageChunkStripper returns body without OpenAI's usage-only chunk (an
// event whose data has a non-null "usage" and "choices":[]), for callers
// whose request did not ask for it: a layer that added
// stream_options.include_usage hands them the stream they asked for. It
// holds back only the event it is deciding on, up to the blank line that
// ends it, but for the comment lines that begin it (keep-alives), which
// pass as they come; everything else passes through in the caller's own
// buffer. An event longer than maxHeldEvent passes on as it is.
//
// When body is observeUsage's reader of a stream not read yet, that reader
// strips as well, so that the stream is scanned once.
func newUsageChunkStripper(body io.ReadCloser) io.ReadCloser {
	if r, ok := body.(*usageReader); ok && (r.ev != nil || r.sniff) && r.strip == nil && !r.read {
		r.strip = &stripState{}
		return r
	}
	return &usageReader{body: body, ev: &streamScanner{}, strip: &stripState{}}
}

// stripState is what a stripping usageReader holds between reads.
type stripState struct {
	// buf[:held] is the start of the event being decided, already
	// scanned; when the caller's buffer is too small for it, reads go
	// after it, and buf[:len(pending)] holds what was decided.
	buf     []byte
	pending []byte // decided, for the caller
	held    int    // buf[held:] is the event being decided, when pending is not empty
	passing bool   // an event too long to hold passes on as it is
	// cutCR is set when the last bytes read ended with a usage-only event
	// dropped, whose blank line ended at a \r: a \n that starts the next
	// read ends that line, and goes with it.
	cutCR bool
	err   error // the body's error, once it came
}

// readStripped is Read for a stripping usageReader.
func (r *usageReader) readStripped(p []byte) (int, error) {
	s := r.strip
	for {
		if len(s.pending) > 0 {
			n := copy(p, s.pending)
			s.pending = s.pending[n:]
			return n, nil
		}
		if s.held > 0 { // what was decided is delivered: the held event moves to the front
			s.buf = s.buf[:copy(s.buf, s.buf[s.held:])]
			s.held = 0
		}
		switch {
		case s.err != nil:
			if len(s.buf) == 0 || r.endedInUsageOnly() {
				s.buf = s.buf[:0]
				return 0, s.err
			}
			s.pending, s.buf = s.buf, nil // the stream ended inside an event: it goes as it is
		case len(p) == 0:
			return 0, nil
		case len(s.buf) <= stripMaxMoved && len(s.buf)+stripMinRead <= len(p):
			if n := r.stripInPlace(p); n > 0 {
				return n, nil
			}
		default:
			r.stripBuffered()
		}
	}
}

// endedInUsageOnly reports whether the event the stream ended inside,
// before its blank line, is a usage-only chunk. The SSE spec drops such an
// event, but a reader that takes each data line as it comes (go-openai)
// would hand it to a caller that did not ask for usage: it is dropped.
func (r *usageReader) endedInUsageOnly() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := &r.ev.event
	return e.dataLines == 1 && e.usageOnly
}

// stripInPlace reads into p, after the held event, and returns how many
// bytes of p are decided; the event still undecided is held back.
func (r *usageReader) stripInPlace(p []byte) int {
	s := r.strip
	k := copy(p, s.buf)
	n, err := r.body.Read(p[k:])
	r.read = true
	r.scan(p[k:k+n], err)
	s.err = err
	if r.ev == nil { // an answer read as JSON (see sniffStream), or whitespace so far: nothing to strip
		s.buf = s.buf[:0]
		return k + n
	}
	w, tail := s.filter(p[:k+n], k, &r.ev.sseScanner)
	s.buf = append(s.buf[:0], p[tail:k+n]...)
	return w
}

// stripBuffered reads into buf, after the held event, for a caller whose
// buffer is too small to hold it.
func (r *usageReader) stripBuffered() {
	s := r.strip
	k := len(s.buf)
	s.buf = slices.Grow(s.buf, stripReadSize)
	n, err := r.body.Read(s.buf[k:cap(s.buf)])
	r.read = true
	s.buf = s.buf[:k+n]
	r.scan(s.buf[k:], err)
	s.err = err
	if r.ev == nil { // as in stripInPlace
		s.pending, s.held = s.buf, len(s.buf)
		return
	}
	w, tail := s.filter(s.buf, k, &r.ev.sseScanner)
	s.pending, s.held = s.buf[:w], tail
	if tail == len(s.buf) {
		s.buf, s.held = s.buf[:0], 0
	}
}

// filter drops the usage-only events from b, whose bytes from k on were
// just scanned (scan's positions are relative to b[k:]), moving what is
// kept to the front. It returns how many bytes are kept, and where the
// event not yet ended starts: b[tail:] is to be held back.
func (s *stripState) filter(b []byte, k int, scan *sseScanner) (kept, tail int) {
	start := 0 // the first byte not yet kept or dropped
	if s.cutCR && len(b) > 0 {
		// Nothing is held (k is 0): the event dropped ended the last bytes.
		s.cutCR = false
		if b[0] == '\n' {
			start = 1 // the scanner ends the event after it (see sseScanner.stepCR)
		}
	}
	for _, c := range scan.cuts {
		cutStart := 0
		if c.start >= 0 {
			cutStart = k + c.start
		}
		passing := c.start < 0 && s.passing // the end of an event passing as it is
		if passing || k+c.end-cutStart > maxHeldEvent {
			continue
		}
		kept, start = keep(b, kept, start, cutStart), k+c.end
		s.cutCR = start == len(b) && b[start-1] == '\r'
	}
	if scan.lastEnd >= 0 {
		s.passing = false
		tail = k + scan.lastEnd
	}
	kept = keep(b, kept, start, tail)
	if s.passing || len(b)-tail > maxHeldEvent {
		s.passing = true
		kept, tail = keep(b, kept, tail, len(b)), len(b)
	}
	return kept, tail
}

// keep moves b[start:end] to b[kept:] and returns the new kept length.
func keep(b []byte, kept, start, end int) int {
	if kept == start {
		return end // already in place
	}
	return kept + copy(b[kept:], b[start:end])
}

// acceptsStreamOptions reports whether a request goes to an OpenAI-style
// completions endpoint, where stream_options.include_usage is known: its
// path ends with /completions, as sent and decoded, whatever members its
// body has, and its query names no Azure api-version older than the
// member (see beforeStreamOptions). Other APIs (Anthropic messages, OpenAI
// responses) report usage in their streams anyway, and may reject a
// parameter they do not know.
func acceptsStreamOptions(req *http.Request) bool {
	return strings.HasSuffix(req.URL.Path, "/completions") && strings.HasSuffix(sentPath(req.URL), "/completions") &&
		req.Header.Get("Anthropic-Version") == "" && !beforeStreamOptions(req.URL.RawQuery)
}

// streamOptionsSince is the first Azure OpenAI api-version known to take
// stream_options, 2024-08-01-preview, by its date: an earlier one that
// takes it too is only not asked for usage, and charged its reservation.
const streamOptionsSince = "2024-08-01"

// beforeStreamOptions reports whether the raw query q names an Azure
// api-version (the key in any case, as Azure reads it) dated before
// streamOptionsSince: Azure refuses a stream_options member there with a
// 400 ("Unrecognized request argument supplied"), the GA 2024-02-01 and
// 2024-06-01 included. A value that is no date ("preview", "latest")
// is taken as a later version.
func beforeStreamOptions(q string) bool {
	for value := range queryValues(q, func(key string) bool { return strings.EqualFold(key, "api-version") }) {
		if v, err := url.QueryUnescape(value); err == nil {
			value = v
		}
		if isDate(value) && value[:len("2006-01-02")] < streamOptionsSince {
			return true
		}
	}
	return false
}

// isDate reports whether v begins with a date written YYYY-MM-DD.
func isDate(v string) bool {
	if len(v) < len("2006-01-02") {
		return false
	}
	for i, c := range []byte(v[:len("2006-01-02")]) {
		if i == 4 || i == 7 {
			if c != '-' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
