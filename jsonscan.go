package httpguard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"iter"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is the package's one JSON reader: an incremental lexer that
// validates its input exactly as encoding/json does (json.Valid), fed whole
// buffers (request bodies, usage objects) or one read at a time (answers,
// streams), and reports the members of the top-level object. It reads
// untrusted input: it never panics, allocates nothing (but for nesting
// deeper than 64), and bounds nesting like encoding/json. Keys and strings
// are decoded here too, escapes and invalid UTF-8 as encoding/json decodes
// them.

var errJSONSyntax = errors.New("invalid JSON")

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

// maxLexedKey is how much of a top-level key that spans reads jsonLexer
// keeps: as much as the longest key this package looks for (a usage
// count's) can take, even written with \u escapes (6 bytes a character).
// The first inlineKey bytes are kept in the lexer, which is all any such
// key takes unless written with escapes; a longer key moves to the heap.
const (
	maxLexedKey = 6 * len("cache_creation_input_tokens")
	inlineKey   = 32
)

// jsonEvent is what jsonLexer.next reports.
type jsonEvent uint8

const (
	evNone   jsonEvent = iota // (internal: keep lexing)
	evMore                    // the chunk is read; feed the next one
	evKey                     // a top-level key ended: see key
	evMember                  // a top-level member's value ended at pos: see memberStart
	evString                  // a string ended at pos (only with wantStrings): see strStart
	evValue                   // a top-level member's value, handed off, starts at pos: see handOff
	evEnd                     // the top-level value ended
	evError                   // the input is not JSON; the lexer stays in error
)

// lexState is where the lexer is between two bytes.
type lexState uint8

const (
	lexValue      lexState = iota // before a value
	lexFirstItem                  // after '[': a value or ']'
	lexFirstKey                   // after '{': a key or '}'
	lexKey                        // after ',' in an object: a key
	lexColon                      // after a key: ':'
	lexAfterValue                 // after a value in a container: ',' or its end
	lexString                     // inside a string
	lexEscape                     // after a backslash in a string
	lexHex                        // inside the four hex digits of \u
	lexNumber                     // inside a number (num says where)
	lexLiteral                    // inside true, false or null
	lexValueEnd                   // a string value ended and evString was reported: end the value
	lexHandedOff                  // a top-level member's value is read elsewhere: see handOff
	lexDone                       // after the top-level value: whitespace only
	lexError
)

// jsonLexer follows one JSON value through chunks of input. Feed it a chunk,
// call next until evMore, then feed the next chunk; end says whether the
// input, once over, was exactly one JSON value. Positions (pos, keyStart,
// memberStart, strStart) are indexes into the chunk being read. The zero
// value is ready to read any JSON value.
type jsonLexer struct {
	p   []byte // the chunk being read
	pos int    // the next byte of p to read

	// The byte-sized fields come together, and the ints after them, so
	// that no padding is wasted: two lexers are in every attempt's state.
	state   lexState
	num     numPhase
	lit     uint8 // the literal being read: an index in jsonLiterals
	litRead uint8 // its bytes read
	hex     uint8 // hex digits left in a \u escape
	inKey   bool  // the string being read is a key
	member1 bool  // nesting counts from 1: the value is a member's, handed off (see handOff)

	// objectOnly refuses a top-level value that is not an object.
	objectOnly bool
	// wantStrings reports evString at the end of every string, keys and
	// values at any depth. Meant for whole buffers: strStart is -1 for a
	// string that began in an earlier chunk.
	wantStrings bool
	strEscaped  bool // with wantStrings: the string being read holds a backslash escape
	member      bool // a top-level member's value is being read (it starts at valStart in p)
	// muteMember spares evMember for the member being read: a reader that
	// does not want its value sets it after evKey.
	muteMember bool
	// handOff, set after evKey, hands the member's value to the reader:
	// evValue reports where it starts, and the reader reads it (with a
	// lexer of its own, or a scanner of its own, such as the request
	// reader's scanStrings) and calls resume where it ends, or decline
	// before reading any of it to have the lexer read it after all.
	// A value read so is not read twice.
	handOff    bool
	keyEscaped bool            // the top-level key holds a backslash escape
	keyLong    bool            // the key spanned reads and outgrew maxLexedKey
	keyLen     uint8           // bytes kept: in keyBuf, or in longKey past inlineKey
	keyBuf     [inlineKey]byte // the start of a top-level key that spans reads

	depth    int    // containers open
	objects  uint64 // bit d: the container at depth d+1 is an object, not an array
	deeper   []uint64
	strStart int // where the string being read starts in p (wantStrings)
	valStart int // where the member's value starts in p
	keyStart int // where the top-level key being read starts in p (its quote), or -1
	longKey  []byte
}

// feed starts reading chunk p. A key or member value that spans reads
// continues at p[0].
func (l *jsonLexer) feed(p []byte) {
	l.p, l.pos = p, 0
	l.valStart, l.strStart = 0, -1
}

// next reads on to the next event.
func (l *jsonLexer) next() jsonEvent {
	p, i, ev := l.p, l.pos, evNone
	for ev == evNone && (i < len(p) || l.state == lexValueEnd) {
		switch l.state {
		case lexValue, lexFirstItem:
			i, ev = l.stepValue(p, i)
		case lexFirstKey, lexKey, lexColon, lexAfterValue:
			if l.depth == 1 && l.objects&1 == 1 {
				i, ev = l.stepMembers(p, i)
				break
			}
			switch l.state {
			case lexColon:
				i, ev = l.stepColon(p, i)
			case lexAfterValue:
				i, ev = l.stepAfterValue(p, i)
			default:
				i, ev = l.stepKey(p, i)
			}
		case lexString:
			i, ev = l.stepString(p, i)
		case lexEscape:
			i, ev = l.stepEscape(p, i)
		case lexHex:
			i, ev = l.stepHex(p, i)
		case lexNumber:
			i, ev = l.stepNumber(p, i)
		case lexLiteral:
			i, ev = l.stepLiteral(p, i)
		case lexValueEnd:
			ev = l.valueEnd()
		case lexHandedOff:
			ev = evValue
		case lexDone:
			i, ev = l.stepDone(p, i)
		default:
			ev = evError
		}
	}
	l.pos = i
	if ev != evNone {
		return ev
	}
	if l.inKey && l.depth == 1 { // the key continues in the next chunk
		start := 0
		if l.keyStart >= 0 {
			start = l.keyStart + 1
		}
		l.keepKey(p[start:])
		l.keyStart = -1
	}
	l.p = nil // not kept past the read
	return evMore
}

