package httpguard

import (
	"bytes"
)

// This file reads what an answer says about where and how it ran, which
// can change its price: the model that served it (as a hash), the
// inference geo, and the service tier.

// modelHash names the model an answer says served it (its "model" value):
// a relay's own fallback, or a router such as openrouter/auto, serves a
// request with a model other than the one it named, and bills that
// model's prices (see budgetAttempt.answerCharge). It is a hash of the name, so
// that the scanners keep it in four bytes; zero when the answer names
// none, or spells it in more than maxModelValue bytes (no provider does).
// A name spelled with escapes is hashed as encoding/json decodes it: PHP's
// json_encode writes each slash escaped ("openai\/gpt-4.1"). Two names of
// one hash are both priced, the dearer side. A model key spelled in
// another case ("Model", as encoding/json writes an untagged field) is
// read as well: an answer whose decoders would read different models is
// priced at both, the dearer side (see modelReading).
type modelHash uint32

// modelReading is the model an answer names as two decoders read it:
// exact, the last "model" value, which decoders such as Python's and
// JavaScript's read; and folded, the last value naming a model of a key
// "model" in any case, which encoding/json reads (it matches keys in any
// case, the last wins, and a null leaves the field as it was). They
// differ only when a key is spelled in another case, or a null follows.
type modelReading struct{ exact, folded modelHash }

// read reads h, the value of a model key that matched as m.
func (r *modelReading) read(h modelHash, m nameMatch) {
	if m == exactMatch {
		r.exact = h
	}
	if h != 0 {
		r.folded = h
	}
}

// merge takes what a later object (a stream's line, or a line's
// response object) read, where it named a model.
func (r *modelReading) merge(later modelReading) {
	if later.exact != 0 {
		r.exact = later.exact
	}
	if later.folded != 0 {
		r.folded = later.folded
	}
}

// setIn sets u's servedBy and servedFolded.
func (r modelReading) setIn(u *Usage) {
	u.servedBy = r.exact
	if r.folded != r.exact {
		u.servedFolded = r.folded
	}
}

// hashModel returns the modelHash of a model's name, never zero.
func hashModel[T ~string | ~[]byte](name T) modelHash {
	h, _ := hashModelWords(name)
	return h
}

// readModel reads a model value v, whole unless it was longer than
// maxModelValue: a string, or zero.
func readModel(v []byte, whole bool) modelHash {
	if !whole || len(v) < 2 || v[0] != '"' {
		return 0
	}
	if h, backslash := hashModelWords(v[1 : len(v)-1]); !backslash {
		return h
	}
	return hashEscapedModel(v)
}

// hashEscapedModel is hashModel of the name the string value v (with its
// quotes) spells with escapes, decoded as encoding/json decodes it; zero
// when v is not a valid string.
func hashEscapedModel(v []byte) modelHash {
	if end, _ := quoteEnd(v, 1); end != len(v)-1 {
		return 0
	}
	var buf [maxModelValue]byte // a decoded name is no longer than v, but for invalid UTF-8
	return hashModel(appendUnquoted(buf[:0], v[1:len(v)-1]))
}

// hashModelWords is hashModel, which reads name eight bytes at a time (the
// last eight overlapping those before; a name shorter than eight, in two
// overlapping halves or a byte at a time), and whether name holds a
// backslash, found in the same words.
func hashModelWords[T ~string | ~[]byte](name T) (h modelHash, backslash bool) {
	const mul = 0x9e3779b97f4a7c15
	n := len(name)
	var x, esc uint64
	for i := 0; i+8 < n; i += 8 {
		w := wordAt(name, i)
		x, esc = (x^w)*mul, esc|hasByte(w, '\\')
		x ^= x >> 29
	}
	var w uint64
	switch {
	case n >= 8:
		w = wordAt(name, n-8)
	case n >= 4:
		w = uint64(halfAt(name, 0)) | uint64(halfAt(name, n-4))<<32
	default:
		for i := range n {
			w |= uint64(name[i]) << (8 * i)
		}
		w |= highs &^ (1<<(8*n) - 1) // no zero bytes for hasByte to take for '\\'
	}
	// The length is mixed in after the bytes: xored into the first word,
	// it was traded for the first byte ("o3-mini" hashed as "`3-mmini").
	x = ((x^w)*mul ^ uint64(n)) * mul
	x ^= x >> 32
	return modelHash(max(uint32(x), 1)), esc|hasByte(w, '\\') != 0
}

// hasByte flags (with its high bit) the bytes of w that are c: one at
// least when w holds c.
func hasByte(w uint64, c byte) uint64 {
	x := w ^ lows*uint64(c)
	return (x - lows) &^ x & highs
}

// wordAt returns the eight bytes of s at s[i], little-endian.
func wordAt[T ~string | ~[]byte](s T, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// halfAt returns the four bytes of s at s[i], little-endian.
func halfAt[T ~string | ~[]byte](s T, i int) uint32 {
	s = s[i : i+4]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// inferenceGeo is where an answer says it ran, as Anthropic's
// usage.inference_geo reports it: a workspace whose default geo is "us"
// runs requests that name none in the US, billed at 1.1 times the
// model's prices. The dearer reading is the larger.
type inferenceGeo uint8

const (
	geoGlobal inferenceGeo = iota // "global", null, or not said
	geoUS                         // "us"
	geoOther                      // any other value: a region still to come
)

// suffix is the PriceTable key suffix of the geo (see tier): "" when it
// has none the Budget knows.
func (g inferenceGeo) suffix() string {
	if g == geoUS {
		return "@us"
	}
	return ""
}

// readGeo reads an inference_geo value; a value that is not a string is
// a region not known, the dearer reading.
func readGeo(v []byte) inferenceGeo {
	switch s, ok := jsonString(v); {
	case ok && s == "global":
		return geoGlobal
	case ok && s == "us":
		return geoUS
	}
	return geoOther
}

// tierReading follows the top-level "service_tier" members of one JSON
// object, as decoders read them: encoding/json takes the last string
// value of a key in any case (it keeps what it had on null, or a value of
// another type); an exact decoder takes the last value of the exact key.
// The object ran at Priority when either reading says "priority" (escapes
// decoded; the dearer reading). The zero value has read nothing.
type tierReading struct {
	decoded bool // encoding/json's reading is "priority"
	exact   bool // an exact decoder's reading is "priority"
}

// maxTierValue bounds the service_tier value read: "priority" takes 50
// bytes at most, each letter escaped. A longer value is a string that is
// not "priority", or not a string: encoding/json's reading is kept, the
// dearer side.
const maxTierValue = 64

// add reads v, the value of a service_tier key that matched as m; whole is
// false when v was longer than maxTierValue.
func (r *tierReading) add(m nameMatch, v []byte, whole bool) {
	str := whole && len(v) >= 2 && v[0] == '"'
	// Only escapes can spell "priority" otherwise.
	priority := str && (string(v) == `"priority"` ||
		bytes.IndexByte(v, '\\') >= 0 && matchName(v[1:len(v)-1], true, "priority") == exactMatch)
	if str {
		r.decoded = priority
	}
	if m == exactMatch {
		r.exact = priority
	}
}

// priority reports whether the object says it ran at Priority.
func (r *tierReading) priority() bool { return r.decoded || r.exact }
