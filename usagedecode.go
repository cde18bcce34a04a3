package httpguard

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
)

// This file decodes one usage object into readings of the fields in
// usage.go's table: its keys with their escapes, in any case a decoder
// would match, counts that decoders would read differently, and repeated
// objects; the scanners (jsonusage.go, sse.go) hand it the objects they find.

var errMalformedUsage = errors.New("malformed usage")

// usageReadings gathers the usage values of one JSON object — a "usage"
// key may repeat — as two kinds of decoder read them: encoding/json
// (merged: a repeated object merges into the earlier one, null changes
// nothing) and the others (last: the last object or null replaces what came
// before). A "usage" key in another case ("Usage") is one encoding/json
// reads (it matches keys case-insensitively) and the others skip: its
// value goes into merged alone, as does that of a key of a count or of a
// details object in another case (see member). Most answers hold one usage object, which
// both kinds read alike: last is kept apart from merged only once they
// may differ (see apart). The zero value has read nothing.
type usageReadings struct {
	merged, last wireUsage // last is meaningful only when split
	bad          bool      // a value was malformed
	loose        bool      // a count was a number but not a plain integer (see looseCount), or the value outgrew maxUsageValue
	folded       bool      // the value being read is under a key in another case
	split        bool      // last is kept apart; until then it reads as merged
}

// apart keeps last apart from merged, as merged reads now, before a change
// to one of them alone.
func (r *usageReadings) apart() {
	if !r.split {
		r.last, r.split = r.merged, true
	}
}

// restart starts the others' reading of a new usage object under the usage
// key exactly: it replaces what they read before.
func (r *usageReadings) restart() {
	if r.split || r.merged.set != 0 {
		r.last, r.split = wireUsage{}, true
	}
}

// clearLast clears, in the others' reading, the counts below names (bit f
// for count f): a details object's that a new one replaces, or one a null
// unsets.
func (r *usageReadings) clearLast(below uint64) {
	if r.split || r.merged.set&below != 0 {
		r.apart()
		r.last.clear(below)
	}
}

// add reads one usage value (an object or null), valid JSON: a lexer has
// checked it (see decode).
func (r *usageReadings) add(v []byte) {
	if err := r.decode(v, 0); err != nil {
		r.bad = true
	}
}

// decode reads v, the object usageObjects[obj] (0: the usage object).
// Unknown keys are skipped; a count that is not a number, and a details
// value that is not an object, are malformed; a number that is not an
// integer is read loosely (see looseCount), and a known key in another case
// as encoding/json reads it (see member).
// v is valid JSON, which the lexer that captured it checked: its members
// are found by validMembers, not lexed a second time.
func (r *usageReadings) decode(v []byte, obj uint8) error {
	o := &usageObjects[obj]
	switch {
	case r.folded: // last is what the other decoders read, without this value
		r.apart()
	case obj == 0:
		r.restart()
	default:
		r.clearLast(o.below)
	}
	switch {
	case isJSONNull(v):
		return nil
	case len(v) == 0 || v[0] != '{':
		return errMalformedUsage
	}
	for key, value := range validMembers(v) {
		i, m := lookupName(key, bytes.IndexByte(key, '\\') >= 0, o.names)
		if m == noMatch {
			continue
		}
		if err := r.member(o, i, m, value); err != nil {
			return err
		}
	}
	return nil
}

// member reads value, that of the member of o whose key matched
// o.names[k] as m. A key in another case is one encoding/json reads (it
// matches keys case-insensitively, and by Unicode's simple folding) and
// other decoders skip: its value goes into merged alone, as a usage key's
// in another case does (see usageReadings).
func (r *usageReadings) member(o *usageObject, k int, m nameMatch, value []byte) error {
	if m == foldMatch && !r.folded {
		r.apart()
		r.folded = true
		err := r.member(o, k, exactMatch, value)
		r.folded = false
		return err
	}
	if o.fields[k] == usageFieldCount {
		return r.decode(value, o.objects[k])
	}
	return r.count(o.fields[k], value)
}