// end reports whether the input, now over, was exactly one JSON value
// (with whitespace around it).
func (l *jsonLexer) end() bool {
	switch l.state {
	case lexDone:
		return true
	case lexNumber: // a top-level number ends with the input
		return l.depth == 0 && l.num.complete()
	}
	return false
}

// resume goes on after a value handed off (see handOff), which ended at
// p[end] of the chunk being read.
func (l *jsonLexer) resume(end int) { l.pos, l.state = end, lexValueEnd }

// decline gives back a value handed off (see handOff) before reading any of
// it: the lexer reads it after all.
func (l *jsonLexer) decline() { l.state = lexValue }

// started reports whether the lexer has read anything but whitespace.
func (l *jsonLexer) started() bool { return l.state != lexValue || l.depth > 0 }

// key returns the raw bytes (no quotes, escapes as written) of the top-level
// key that evKey reported, and whether they hold an escape. A key that
// spanned reads is nil once longer than maxLexedKey: it is none of the keys
// this package reads from answers.
func (l *jsonLexer) key() (raw []byte, escaped bool) {
	end := l.pos - 1 // the closing quote
	if l.keyStart >= 0 {
		return l.p[l.keyStart+1 : end], l.keyEscaped
	}
	l.keepKey(l.p[:end])
	switch {
	case l.keyLong:
		return nil, l.keyEscaped
	case int(l.keyLen) > len(l.keyBuf):
		return l.longKey, l.keyEscaped
	}
	return l.keyBuf[:l.keyLen], l.keyEscaped
}

func (l *jsonLexer) keepKey(part []byte) {
	n := int(l.keyLen) + len(part)
	switch {
	case n > maxLexedKey:
		l.keyLong = true
		return
	case n <= len(l.keyBuf):
		copy(l.keyBuf[l.keyLen:], part)
	case int(l.keyLen) <= len(l.keyBuf): // outgrows keyBuf
		l.longKey = append(append(l.longKey[:0], l.keyBuf[:l.keyLen]...), part...)
	default:
		l.longKey = append(l.longKey, part...)
	}
	l.keyLen = uint8(n)
}

// memberStart returns where the top-level member value being read starts
// in the chunk (0 when it began in an earlier one), and whether one is
// being read. After evMember the value is p[start:pos].
func (l *jsonLexer) memberStart() (int, bool) { return l.valStart, l.member }

func (l *jsonLexer) fail(i int) (int, jsonEvent) {
	l.state = lexError
	return i, evError
}

