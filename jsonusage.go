package httpguard

// jsonUsageScanner follows a JSON answer as the caller reads it, with the
// package's one lexer (jsonscan.go): the answer must be one valid JSON
// object, and the value of each top-level "usage" key is decoded when it
// ends. The value is decoded where it lies in the caller's buffer; only a
// value split across reads is copied, so a typical answer costs no
// allocation. The zero value is ready.
type jsonUsageScanner struct {
	lex     jsonLexer
	capture valueCapture
	usage   usageReadings
	found   bool // a usage key was read
}

func (s *jsonUsageScanner) write(p []byte) {
	s.lex.objectOnly = true
	readMembers(&s.lex, &s.capture, p, s)
}

// readKey starts capturing the value of a "usage" key. A key that reads as
// usage in another case is malformed usage: encoding/json would take it,
// other decoders would not.
func (s *jsonUsageScanner) readKey() {
	switch raw, escaped := s.lex.key(); matchName(raw, escaped, "usage") {
	case exactMatch:
		s.capture.start(maxUsageValue)
	case foldMatch:
		s.usage.bad = true
	}
}

// readMember decodes a usage value that ended; as in a decoder, a later
// usage key replaces (or merges into) an earlier one.
func (s *jsonUsageScanner) readMember(p []byte) {
	if !s.capture.on {
		return
	}
	v, whole := s.capture.end(p, &s.lex)
	s.found = true
	if !whole {
		s.usage.bad = true // too long to read: its counts are unknown
		return
	}
	s.usage.add(v)
}

func (s *jsonUsageScanner) readString() {}

func (s *jsonUsageScanner) result() (Usage, bool) {
	if !s.lex.end() || !s.found {
		return Usage{}, false
	}
	w, ok := s.usage.get()
	if !ok {
		return Usage{}, false
	}
	return w.usage()
}

// memberReader is a scanner that reads some of the top-level members of
// a JSON value as it passes: jsonUsageScanner, sseLine.
type memberReader interface {
	readKey()            // the lexer reported evKey
	readMember(p []byte) // the lexer reported evMember in chunk p
	readString()         // the lexer reported evString (only with wantStrings)
}

// readMembers feeds chunk p to l and hands r each top-level key and member
// that ends in it; when p ends inside a member value c wants, c keeps its
// part.
func readMembers(l *jsonLexer, c *valueCapture, p []byte, r memberReader) {
	if l.state == lexError {
		return
	}
	l.feed(p)
	for {
		switch l.next() {
		case evKey:
			r.readKey()
			l.muteMember = !c.on
		case evMember:
			r.readMember(p)
		case evString:
			r.readString()
		case evMore:
			c.keep(p, l)
			return
		case evError:
			return
		}
	}
}

// valueCapture keeps the value of a top-level member that a scanner wants,
// while it spans reads, up to a limit. The zero value wants nothing.
type valueCapture struct {
	on    bool   // the member being read is wanted
	long  bool   // its value outgrew limit
	limit int    // bytes kept at most
	buf   []byte // the start of the value, when it spans reads
}

// start wants the value of the member whose key was just read.
func (c *valueCapture) start(limit int) {
	c.on, c.long, c.limit, c.buf = true, false, limit, c.buf[:0]
}

// keep saves the part of the wanted value in p, a chunk l has read to its
// end.
func (c *valueCapture) keep(p []byte, l *jsonLexer) {
	if start, reading := l.memberStart(); c.on && reading {
		c.add(p[start:])
	}
}

func (c *valueCapture) add(part []byte) {
	if c.long || len(c.buf)+len(part) > c.limit {
		c.long, c.buf = true, c.buf[:0]
		return
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, 512) // room for a usage object at once
	}
	c.buf = append(c.buf, part...)
}

// end returns the wanted value, which l reported ended in p, and whether
// it is whole (within the limit).
func (c *valueCapture) end(p []byte, l *jsonLexer) ([]byte, bool) {
	c.on = false
	tail := p[l.valStart:l.pos]
	if len(c.buf) == 0 && !c.long {
		return tail, len(tail) <= c.limit
	}
	c.add(tail)
	return c.buf, !c.long
}