// readFolded is readValue for a member whose key matched o.names[k] in
// another case: read into merged alone (see member).
func (r *usageReadings) readFolded(p []byte, i int, o *usageObject, k int) (end int, err error) {
	if r.folded {
		return r.readValue(p, i, o, k)
	}
	r.apart()
	r.folded = true
	end, err = r.readValue(p, i, o, k)
	r.folded = false
	return end, err
}

// usageObject is an object of counts a usage value may hold: the usage
// object itself, usageObjects[0], or an object in it (by the keys that
// lead to it, usageFields' parent).
type usageObject struct {
	names   []string      // the keys it may hold
	fields  []usageField  // each key's count, or usageFieldCount for an object of counts
	objects []uint8       // for an object of counts, its index in usageObjects
	below   uint64        // the counts in it, and in the objects in it: bit f for count f
	written []writtenName // for writtenKey; written[0] stands before the first key
	slots   [64]uint8     // the indexes in written by writtenSlot; 0 is none
}

// writtenName is a key providers write in a usage object, for writtenKey.
type writtenName struct {
	writtenPiece // the name quoted, and a colon
	// next is the key providers write after it; nil for none.
	next *writtenName
	k    int8       // the name's index in the object's names; -1 for a name it does not read
	f    usageField // the count it reads: fields[k], usageFieldCount for an object or none
}