// skipSpace returns the index of the first byte at or after i that is not
// whitespace.
func skipSpace(p []byte, i int) int {
	if i < len(p) && p[i] > ' ' { // most often: compact JSON
		return i
	}
	for i < len(p) {
		switch p[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func (l *jsonLexer) stepValue(p []byte, i int) (int, jsonEvent) {
	if i = skipSpace(p, i); i == len(p) {
		return i, evNone
	}
	c := p[i]
	if l.state == lexFirstItem && c == ']' {
		return i + 1, l.close()
	}
	if l.depth == 0 && l.objectOnly && c != '{' {
		return l.fail(i)
	}
	if l.depth == 1 && l.inObject() {
		l.member, l.valStart = true, i
		if l.handOff {
			l.handOff, l.state = false, lexHandedOff
			return i, evValue
		}
	}
	switch {
	case c == '{' || c == '[':
		// A member's value whole in the chunk is skipped in one pass when
		// nothing inside it is reported. One that is not whole is read
		// a byte at a time after all; so is all of it when it is deeper
		// than skipContainer goes or not JSON, which the lexer then
		// reports where it fails.
		if l.depth == 1 && !l.wantStrings {
			if j := skipContainer(p, i); j > 0 {
				return j, l.valueEnd()
			}
		}
		return l.open(i, c == '{')
	case c == '"':
		l.beginString(i, false)
		return l.stepString(p, i+1)
	case c == '-' || '0' <= c && c <= '9':
		if j := wholeInt(p, i); j > 0 {
			return j, l.valueEnd()
		}
		l.state, l.num = lexNumber, numStart
		return l.stepNumber(p, i)
	case c == 't':
		l.state, l.lit, l.litRead = lexLiteral, 0, 0
	case c == 'f':
		l.state, l.lit, l.litRead = lexLiteral, 1, 0
	case c == 'n':
		l.state, l.lit, l.litRead = lexLiteral, 2, 0
	default:
		return l.fail(i)
	}
	return l.stepLiteral(p, i)
}

func (l *jsonLexer) stepKey(p []byte, i int) (int, jsonEvent) {
	if i = skipSpace(p, i); i == len(p) {
		return i, evNone
	}
	switch c := p[i]; {
	case c == '}' && l.state == lexFirstKey:
		return i + 1, l.close()
	case c == '"':
		l.beginString(i, true)
		return l.stepString(p, i+1)
	}
	return l.fail(i)
}

func (l *jsonLexer) stepColon(p []byte, i int) (int, jsonEvent) {
	if i = skipSpace(p, i); i == len(p) {
		return i, evNone
	}
	if p[i] != ':' {
		return l.fail(i)
	}
	l.state = lexValue
	return l.stepValue(p, i+1)
}

func (l *jsonLexer) stepAfterValue(p []byte, i int) (int, jsonEvent) {
	if i = skipSpace(p, i); i == len(p) {
		return i, evNone
	}
	obj := l.inObject()
	switch c := p[i]; {
	case c == ',' && obj:
		l.state = lexKey
		return l.stepKey(p, i+1)
	case c == ',':
		l.state = lexValue
		return l.stepValue(p, i+1)
	case c == '}' && obj, c == ']' && !obj:
		return i + 1, l.close()
	}
	return l.fail(i)
}

// stepMembers reads the members of the top-level object while their
// tokens are whole in p, a key at a time and a value at a time, as the
// steps would read them: it reports the same events at the same positions
// and leaves the same state. A token it does not take whole (one that
// spans reads, a value with strings to report, a string value with
// wantStrings, anything that is not JSON) goes to the steps from its first
// byte.
func (l *jsonLexer) stepMembers(p []byte, i int) (int, jsonEvent) {
	state := l.state
	for {
		if i >= len(p) || p[i] <= ' ' {
			if i = skipSpace(p, i); i >= len(p) {
				l.state = state
				return i, evNone
			}
		}
		c := p[i]
		switch state {
		case lexAfterValue:
			if c != ',' {
				l.state = state
				return l.stepAfterValue(p, i)
			}
			i++
			state = lexKey
		case lexColon:
			if c != ':' {
				l.state = state
				return l.stepColon(p, i)
			}
			if i = skipSpace(p, i+1); i >= len(p) {
				l.state = lexValue
				return i, evNone
			}
			l.member, l.valStart = true, i
			if l.handOff {
				l.handOff, l.state = false, lexHandedOff
				return i, evValue
			}
			end := wholeValue(p, i, l.wantStrings)
			if end <= 0 {
				l.state = lexValue
				if c := p[i]; (c == '{' || c == '[') && !l.wantStrings {
					// skipContainer did not take it: stepValue would try again.
					return l.open(i, c == '{')
				}
				return l.stepValue(p, i)
			}
			i, l.member, state = end, false, lexAfterValue
			if !l.muteMember {
				l.state = state
				return i, evMember
			}
		default: // lexFirstKey, lexKey
			end, escaped := -1, false
			if c == '"' {
				end, escaped = quoteEnd(p, i+1)
			}
			if end < 0 {
				l.state = state
				return l.stepKey(p, i)
			}
			l.keyStart, l.keyLen, l.keyLong, l.keyEscaped, l.muteMember = i, 0, false, escaped, false
			if l.wantStrings {
				l.strStart, l.strEscaped = i, escaped
			}
			l.state = lexColon
			return end + 1, evKey
		}
	}
}

// wholeValue returns where the value at p[i] ends when it is whole in p,
// valid, and has nothing to report (a string with wantStrings has; so
// have the strings in a container), 0 or less otherwise.
func wholeValue(p []byte, i int, wantStrings bool) int {
	switch c := p[i]; {
	case c == '"':
		if wantStrings {
			return 0
		}
		return closingQuote(p, i+1) + 1
	case c == '{' || c == '[':
		if wantStrings {
			return 0
		}
		return skipContainer(p, i)
	case c == '-' || '0' <= c && c <= '9':
		return wholeInt(p, i)
	}
	return 0 // a literal, or not JSON: the steps'
}

func (l *jsonLexer) stepDone(p []byte, i int) (int, jsonEvent) {
	if i = skipSpace(p, i); i < len(p) {
		return l.fail(i)
	}
	return i, evNone
}

// open reads the '{' or '[' at p[i].
func (l *jsonLexer) open(i int, obj bool) (int, jsonEvent) {
	if l.depth+int(b2u(l.member1)) >= maxJSONDepth {
		return l.fail(i)
	}
	d := l.depth
	l.depth++
	if d < 64 {
		l.objects = l.objects&^(1<<d) | b2u(obj)<<d
	} else {
		w, bit := (d-64)/64, uint(d-64)%64
		for len(l.deeper) <= w {
			l.deeper = append(l.deeper, 0)
		}
		l.deeper[w] = l.deeper[w]&^(1<<bit) | b2u(obj)<<bit
	}
	l.state = lexFirstItem
	if obj {
		l.state = lexFirstKey
	}
	return i + 1, evNone
}

// close follows the '}' or ']' that closed the open container.
func (l *jsonLexer) close() jsonEvent {
	l.depth--
	return l.valueEnd()
}

// inObject reports whether the innermost open container is an object.
func (l *jsonLexer) inObject() bool {
	d := l.depth - 1
	if d < 0 {
		return false
	}
	if d < 64 {
		return l.objects>>d&1 == 1
	}
	return l.deeper[(d-64)/64]>>(uint(d-64)%64)&1 == 1
}

// valueEnd follows a value that ended.
func (l *jsonLexer) valueEnd() jsonEvent {
	switch {
	case l.depth == 0:
		l.state = lexDone
		return evEnd
	case l.depth == 1 && l.member:
		l.member = false
		l.state = lexAfterValue
		if l.muteMember {
			return evNone
		}
		return evMember
	}
	l.state = lexAfterValue
	return evNone
}

// beginString follows the opening quote at p[i].
func (l *jsonLexer) beginString(i int, key bool) {
	if l.wantStrings {
		l.strStart, l.strEscaped = i, false
	}
	if key && l.depth == 1 {
		l.keyStart, l.keyLen, l.keyLong, l.keyEscaped, l.muteMember = i, 0, false, false, false
	}
	l.state, l.inKey = lexString, key
}

// stepString reads string content up to its end or a backslash. Plain
// runs are skipped by plainRun; escapes whole within the chunk are read in
// place. A key that ends goes on to its colon.
func (l *jsonLexer) stepString(p []byte, i int) (int, jsonEvent) {
	for {
		if i = plainRun(p, i); i == len(p) {
			return i, evNone
		}
		switch p[i] {
		case '"':
			if ev := l.stringEnd(); ev != evNone || l.state != lexColon {
				return i + 1, ev
			}
			return l.stepColon(p, i+1)
		case '\\':
			if l.inKey && l.depth == 1 {
				l.keyEscaped = true
			}
			l.strEscaped = true
			if n := escapeLen(p[i:]); n > 0 {
				i += n
				continue
			}
			l.state = lexEscape
			return i + 1, evNone
		}
		return l.fail(i) // a control character
	}
}

// plainRun returns the index of the first byte at or after i that ends a
// run of plain string content — '"', '\\' or a control character — or
// len(p). Most runs are short: 16 bytes at a time up to 128, inline, then
// specialIndex, 32 bytes a step on amd64.
func plainRun(p []byte, i int) int {
	for end := min(len(p), i+128); i+16 <= end; i += 16 {
		w := p[i : i+16 : i+16]
		if m := specialBytes(binary.LittleEndian.Uint64(w)); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
		if m := specialBytes(binary.LittleEndian.Uint64(w[8:])); m != 0 {
			return i + 8 + bits.TrailingZeros64(m)/8
		}
	}
	return i + specialIndex(p[i:])
}

// specialMaskGo is specialMask one byte at a time: what the assembly must
// return, and specialMask where there is none (where escapedQuoteEnd does
// not call it).
func specialMaskGo(p *[64]byte) uint64 {
	var m uint64
	for k, c := range p {
		if c == '"' || c == '\\' || c < 0x20 {
			m |= 1 << k
		}
	}
	return m
}

// specialIndexGo is specialIndex in Go, for other processors, where
// plainRun has read the run's first 128 bytes a word at a time: windows
// searched by the SIMD-backed bytes.IndexByte, then words, then bytes.
func specialIndexGo(p []byte) int {
	i := 0
	for window := plainWindow; i+64 <= len(p); window *= 2 { // a long run: search by SIMD, a window at a time
		win := p[i:min(i+window, len(p))]
		end := len(win)
		if q := bytes.IndexByte(win, '"'); q >= 0 {
			end = q
		}
		if b := bytes.IndexByte(win[:end], '\\'); b >= 0 {
			end = b
		}
		if c := firstControl(win[:end]); c < end {
			return i + c
		}
		if end < len(win) {
			return i + end
		}
		i += len(win)
	}
	for ; i+8 <= len(p); i += 8 {
		if m := specialBytes(binary.LittleEndian.Uint64(p[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(p); i++ {
		if c := p[i]; c == '"' || c == '\\' || c < 0x20 {
			return i
		}
	}
	return i
}

// plainWindow is how much of a long run plainRun searches at first, then
// twice as much each time: searching past the run's end costs little, at
// most as much as the run has cost so far, in fewer calls.
const plainWindow = 512

// firstControl returns the index of the first byte of p below 0x20, or
// len(p): 64 bytes at a time, then 32, then eight.
func firstControl(p []byte) int {
	i := 0
	for ; i+64 <= len(p); i += 64 {
		w := p[i : i+64 : i+64]
		if (controls(w)|controls(w[32:]))&highs != 0 {
			break
		}
	}
	for ; i+32 <= len(p); i += 32 {
		if controls(p[i:i+32:i+32])&highs != 0 {
			break
		}
	}
	for ; i+8 <= len(p); i += 8 {
		w := binary.LittleEndian.Uint64(p[i:])
		if m := (w - lows*0x20) &^ w & highs; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(p) && p[i] >= 0x20; i++ {
	}
	return i
}

// controls flags (with its high bit, among others) some byte of w, 32
// bytes, when one is below 0x20.
func controls(w []byte) uint64 {
	a, b := binary.LittleEndian.Uint64(w), binary.LittleEndian.Uint64(w[8:])
	c, d := binary.LittleEndian.Uint64(w[16:]), binary.LittleEndian.Uint64(w[24:])
	return (a-lows*0x20)&^a | (b-lows*0x20)&^b | (c-lows*0x20)&^c | (d-lows*0x20)&^d
}

// skipContainer returns the index just past the object or array that
// opens at p[i] when it is whole in p, valid JSON as the lexer reads it,
// and nested at most 64 deep; -1 otherwise. It keeps its state in locals,
// which costs a fraction of the lexer's steps; a failure leaves p to the
// lexer. The lexer tries it only on a top-level member's value, whose
// failure means p ends (or breaks) inside it: a chunk is read twice at
// most.
func skipContainer(p []byte, i int) int { return skipValue(p, i) }

// skipValue returns the index just past the value at p[i], of any kind,
// when it is whole in p, valid and nested at most 64 deep, and -1
// otherwise (skipContainer is it for objects and arrays), in few
// instructions, for the values an answer's reader skips: a chat answer's
// choices written as providers write one are compared with that form
// (skipWritten). Other values, and
// a choice whose message goes on after its content (from there), are read
// by skipper.run, which reads the tokens answers hold most (strings whose
// end is in their first 32 bytes, integers) and returns here for the
// others, read by closingQuote and numberEnd; run then goes on where it
// stopped. (run calls nothing, so that its locals stay in registers; it
// keeps its state in the caller's skipper, not in a copy passed in and
// returned, which cost as much as a few tokens.)
func skipValue(p []byte, i int) int {
	var s skipper
	switch end, contentEnd := skipWritten(p, i); {
	case end > 0:
		return end
	case contentEnd > 0: // in the message, whose content ends just before p[contentEnd]
		i, s = contentEnd, skipper{objects: 0b011, depth: 3, resume: skipNumber} // (a value was read)
	}
	for {
		var at skipStep
		switch i, at = s.run(p, i); at {
		case skipString:
			if i = closingQuote(p, i) + 1; i <= 0 {
				return -1
			}
		case skipNumber:
			if i = numberEnd(p, i); i < 0 {
				return -1
			}
		default: // skipEnded
			return i
		}
		s.resume = at
	}
}

// A chat answer's "choices" holds one choice most often, which servers
// that write compact JSON in the API's field order write alike:
// choiceHead, its content, one of choiceTails, its finish reason, and "}]"
// (the second tail is DeepSeek's; the third, OpenAI's fields as relays
// re-encode them compactly; OpenAI's own indented answers match none, and
// a message with more fields after its content is read on from there).
// skipWritten compares a value's bytes with these pieces instead of
// reading their tokens: with a string or null in each slot between them,
// they are valid JSON (TestWrittenChoicesAreJSON).
const (
	choiceHead = `[{"index":0,"message":{"role":"assistant","content":`
	choiceEnd  = `}]`
	// choiceStopEnd is the finish reason of most answers, and choiceEnd.
	choiceStopEnd = `"stop"` + choiceEnd
)

var choiceTails = [...]string{
	`},"finish_reason":`,
	`},"logprobs":null,"finish_reason":`,
	`,"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":`,
}

// skipWritten is skipValue for a "choices" value written as providers
// write one choice (see choiceHead), in fewer instructions: where it ends;
// or, for a choice whose message goes on otherwise after its content (a
// reasoning, tool calls), -1 and where the content ends, for the skipper
// to read on from there, not from the start again; or -1 and 0 for any
// other value (or one not whole in p, or not JSON), which skipValue then
// reads.
func skipWritten(p []byte, i int) (end, contentEnd int) {
	// (The constant pieces are compared in place: the compiler compares
	// them a word at a time, without a call.)
	if len(p)-i < len(choiceHead) || string(p[i:i+len(choiceHead)]) != choiceHead {
		return -1, 0
	}
	j := slotEnd(p, i+len(choiceHead))
	if j < 0 {
		return -1, 0
	}
	for _, tail := range &choiceTails { // no tail begins another
		if len(p)-j >= len(tail) && string(p[j:j+len(tail)]) == tail {
			if j += len(tail); len(p)-j >= len(choiceStopEnd) && string(p[j:j+len(choiceStopEnd)]) == choiceStopEnd {
				return j + len(choiceStopEnd), 0 // most often
			}
			if j = slotEnd(p, j); j < 0 || len(p)-j < len(choiceEnd) || string(p[j:j+len(choiceEnd)]) != choiceEnd {
				return -1, 0
			}
			return j + len(choiceEnd), 0
		}
	}
	return -1, j
}

// slotEnd returns where the string or null at p[i] ends when it is whole
// in p and valid, -1 otherwise: what a choice's content and finish reason
// hold.
func slotEnd(p []byte, i int) int {
	switch {
	case i < len(p) && p[i] == '"':
		if end := closingQuote(p, i+1); end > 0 {
			return end + 1
		}
	case len(p)-i >= 4 && string(p[i:i+4]) == "null":
		return i + 4
	}
	return -1
}

// skipper is where skipValue (or scanImages) is in the value.
type skipper struct {
	objects uint64 // bit 0: the innermost container is an object; bit 1: the one around it, and so on
	depth   int
	key     bool     // the string being read is a key
	resume  skipStep // what was read before run was called: a string, or a number; or nothing
	images  bool     // run leaves every string that may name an image to its caller too (scanImages)
}

// skipStep is a token skipper.run leaves to its caller (skipValue,
// scanImages), or the end.
type skipStep uint8

const (
	skipStart  skipStep = iota // (resume: nothing read yet)
	skipString                 // the string whose content starts at p[i]
	skipNumber                 // the number at p[i]
	skipEnded                  // the value ended at i, or is not JSON (i is -1)
)

// run reads on from p[i] as skipContainer does, its states places in the code
// (labels), and keeps where it is in s: it returns the value's end
// (skipEnded), or -1 (skipEnded) when p does not hold it whole and valid,
// or the token at p[i] it leaves to its caller (skipValue, scanImages).
func (s *skipper) run(p []byte, i int) (int, skipStep) {
	var c byte // the byte at p[i]
	switch s.resume {
	case skipString:
		goto strEnd
	case skipNumber:
		goto after
	}
value: // a value at p[i], after whitespace
	if i, c = nextByte(p, i); i >= len(p) {
		return -1, skipEnded
	}
	switch c {
	case '"':
		i++
		goto str
	case '{', '[':
		if s.depth == 64 {
			return -1, skipEnded
		}
		var d byte
		if i, d = nextByte(p, i+1); d == c+2 { // empty: '}' is '{'+2, ']' is '['+2
			i++
			goto after
		}
		s.objects, s.depth = s.objects<<1|b2u(c == '{'), s.depth+1
		if c == '[' {
			goto value
		}
		goto key
	case 't', 'f', 'n': // compared with constants, not with jsonLiterals' (a call)
		n := 4 + int(b2u(c == 'f'))
		if len(p)-i < n || !(string(p[i:i+n]) == "true" || string(p[i:i+n]) == "false" || string(p[i:i+n]) == "null") {
			return -1, skipEnded
		}
		i += n
	default: // a number: an integer without sign or leading zero is read here, as wholeInt reads it
		j := i
		for j < len(p) && p[j]-'0' <= 9 {
			j++
		}
		if j == i || j == len(p) || p[i] == '0' && j > i+1 || p[j] == '.' || p[j]|0x20 == 'e' {
			return i, skipNumber
		}
		i = j
	}
after: // a value ended at p[i]
	if s.depth == 0 {
		return i, skipEnded
	}
	switch i, c = nextByte(p, i); { // c is 0 at the end of p
	case c == ',':
		i++
		if s.objects&1 == 0 {
			goto value
		}
	case c == ']'|byte(s.objects&1)<<5: // '}' is ']'|0x20
		i, s.objects, s.depth = i+1, s.objects>>1, s.depth-1
		goto after
	default:
		return -1, skipEnded
	}
key: // a key at p[i], after whitespace
	if i, c = nextByte(p, i); c != '"' {
		return -1, skipEnded
	}
	i, s.key = i+1, true
str: // the content of a string at p[i]; its first 32 bytes a word at a time, here
	for j := i; j+8 <= len(p); j += 8 {
		m := specialBytes(binary.LittleEndian.Uint64(p[j : j+8 : j+8]))
		if m == 0 {
			if j < i+24 {
				continue
			}
			break
		}
		if j += bits.TrailingZeros64(m) / 8; p[j] != '"' || s.images && mayCountPlainImage(p[i:j]) {
			break // an escape, or not JSON; or an image's name, for scanImages
		}
		i = j + 1
		goto strEnd
	}
	return i, skipString
strEnd:
	if !s.key {
		goto after
	}
	if i, c = nextByte(p, i); c != ':' {
		return -1, skipEnded
	}
	i, s.key = i+1, false
	goto value
}

// nextByte returns skipSpace(p, i) and the byte there, 0 at the end of
// p: one bounds check for both in compact JSON.
func nextByte(p []byte, i int) (int, byte) {
	if uint(i) < uint(len(p)) && p[i] > ' ' { // (uint: no second bounds check)
		return i, p[i]
	}
	if i = skipSpace(p, i); i < len(p) {
		return i, p[i]
	}
	return i, 0
}

// numberEnd returns where the number at p[i] ends when it is valid and
// ends within p, -1 otherwise.
func numberEnd(p []byte, i int) int {
	if j := wholeInt(p, i); j > 0 {
		return j
	}
	ph := numStart
	for ; i < len(p); i++ {
		switch next := ph.next(p[i]); next {
		case numEnd:
			if ph.complete() {
				return i
			}
			return -1
		case numBad:
			return -1
		default:
			ph = next
		}
	}
	return -1
}

// closingQuote returns the index of the quote that ends the string whose
// content starts at p[i], or -1 when p does not hold the rest of a valid
// string: the content must be what jsonLexer accepts in a string.
func closingQuote(p []byte, i int) int {
	end, _ := quoteEnd(p, i)
	return end
}

// quoteEnd is closingQuote, and whether the string holds an escape. Most
// strings are plain: their end is the end of their first run, found
// without a second call.
func quoteEnd(p []byte, i int) (end int, escaped bool) {
	if i+16 <= len(p) { // the first two words here, which hold most strings' end
		w := p[i : i+16 : i+16]
		m := specialBytes(binary.LittleEndian.Uint64(w))
		if m == 0 {
			i, m = i+8, specialBytes(binary.LittleEndian.Uint64(w[8:]))
		}
		if m != 0 {
			if i += bits.TrailingZeros64(m) / 8; p[i] == '"' {
				return i, false
			}
			return escapedQuoteEnd(p, i)
		}
		i += 8
	}
	if i = plainRun(p, i); i < len(p) && p[i] == '"' {
		return i, false
	}
	return escapedQuoteEnd(p, i)
}

// shortQuoteEnd is quoteEnd for a plain string that ends in its first
// eight bytes (most keys), in fewer instructions: the index of its closing
// quote, or -1 for any other string, which quoteEnd then reads.
func shortQuoteEnd(p []byte, i int) int {
	if i+8 > len(p) {
		return -1
	}
	m := specialBytes(binary.LittleEndian.Uint64(p[i : i+8 : i+8]))
	if j := i + bits.TrailingZeros64(m)/8; m != 0 && p[j] == '"' {
		return j
	}
	return -1
}

// escapedQuoteEnd is quoteEnd from p[i], where a plain run ended: at a
// backslash, a control character or the end of p. A prompt's text has an
// escape every few dozen bytes (\n, \"), so where specialMask is fast
// (maskFast) it finds every byte that may end a run 64 bytes at a time,
// and steps from one to the next, skipping each escape's flags; elsewhere,
// and in the last 64 bytes, it reads from one plain run to the next.
func escapedQuoteEnd(p []byte, i int) (end int, escaped bool) {
blocks:
	for maskFast && i+64 <= len(p) {
		for m := specialMask((*[64]byte)(p[i:])); m != 0; {
			j := i + bits.TrailingZeros64(m)
			switch p[j] {
			case '"':
				return j, escaped
			case '\\':
				n := 2
				if j+1 >= len(p) || !shortEscapes[p[j+1]] { // most escapes: \n, \"
					if n = escapeLen(p[j:]); n != 6 {
						return -1, false
					}
				}
				escaped = true
				if k := j + n - i; k < 64 {
					m &= ^uint64(0) << k // the flags of the escape's bytes
					continue
				}
				i = j + n
				continue blocks
			}
			return -1, false // a control character
		}
		i += 64
	}
	for {
		if i = plainRun(p, i); i == len(p) || p[i] < 0x20 {
			return -1, false
		}
		if p[i] == '"' {
			return i, escaped
		}
		switch {
		case i+1 < len(p) && shortEscapes[p[i+1]]: // most escapes: \n, \"
			i += 2
		case escapeLen(p[i:]) == 6:
			i += 6
		default:
			return -1, false
		}
		escaped = true
	}
}

// shortEscapes flags the bytes that make a two-byte escape after a
// backslash.
var shortEscapes = [256]bool{'"': true, '\\': true, '/': true, 'b': true, 'f': true, 'n': true, 'r': true, 't': true}

// escapeLen returns the length of the escape at the start of e when it is
// whole and valid, 0 otherwise.
func escapeLen(e []byte) int {
	if len(e) < 2 {
		return 0
	}
	if shortEscapes[e[1]] {
		return 2
	}
	if e[1] == 'u' && len(e) >= 6 && isHex(e[2]) && isHex(e[3]) && isHex(e[4]) && isHex(e[5]) {
		return 6
	}
	return 0
}

func (l *jsonLexer) stepEscape(p []byte, i int) (int, jsonEvent) {
	switch p[i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		l.state = lexString
	case 'u':
		l.state, l.hex = lexHex, 4
	default:
		return l.fail(i)
	}
	return i + 1, evNone
}

func (l *jsonLexer) stepHex(p []byte, i int) (int, jsonEvent) {
	if !isHex(p[i]) {
		return l.fail(i)
	}
	if l.hex--; l.hex == 0 {
		l.state = lexString
	}
	return i + 1, evNone
}

func (l *jsonLexer) stringEnd() jsonEvent {
	if l.inKey {
		l.inKey = false
		l.state = lexColon
		if l.depth == 1 {
			return evKey
		}
		if l.wantStrings {
			return evString
		}
		return evNone
	}
	if l.wantStrings {
		l.state = lexValueEnd
		return evString
	}
	return l.valueEnd()
}

func (l *jsonLexer) stepNumber(p []byte, i int) (int, jsonEvent) {
	num := l.num
	for ; i < len(p); i++ {
		if num == numInt || num == numFrac || num == numExp { // a run of digits
			for i < len(p) && '0' <= p[i] && p[i] <= '9' {
				i++
			}
			if i == len(p) {
				break
			}
		}
		next := num.next(p[i])
		if next == numEnd {
			if !num.complete() {
				return l.fail(i)
			}
			return i, l.valueEnd()
		}
		if next == numBad {
			return l.fail(i)
		}
		num = next
	}
	l.num = num
	return i, evNone
}

// wholeInt returns where the number at p[i] ends when it is an integer
// (no fraction, no exponent) that ends within p, or 0: most numbers, read
// without stepNumber's phases.
func wholeInt(p []byte, i int) int {
	j := i
	if p[j] == '-' {
		j++
	}
	start := j
	for j < len(p) && '0' <= p[j] && p[j] <= '9' {
		j++
	}
	if j == start || j == len(p) || p[start] == '0' && j > start+1 {
		return 0
	}
	if c := p[j]; c == '.' || c == 'e' || c == 'E' {
		return 0
	}
	return j
}

var jsonLiterals = [...]string{"true", "false", "null"}

func (l *jsonLexer) stepLiteral(p []byte, i int) (int, jsonEvent) {
	lit, n := jsonLiterals[l.lit], int(l.litRead)
	if n == 0 && len(p)-i >= len(lit) && string(p[i:i+len(lit)]) == lit { // whole in the chunk
		return i + len(lit), l.valueEnd()
	}
	for ; i < len(p) && n < len(lit); i++ {
		if p[i] != lit[n] {
			return l.fail(i)
		}
		n++
	}
	if l.litRead = uint8(n); n == len(lit) {
		return i, l.valueEnd()
	}
	return i, evNone
}

// numPhase is where a number is in -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
type numPhase uint8

const (
	numStart numPhase = iota
	numMinus          // after '-'
	numZero           // after a leading 0
	numInt            // in the integer digits
	numDot            // after '.'
	numFrac           // in the fraction digits
	numE              // after 'e'
	numESign          // after the exponent's sign
	numExp            // in the exponent digits
	numEnd            // the byte is not part of the number
	numBad            // the number is malformed
)

func (ph numPhase) next(c byte) numPhase {
	digit := '0' <= c && c <= '9'
	switch ph {
	case numStart:
		if c == '-' {
			return numMinus
		}
		fallthrough
	case numMinus:
		switch {
		case c == '0':
			return numZero
		case digit:
			return numInt
		}
		return numBad
	case numZero, numInt:
		switch {
		case digit && ph == numInt:
			return numInt
		case c == '.':
			return numDot
		case c == 'e' || c == 'E':
			return numE
		}
		return numEnd
	case numDot, numFrac:
		switch {
		case digit:
			return numFrac
		case ph == numDot:
			return numBad
		case c == 'e' || c == 'E':
			return numE
		}
		return numEnd
	case numE:
		if c == '+' || c == '-' {
			return numESign
		}
		fallthrough
	case numESign:
		if digit {
			return numExp
		}
		return numBad
	case numExp:
		if digit {
			return numExp
		}
	}
	return numEnd
}

func (ph numPhase) complete() bool {
	return ph == numZero || ph == numInt || ph == numFrac || ph == numExp
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// SWAR constants: a byte of ones, and each byte's high bit.
const (
	lows  = 0x0101010101010101
	highs = 0x8080808080808080
)

// specialBytes flags (with its high bit) each byte of w, eight bytes of a
// string, that ends a run of plain content: '"', '\\' or a control
// character. (x-lows)&^x&highs flags the zero bytes of x; the lowest flag
// is exact, which is all stepString uses. x is w or w xor a byte below
// 0x80, whose high bits are w's: one &^w serves the three tests.
func specialBytes(w uint64) uint64 {
	q, b := w^(lows*'"'), w^(lows*'\\')
	return ((w - lows*0x20) | (q - lows) | (b - lows)) &^ w & highs
}

// jsonMembers calls fn for each member of the JSON object that is data
// (whitespace around it allowed), in order, with the key's raw bytes
// (without quotes; escaped says they hold a backslash escape) and the
// value's raw bytes. It returns errJSONSyntax when data is not exactly one
// valid JSON object, or the first error fn returns.
func jsonMembers(data []byte, fn func(key []byte, escaped bool, value []byte) error) error {
	l := jsonLexer{objectOnly: true}
	l.feed(data)
	var key []byte
	var escaped bool
	for {
		switch l.next() {
		case evKey: // within data: not from keyBuf, which would move l to the heap
			key, escaped = data[l.keyStart+1:l.pos-1], l.keyEscaped
		case evMember:
			if err := fn(key, escaped, data[l.valStart:l.pos]); err != nil {
				return err
			}
		case evMore:
			if !l.end() {
				return errJSONSyntax
			}
			return nil
		case evError:
			return errJSONSyntax
		}
	}
}

func isJSONNull(v []byte) bool { return string(v) == "null" }

// The walkers below read values the lexer has already validated (parts of
// a request body, which parseChatRequest lexes whole first): they only
// find where values end, so each byte is looked at once more at most, and
// strings are skipped by plainRun's wide search.

// validEnd returns where the valid JSON value at v[i] ends.
func validEnd(v []byte, i int) int {
	switch v[i] {
	case '"':
		if j := closingQuote(v, i+1); j >= 0 {
			return j + 1
		}
		return len(v) // not reached: v is valid
	case '{', '[':
		depth := 0
		for j := i; j < len(v); j++ {
			switch v[j] {
			case '"':
				if j = closingQuote(v, j+1); j < 0 {
					return len(v)
				}
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(v)
	}
	j := i // a number or a literal
	for j < len(v) && v[j] != ',' && v[j] != ']' && v[j] != '}' && v[j] > ' ' {
		j++
	}
	return j
}

// validElements yields the elements of v, a valid JSON array, as raw
// values; nothing when v is not an array.
func validElements(v []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		if len(v) == 0 || v[0] != '[' {
			return
		}
		for i := skipSpace(v, 1); i < len(v) && v[i] != ']'; {
			end := validEnd(v, i)
			if !yield(v[i:end]) {
				return
			}
			i = nextValid(v, end)
		}
	}
}

// nextValid returns where the next element or member of a valid JSON
// array or object starts, after the one that ends at v[end]; or where the
// container closes, when that one was its last.
func nextValid(v []byte, end int) int {
	i := skipSpace(v, end)
	if i < len(v) && v[i] == ',' {
		i = skipSpace(v, i+1)
	}
	return i
}

// validMembers yields the members of v, a valid JSON object, as raw keys
// (without quotes, escapes as written) and raw values; nothing when v is
// not an object.
func validMembers(v []byte) iter.Seq2[[]byte, []byte] { return objectMembers(v, nil) }

// objectMembers is validMembers for the valid JSON object that begins v,
// which other values may follow (the rest of an array): once it has
// yielded every member, it sets *end, unless end is nil, to where the
// object ends, so that its caller does not look for the end again.
func objectMembers(v []byte, end *int) iter.Seq2[[]byte, []byte] {
	return func(yield func(key, value []byte) bool) {
		if len(v) == 0 || v[0] != '{' {
			return
		}
		i := skipSpace(v, 1)
		for i < len(v) && v[i] == '"' {
			keyEnd := validEnd(v, i)
			j := skipSpace(v, keyEnd)          // the colon
			j = skipSpace(v, min(j+1, len(v))) // the value
			if j == len(v) {
				return
			}
			valueEnd := validEnd(v, j)
			if !yield(v[i+1:keyEnd-1], v[j:valueEnd]) {
				return
			}
			i = nextValid(v, valueEnd)
		}
		if end != nil {
			*end = i + 1 // after its '}'
		}
	}
}

// nameMatch is how a JSON key compares with a field name.
type nameMatch uint8

const (
	noMatch    nameMatch = iota
	exactMatch           // the key, decoded, is the name
	foldMatch            // the key differs from the name in case only, as bytes.EqualFold (and encoding/json) compare
)

// matchName compares a raw key (valid JSON string content, without quotes)
// with name, a lowercase ASCII field name, after decoding its escapes.
// encoding/json matches a struct field's name case-insensitively, with
// Unicode folding: "K" (U+212A, Kelvin) matches k and "ſ" (U+017F) s.
func matchName(raw []byte, escaped bool, name string) nameMatch {
	if !escaped && string(raw) == name {
		return exactMatch
	}
	m := exactMatch
	j := 0
	for i := 0; i < len(raw); {
		r, n := stringRune(raw, i)
		i += n
		if j == len(name) {
			return noMatch
		}
		c := name[j]
		j++
		switch {
		case r == rune(c):
		case foldsTo(r, c):
			m = foldMatch
		default:
			return noMatch
		}
	}
	if j != len(name) {
		return noMatch
	}
	return m
}

// lookupName returns the index in names (lowercase ASCII) of the one a raw
// key matches, and how it matches; -1 when none does.
func lookupName(raw []byte, escaped bool, names []string) (int, nameMatch) {
	if !escaped {
		for i, name := range names {
			if len(name) != len(raw) {
				continue
			}
			switch {
			case string(raw) == name:
				return i, exactMatch
			case asciiEqualFold(raw, name):
				return i, foldMatch
			}
		}
		if isASCII(raw) { // then only a name of the same length can match
			return -1, noMatch
		}
	}
	for i, name := range names {
		if m := matchName(raw, escaped, name); m != noMatch {
			return i, m
		}
	}
	return -1, noMatch
}

// isASCII reports whether b has no byte above 0x7f, eight at a time; the
// last bytes (most keys are shorter than 16) in a word that overlaps the
// ones before rather than one at a time.
func isASCII(b []byte) bool {
	n := len(b)
	switch {
	case n >= 8:
		var or uint64
		for i := 0; i+8 <= n; i += 8 {
			or |= binary.LittleEndian.Uint64(b[i:])
		}
		return (or|binary.LittleEndian.Uint64(b[n-8:]))&highs == 0
	case n >= 4:
		return (binary.LittleEndian.Uint32(b)|binary.LittleEndian.Uint32(b[n-4:]))&(highs&0xffffffff) == 0
	}
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// asciiEqualFold reports whether ASCII s, of t's length, is t (lowercase
// ASCII) in any case.
func asciiEqualFold(s []byte, t string) bool {
	for i := range len(t) {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != t[i] {
			return false
		}
	}
	return true
}

// foldsTo reports whether r is another case of c, a lowercase ASCII byte.
func foldsTo(r rune, c byte) bool {
	switch {
	case 'a' <= c && c <= 'z' && r == rune(c-'a'+'A'):
		return true
	case c == 'k':
		return r == '\u212a'
	case c == 's':
		return r == '\u017f'
	}
	return false
}

// stringRune decodes the character at s[i] of raw JSON string content and
// returns it with the number of bytes it takes, as encoding/json decodes:
// invalid UTF-8 and unpaired surrogates are U+FFFD.
func stringRune(s []byte, i int) (rune, int) {
	c := s[i]
	if c != '\\' {
		if c < utf8.RuneSelf {
			return rune(c), 1
		}
		return utf8.DecodeRune(s[i:])
	}
	if i+1 >= len(s) {
		return utf8.RuneError, 1
	}
	switch s[i+1] {
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r := hex4(s[i:])
		if r < 0 {
			return utf8.RuneError, min(2, len(s)-i)
		}
		if utf16.IsSurrogate(r) {
			if d := utf16.DecodeRune(r, hex4(s[i+6:])); d != utf8.RuneError {
				return d, 12
			}
			return utf8.RuneError, 6
		}
		return r, 6
	}
	return rune(s[i+1]), 2 // \" \\ \/
}

// hex4 reads the \uXXXX escape at the start of s, or returns -1.
func hex4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnquoted appends the string raw JSON string content holds.
func appendUnquoted(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		if c := raw[i]; c < utf8.RuneSelf && c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		r, n := stringRune(raw, i)
		dst = utf8.AppendRune(dst, r)
		i += n
	}
	return dst
}

// jsonString returns the string a raw JSON string value (with its quotes)
// holds, allocating only the result; ok is false when value is not a
// string.
func jsonString(value []byte) (string, bool) {
	var buf [64]byte
	s, ok := unquote(buf[:0], value)
	return string(s), ok
}

// unquote returns the bytes a raw JSON string value (with its quotes)
// holds: value's own when it has no escapes, else decoded onto dst. ok is
// false when value is not a string.
func unquote(dst, value []byte) (s []byte, ok bool) {
	if len(value) < 2 || value[0] != '"' || value[len(value)-1] != '"' {
		return nil, false
	}
	raw := value[1 : len(value)-1]
	if plainString(raw) {
		return raw, true
	}
	return appendUnquoted(dst, raw), true
}

// plainString reports whether raw string content reads as it is written:
// no escapes, valid UTF-8.
func plainString(raw []byte) bool {
	return bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw)
}