// usageKeyOrders are the orders in which providers write the keys of the
// objects of a usage value (by their path, as usageFields' parent), with
// keys no count reads: writtenKey knows them all, and tries the key that
// follows the last one first (in the first order that has one after it).
var usageKeyOrders = map[string][][]string{
	"": {
		{"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "completion_tokens_details"},                  // OpenAI
		{"prompt_tokens_details", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens"},                                              // DeepSeek
		{"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation", "output_tokens", "service_tier"}, // Anthropic
		{"input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"},                                            // OpenAI Responses
		{"total_tokens", "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details"},                            // OpenAI Images
	},
	"prompt_tokens_details": {
		{"cached_tokens", "audio_tokens"},
		{"cached_tokens", "text_tokens", "audio_tokens", "image_tokens"}, // new-api
	},
	"completion_tokens_details": {
		{"reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens"},
		{"reasoning_tokens", "image_tokens"}, // OpenRouter
	},
	"input_tokens_details":  {{"cached_tokens"}, {"text_tokens", "image_tokens"}},    // OpenAI Responses; Images
	"output_tokens_details": {{"reasoning_tokens"}, {"text_tokens", "image_tokens"}}, // OpenAI Responses; Images
	"cache_creation":        {{"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}},
	"prompt_tokens_details/cache_creation_token_details": {{"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}}, // LiteLLM
}

// indexWritten fills o.written and o.slots with o's names and those of
// orders, and links each to the one providers write after it.
func (o *usageObject) indexWritten(orders [][]string) {
	o.written = []writtenName{{}}
	for _, name := range slices.Concat(o.names, slices.Concat(orders...)) {
		if len(name) < 5 { // "cost": too short a member to compare a word at a time; key reads it
			continue
		}
		o.indexName(name)
	}
	for _, order := range orders { // o.written is whole: its elements stay put
		prev := &o.written[0]
		for _, name := range order {
			w := &o.written[o.indexName(name)]
			if prev.next == nil {
				prev.next = w
			}
			prev = w
		}
	}
}

// indexName returns the index in o.written of name, added if need be.
func (o *usageObject) indexName(name string) uint8 {
	member := `"` + name + `":`
	for j, w := range o.written {
		if w.s == member {
			return uint8(j)
		}
	}
	w := writtenName{writtenPiece: newWrittenPiece(member), k: int8(slices.Index(o.names, name)), f: usageFieldCount}
	if w.k >= 0 {
		w.f = o.fields[w.k]
	}
	o.written = append(o.written, w)
	h := writtenSlot(w.first)
	for ; o.slots[h] != 0; h = (h + 1) % uint64(len(o.slots)) {
	}
	o.slots[h] = uint8(len(o.written) - 1)
	return o.slots[h]
}

// usageObjects lists the usage object and the objects of counts in it,
// from usageFields.
var usageObjects = func() []usageObject {
	objs := []usageObject{{}}
	index := map[string]uint8{"": 0}
	parentOf := func(path string) (parent, key string) {
		if i := strings.LastIndexByte(path, '/'); i >= 0 {
			return path[:i], path[i+1:]
		}
		return "", path
	}
	var object func(path string) uint8
	object = func(path string) uint8 {
		if i, ok := index[path]; ok {
			return i
		}
		parent, key := parentOf(path)
		p, i := object(parent), uint8(len(objs))
		objs, index[path] = append(objs, usageObject{}), i
		objs[p].names, objs[p].fields, objs[p].objects = append(objs[p].names, key), append(objs[p].fields, usageFieldCount), append(objs[p].objects, i)
		return i
	}
	for f, uf := range usageFields {
		if uf.key == "" { // a sum of iterations
			continue
		}
		o := object(uf.parent)
		objs[o].names, objs[o].fields, objs[o].objects = append(objs[o].names, uf.key), append(objs[o].fields, usageField(f)), append(objs[o].objects, 0)
		for path := uf.parent; usageField(f) < wireCounts; path, _ = parentOf(path) {
			objs[index[path]].below |= 1 << f
			if path == "" {
				break
			}
		}
	}
	for path, o := range index {
		objs[o].indexWritten(usageKeyOrders[path])
	}
	return objs
}()

// usageObjectKeys is the usage object.
var usageObjectKeys = &usageObjects[0]

// usageValue reads a usage value as it passes, a chunk at a time, with a
// lexer of its own: a scanner hands it the value of a top-level "usage"
// member (jsonLexer.handOff), so that the value's bytes are lexed once, not
// with the answer and again to decode it. A details object is captured
// and, once the lexer has checked it, walked by decode: a lexer of its own
// would save little over the walk and outgrow the size class of the
// pooled answer scanner (see jsonUsageScanner and jsonScanner). It reads into a
// usageReadings as add does; a value longer than maxUsageValue is loose
// (not ok: see usageReadings.get), one with a member too long to capture
// malformed. (Its lexer counts nesting from the value: a usage value
// nested deep enough for the difference to matter is longer than that,
// and so not ok.) A value whole in its first chunk is read
// by usageReadings.readWhole, in one pass, without the lexer; one that
// readWhole declines is lexed from its first byte.
type usageValue struct {
	lex     jsonLexer
	capture valueCapture // the value of a count or details member that spans reads
	into    *usageReadings
	size    int32     // bytes read, up to maxUsageValue+1
	key     uint8     // the member being read: its index in usageObjectKeys
	keyAs   nameMatch // how its key matched
	first   byte      // the value's first byte
	lexed   bool      // lex has read, or the lexer of the scanner that holds v: see jsonUsageScanner.reset
}

// start makes v ready to read a value into r, the value of a usage key
// that matched m: exactly, or in another case (see usageReadings).
func (v *usageValue) start(r *usageReadings, m nameMatch) {
	v.into, v.size, v.first = r, 0, 0 // read resets the lexer, if it needs it
	v.capture.on = false
	if r.folded = m == foldMatch; r.folded {
		r.apart()
	} else {
		r.restart()
	}
}

// read follows p, the next bytes of the value, and returns where the value
// ends in p, or -1 when it goes on; ok is false when p is not JSON.
func (v *usageValue) read(p []byte) (end int, ok bool) {
	if v.size == 0 {
		if len(p) > 0 {
			v.first = p[0]
			if end := v.into.readWhole(p); end > 0 {
				v.size = int32(end) // readWhole takes no value over maxUsageValue
				return end, true
			}
		}
		v.lex, v.lexed = jsonLexer{}, true // the lexer reads the value from its first byte
	}
	end = readMembers(&v.lex, &v.capture, p, v)
	switch {
	case v.lex.state == lexError:
		v.into.bad = true
		return 0, false
	case end < 0:
		v.size = int32(min(int(v.size)+len(p), maxUsageValue+1))
		return -1, true
	}
	switch v.size = int32(min(int(v.size)+end, maxUsageValue+1)); {
	case v.first != '{' && v.first != 'n':
		v.into.bad = true // neither an object nor null
	case v.size > maxUsageValue:
		// Longer than any provider writes, yet read whole as it passed (a
		// member too long to capture spoils it): not trusted, but charged
		// when it costs more than the reservation, as SDKs read it.
		v.into.loose = true
	}
	return end, true
}

// readWhole reads the usage value at the start of p when it is an object
// whole in p, in one pass that checks it and decodes it together: its
// members are read as readMember reads them, in order. It returns where
// the object ends in p, or 0, leaving r as it was, when it is not whole in
// p, not JSON, longer than maxUsageValue, or nested deeper than
// skipContainer goes: the value's lexer then reads it from its first byte.
func (r *usageReadings) readWhole(p []byte) int {
	if len(p) < 2 || p[0] != '{' {
		return 0
	}
	if r.split || r.bad || r.merged.set != 0 { // a usage read before, kept to be put back
		was := *r
		if end := r.wholeObject(p); end > 0 {
			return end
		}
		*r = was
		return 0
	}
	if end := r.wholeObject(p); end > 0 { // most often: the first usage, nothing to copy
		return end
	}
	*r = usageReadings{folded: r.folded}
	return 0
}

// wholeObject is readWhole's read, which may leave r changed when it
// returns 0.
func (r *usageReadings) wholeObject(p []byte) int {
	if end, _ := r.readObject(p, 0, 0); end > 0 && end <= maxUsageValue {
		return end
	}
	return 0
}

// readObject reads the object usageObjects[obj] that opens at p[i] and
// returns where it ends in p, 0 when p does not hold it whole and valid.
// The usage object (obj 0) reads as usageValue's readKey and readMember
// do: a member that is malformed marks r bad, and the next is read. An
// object in it reads as decode does: its first malformed member is err,
// and the members after it are only checked.
func (r *usageReadings) readObject(p []byte, i int, obj uint8) (end int, err error) {
	o := &usageObjects[obj]
	if i = skipSpace(p, i+1); i < len(p) && p[i] == '}' {
		return i + 1, nil
	}
	prev := &o.written[0]
	for {
		if err == nil { // most often, every member: a count under the key providers write next
			var closed bool
			if i, prev, closed = r.plainMembers(p, i, prev); closed {
				return i, nil
			}
			i = skipSpace(p, i)
		}
		var k, colon int
		var m nameMatch
		w := prev.next // most often, the key providers write after prev: tried in line
		if w == nil || !w.at(p, i, 0) {
			w = o.writtenKey(p, i)
		}
		if w != nil {
			k, m, colon, prev = int(w.k), nameMatch(b2u(w.k >= 0)), i+len(w.s)-1, w
		} else if k, m, colon = o.key(p, i); colon == 0 {
			return 0, nil
		}
		if i = skipSpace(p, colon+1); i >= len(p) {
			return 0, nil
		}
		var e error
		switch {
		case m == noMatch || err != nil:
			i = skipValue(p, i)
		case m == foldMatch:
			i, e = r.readFolded(p, i, o, k)
		default:
			if f := o.fields[k]; f < usageGeo { // a count, most often written plain
				if n, end := plainCount(p, i); end > 0 {
					r.put(f, n)
					i = end
					break
				}
			}
			i, e = r.readValue(p, i, o, k)
		}
		if i <= 0 {
			return 0, nil
		}
		switch {
		case e == nil:
		case obj == 0:
			r.bad = true
		default:
			err = e
		}
		if i = skipSpace(p, i); i >= len(p) {
			return 0, nil
		}
		switch p[i] {
		case ',':
			i = skipSpace(p, i+1)
		case '}':
			return i + 1, err
		default:
			return 0, nil
		}
	}
}

// plainMembers reads, for readObject, the members from p[i] that are
// written as providers write them most: the key providers write after
// prev's, a count written plain, and ',' or '}' straight after it. It
// reads them as readObject does, and returns where it stopped (at the next
// key, or the space before it; i when it read none), the last key read,
// and whether it read the object's '}', which i is then just past.
func (r *usageReadings) plainMembers(p []byte, i int, prev *writtenName) (int, *writtenName, bool) {
	for w := prev.next; w != nil && w.f < usageGeo && w.at(p, i, 0); w = w.next { // not an object of counts, nor where the answer ran
		n, end := plainCount(p, i+len(w.s))
		if end == 0 {
			break
		}
		r.put(w.f, n)
		if prev, i = w, end+1; p[end] == '}' {
			return i, prev, true
		}
	}
	return i, prev, false
}

// key reads the key at p[i] of a member of o, and returns the index in
// o.names of the name it matches, how, and where the colon after it is;
// colon is 0 when p does not hold them valid.
func (o *usageObject) key(p []byte, i int) (k int, m nameMatch, colon int) {
	if i >= len(p) || p[i] != '"' {
		return 0, 0, 0
	}
	end, escaped := quoteEnd(p, i+1)
	if end < 0 {
		return 0, 0, 0
	}
	k, m = lookupName(p[i+1:end], escaped, o.names)
	if colon = skipSpace(p, end+1); colon >= len(p) || p[colon] != ':' {
		return 0, 0, 0
	}
	return k, m, colon
}

// writtenKey returns the key of o.written at p[i] when it is written as
// providers write keys (the name quoted, then the colon), found by its
// first eight bytes; nil when it is not. (readObject tries the key
// providers write after the one before first.)
func (o *usageObject) writtenKey(p []byte, i int) *writtenName {
	if len(p)-i < 8 {
		return nil
	}
	first := binary.LittleEndian.Uint64(p[i:])
	for h := writtenSlot(first); o.slots[h] != 0; h = (h + 1) % uint64(len(o.slots)) {
		if w := &o.written[o.slots[h]]; w.first == first && w.at(p, i, 0) {
			return w
		}
	}
	return nil
}

// writtenSlot is where a name whose member starts with the eight bytes
// first is in usageObject.slots, or after it.
func writtenSlot(first uint64) uint64 { return first * 0x9e3779b97f4a7c15 >> 58 }

// readValue reads the value at p[i] of the member o.names[k] as count or
// decode reads it (but for a count written plain, which readObject reads),
// and returns where it ends in p, 0 or less when p does not hold it whole
// and valid.
func (r *usageReadings) readValue(p []byte, i int, o *usageObject, k int) (end int, err error) {
	f := o.fields[k]
	if f == usageFieldCount && p[i] == '{' { // a details object, read as decode reads it
		if !r.folded {
			r.clearLast(usageObjects[o.objects[k]].below)
		}
		return r.readObject(p, i, o.objects[k])
	}
	if end = skipValue(p, i); end <= 0 {
		return 0, nil
	}
	if f == usageFieldCount {
		return end, r.decode(p[i:end], o.objects[k])
	}
	return end, r.count(f, p[i:end])
}

// plainCount reads the count at p[i] when it is written plain: digits
// without a leading zero, fewer than 19 (so that parseUsageCount reads
// them), then ',' or '}'. end is 0 when it is not.
func plainCount(p []byte, i int) (n int64, end int) {
	j := i
	for ; j < len(p); j++ {
		d := p[j] - '0'
		if d > 9 {
			break
		}
		n = n*10 + int64(d)
	}
	if j == i || j-i > 18 || j == len(p) || p[i] == '0' && j > i+1 || p[j] != ',' && p[j] != '}' {
		return 0, 0
	}
	return n, j
}

// null reports whether the value read was null.
func (v *usageValue) null() bool { return v.first == 'n' }

// readKey starts capturing the value of a key of the usage object, in
// any case (see usageReadings.member); other keys are skipped.
func (v *usageValue) readKey() {
	raw, escaped := v.lex.key()
	if i, m := lookupName(raw, escaped, usageObjectKeys.names); m != noMatch {
		v.key, v.keyAs = uint8(i), m
		v.capture.start(maxUsageValue)
	}
}

func (v *usageValue) readMember(p []byte) {
	if !v.capture.on {
		return
	}
	value, whole := v.capture.end(p, &v.lex)
	if !whole || v.into.member(usageObjectKeys, int(v.key), v.keyAs, value) != nil {
		v.into.bad = true
	}
}

func (v *usageValue) readString()      {}
func (v *usageValue) readValue([]byte) {}

// count reads a count: an integer (or another number, see looseCount), or
// null (encoding/json keeps what it had; other decoders have none); for
// usageGeo, an inferenceGeo; for
// usageIterations, the sums of an array of iterations.
func (r *usageReadings) count(f usageField, v []byte) error {
	below := uint64(1) << f
	if f == usageIterations {
		below = iterationCounts
	}
	if isJSONNull(v) {
		if !r.folded {
			r.clearLast(below)
		}
		return nil
	}
	var n int64
	var err error
	switch f {
	case usageGeo:
		n = int64(readGeo(v))
	case usageCost:
		var ok bool
		if n, ok = readCost(v); !ok {
			return nil // not read: the counts are
		}
	case usageIterations:
		sums, loose, err := readIterations(v)
		if err != nil {
			return err
		}
		r.loose = r.loose || loose
		// A later array replaces an earlier one, in every decoder.
		r.merged.clear(below)
		if r.split && !r.folded {
			r.last.clear(below)
		}
		for i, n := range sums {
			r.put(iterInputTokens+usageField(i), n)
		}
		return nil
	default:
		if n, err = parseUsageCount(v); err != nil && len(v) > 0 && (v[0] == '-' || '0' <= v[0] && v[0] <= '9') {
			n, err = r.looseCount(v), nil
		}
	}
	if err != nil {
		return err
	}
	r.put(f, n)
	return nil
}

// looseCount reads v, a JSON number that is not a plain integer (a
// fraction, an exponent, 19 digits or more: 50000.0, as Python's
// json.dumps writes a float, or 5e4), rounded up; -1 when it is negative,
// a lie. Decoders that take any number read it (openai-python's models
// keep it, JavaScript reads a number), integer ones refuse it
// (encoding/json into an int): the usage is not ok (see get), and charged
// its dearer reading when that costs more than the reservation.
func (r *usageReadings) looseCount(v []byte) int64 {
	r.loose = true
	return looseNumber(v)
}

// looseNumber is looseCount's reading of v, a JSON number.
func looseNumber(v []byte) int64 {
	x, _ := strconv.ParseFloat(string(v), 64) // valid JSON: ±Inf when out of range
	switch {
	case x < 0:
		return -1
	case x > maxUsageTokens:
		return maxUsageTokens + 1
	}
	return int64(math.Ceil(x))
}

// readCost reads v, the value of a usage's cost (OpenRouter's: what it
// billed the answer, in dollars, its credits; the route it chose, an open
// model's provider, may bill more than the price table says), in
// micro-dollars, rounded up, at most maxUsageTokens+1 ($1,000 and more:
// a lie, see inRange). ok is false for anything but a number that is not
// negative (a string, a relay's own field of that name), which is not
// read.
func readCost(v []byte) (micros int64, ok bool) {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	m, err := ParseMoney(string(v))
	if err != nil { // an exponent beyond ParseMoney's, or an amount beyond Money's range
		x, _ := strconv.ParseFloat(string(v), 64) // valid JSON: +Inf when out of range
		return int64(math.Ceil(min(x*1e6, maxUsageTokens+1))), true
	}
	return min((int64(m)+999)/1000, maxUsageTokens+1), true
}

// iterationKeys are the keys readIterations reads in an iteration, in the
// order of its sums.
var iterationKeys = [...]string{"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}

// foldsIterationKey reports whether key is a key readIterations reads,
// in another case: encoding/json would read it, others skip it.
func foldsIterationKey(key string) bool {
	folds := func(k string) bool { return key != k && strings.EqualFold(key, k) }
	return folds("type") || slices.ContainsFunc(iterationKeys[:], folds)
}

// readIterations reads v, the value of an Anthropic usage's iterations:
// the sampling steps one request ran, which Anthropic bills each (server
// compaction's summary, context_management's compact_20260112, is a step
// of its own that the top-level counts leave out). It returns the sums of
// their input, output, cache read and cache write tokens, each at most
// maxUsageTokens+1. A count that is a number but not a plain integer is
// read as a top-level one is (see looseCount): rounded up, and loose is
// true. An iteration of a type other than "message" or "compaction" (the
// advisor tool's "advisor_message" runs another model, at that model's
// prices), a count that is not a number or is negative, or a key in
// another case is malformed: the answer is then charged its reservation.
// It runs only for answers that hold iterations, so it decodes with
// encoding/json.
func readIterations(v []byte) (sums [4]int64, loose bool, err error) {
	var steps []map[string]json.RawMessage
	if err := json.Unmarshal(v, &steps); err != nil {
		return sums, false, errMalformedUsage
	}
	for _, step := range steps {
		if step == nil { // a null iteration
			return sums, false, errMalformedUsage
		}
		for key := range step {
			if foldsIterationKey(key) {
				return sums, false, errMalformedUsage
			}
		}
		var kind string
		if json.Unmarshal(step["type"], &kind) != nil || kind != "message" && kind != "compaction" {
			return sums, false, errMalformedUsage
		}
		for i, key := range iterationKeys {
			raw := step[key]
			if raw == nil || isJSONNull(raw) {
				continue
			}
			n, err := parseUsageCount(raw)
			if err != nil && (raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9') { // a number: valid JSON
				n, err, loose = looseNumber(raw), nil, true
			}
			if err != nil || n < 0 {
				return sums, false, errMalformedUsage
			}
			sums[i] = min(sums[i]+n, maxUsageTokens+1)
		}
	}
	return sums, loose, nil
}

// put reads n as count f: encoding/json's reading, and, under the usage
// key exactly, the others' (which, not yet apart, is merged).
func (r *usageReadings) put(f usageField, n int64) {
	r.merged.put(f, n)
	if r.split && !r.folded {
		r.last.put(f, n)
	}
}

// get returns the usage read (r's own, not a copy), and whether both
// kinds of decoder read it the same.
func (r *usageReadings) get() (*wireUsage, bool) {
	return &r.merged, !r.bad && !r.loose && (!r.split || r.merged.equal(&r.last))
}

// coverReadings makes u, read from r's dearest, cost at least what each
// of r's readings costs, at any prices (see coverBoth): dearest takes the
// smaller cached part, the dearer only while cached input is the cheaper.
func (r *usageReadings) coverReadings(u *Usage) {
	readings := [...]*wireUsage{&r.merged, &r.last}
	for i, w := range readings {
		if i > 0 && !r.split {
			break
		}
		v, x := *w, Usage{}
		v.foldTotal()
		if v.readUsage(&x) && x.InputTokens|x.OutputTokens != 0 {
			u.coverBoth(&x)
		}
	}
}

// dearest returns, for a usage that is well formed but that the two kinds
// of decoder read differently (a repeated "usage", a null after one), the
// two readings as one, each count the dearer: the larger, but for the
// cached part of an input (a discount) the smaller, none when a reading
// has none. The SDK may read either, and the provider billed what it
// counted: not ok, the answer is charged its reservation, or this when it
// costs more. ok is false for a malformed usage.
func (r *usageReadings) dearest() (w wireUsage, ok bool) {
	w = r.merged
	w.foldTotal() // each reading's output as it is read, before counts of the two are mixed
	last := w
	if r.split {
		last = r.last
		last.foldTotal()
	}
	for f := range wireCounts {
		v := last.get(f)
		switch {
		case f == promptCachedTokens || f == promptCacheHitTokens || f == inputCachedTokens:
			if !last.has(f) {
				w.unset(f)
			} else if v < w.get(f) {
				w.put(f, v)
			}
		case !last.has(f):
		case !w.has(f) || v > w.get(f):
			w.put(f, v)
		}
	}
	return w, !r.bad
}

// parseUsageCount reads a JSON integer; anything else (a fraction, an exponent,
// a string) is malformed. A hand parse: strconv.ParseInt(string(b)) would
// allocate, and this runs for every count of every usage object.
func parseUsageCount(b []byte) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 || (b[0] == '0' && len(b) > 1) {
		return 0, errMalformedUsage // 19+ digits are above maxUsageTokens anyway
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errMalformedUsage
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}
