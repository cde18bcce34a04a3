package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// pricesFuzzSeeds are price tables, good and bad, that FuzzLoadPrices
// starts from: those the tests load, ExamplePrices' own, and inputs at the
// edges of what LoadPrices reads.
var pricesFuzzSeeds = []string{
	`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42},
	 "claude-sonnet-4-5": {"input": 3, "cached_input": 0.30, "cache_write": 3.75, "output": 15.00},
	 "*": {"input": 10, "output": 30}}`,
	`{"deepseek-chat": {"input": 0.28, "cached_input": 0.028, "output": 0.42},
	 "gpt-4.1": {"input": 2.00, "cached_input": 0.50, "output": 8.00},
	 "claude-sonnet-4-5": {"input": 3.00, "cached_input": 0.30, "cache_write": 3.75, "cache_write_1h": 6.00, "output": 15.00,
	   "long_context": {"above": 200000, "input": 6.00, "cached_input": 0.60, "cache_write": 7.50, "cache_write_1h": 12.00, "output": 22.50}}}`,
	`{"a": {"input": 1, "b": 2, "a@priority": {"input": 3, "output": 0}}`,
	`{"m": {"input": 1, "output": 1, "audio_input": 40, "audio_output": 80, "image_input": 10, "image_output": 30, "request": 0.005}}`,
	`{"local-model": {"input": 0, "output": 0}}`,
	`{"m":{"input":-0.1,"output":1}}`,
	`{"m":{"input":1,"outptu":1}}`,
	`{"m":{"input":"cheap","output":1}}`,
	`{"m":{"input":1e30,"output":1}}`,
	`[1]`,
	`{"m":{"input":1,"output":1}} {"n":{"input":0,"output":0}}`,
	`{"m": {"input": "0.28", "output": 0.42, "cached_input": null}}`,
	`{"m": {"input": "$0.28", "output": 0.42}}`,
	`{"m": {"\u0069nput": 1, "output": 1}}`,
	`{"m": {"input": 1, "Input": 2, "output": 1}}`,
	`{"m": {"Input": 1, "OUTPUT": 1}}`,
	`{"m": {"input": 1, "\u0069nput": 0, "output": 1}}`,
	`{"m": {"input": 1e400, "output": 1}}`,
	`{"m": {"input": -0, "output": -0.0}}`,
	`{"m": {"input": "0.0000000001", "output": 1}}`,
	`{"m": {"input": 0.0000000005, "output": 4e-10}}`,
	`{"m": {"input": 1e-30, "output": 0e-31}}`,
	`{"m": {"input": 1E+0000000000000000000005, "output": 1e99999999999999999999}}`,
	`{"m": {"input": 9223372036.854775807, "output": 9223372036.854775808}}`,
	`null`,
	`{"m": null}`,
	`{"m": {"input": null, "output": 1}}`,
	`{"m": {"input": 1, "output": 1, "long_context": null}}`,
	`{"m": {"input": 1, "output": 1, "long_context": {"above": 1, "input": 1, "output": 1, "long_context": {"above": 2, "input": 1, "output": 1}}}}`,
	`{"m": {"input": 1, "output": 1, "long_context": {"above": "200000", "input": 1, "output": 1, "request": 1000}}}`,
	`{"m": {"input": 1, "output": 1, "long_context": {"above": 0, "input": 1, "output": 1}}}`,
	`{"m": {"input": 1, "output": 1, "long_context": {"above": 1.5, "input": 1, "output": 1}}}`,
	`{"m": {"input": 1, "output": 1, "Long_Context": {"Above": 9223372036854775807, "input": 1, "output": 1}}}`,
	"\xef\xbb\xbf{\"m\": {\"input\": 1, \"output\": 1}}",
	`{"m": {"input": 1, "output": 1}}]`,
	`{"m": {"input": 1, "output": 1}} x`,
	`{"m": {"input": 1, "output": 1}, "m": {"input": 0, "output": 0}}`,
	`{"m": {"input": 1, "output": 1}, "\u006d": {"input": 0, "output": 0}}`,
	`{" m": {"input": 1, "output": 1}}`,
	`{"": {"input": 1, "output": 1}}`,
	"\uFEFF{\"m\": {\"input\": 1, \"output\": 1}}",
	`{"m": {"input": 1, "output": 1, "reque\u017ft": 1}}`,
	"{\"m\": {\"input\": 1, \"output\": \"\xff\"}}",
	"{\"\xff\": {\"input\": 1, \"output\": 1}, \"\xfe\": {\"input\": 1, \"output\": 1}}",
	"{\"a\": {\"input\": 1, \"output\": 1},\n \"b\": {\"input\": 1, \"output\": 1},\n}",
	"{\"a\": {\"input\": 1,\n \"output\": 1}",
	``,
	` `,
	`"gpt"`,
	`{"m": 0.28}`,
	`{"httpguard: m": {"input": 1}}`,
}

// FuzzLoadPrices checks LoadPrices over any input: it never panics, its
// errors start with "httpguard: " once and are UTF-8, a table it accepts
// has no negative price and no price above zero rounded to $0, and it
// accepts what the encoding/json reference below accepts (the behaviour
// of the implementation before the errors were rewritten), giving the
// same table.
func FuzzLoadPrices(f *testing.F) {
	for _, s := range pricesFuzzSeeds {
		f.Add([]byte(s))
	}
	for _, t := range []PriceTable{ExamplePrices(), {"a": {Input: 1, Output: 2}, "*@fast": {Request: 3}}} {
		f.Add(pricesJSON(t))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := LoadPrices(bytes.NewReader(b))
		want, werr := referenceLoadPrices(b)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "httpguard: ") {
				t.Fatalf("error without its prefix: %q", msg)
			}
			if rest := msg[len("httpguard: "):]; strings.Contains(rest, "httpguard: ") && !bytes.Contains(b, []byte("httpguard")) {
				t.Fatalf("error with its prefix twice: %q", msg)
			}
			if !utf8.ValidString(msg) {
				t.Fatalf("error not UTF-8: %q", msg)
			}
			if got != nil {
				t.Fatalf("a table with an error: %v", got)
			}
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("LoadPrices: %v; reference: %v", err, werr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("LoadPrices: %#v\nreference: %#v", got, want)
		}
		for model, p := range got {
			for _, q := range []*Price{&p, longPrice(p)} {
				if q == nil {
					continue
				}
				if v := reflect.ValueOf(*q); true {
					for i := 0; i < v.NumField(); i++ {
						if m, ok := v.Field(i).Interface().(Money); ok && m < 0 {
							t.Fatalf("model %q: negative %s %v", model, v.Type().Field(i).Name, m)
						}
					}
				}
			}
		}
	})
}

func longPrice(p Price) *Price {
	if p.LongContext == nil {
		return nil
	}
	return &p.LongContext.Price
}

// pricesJSON writes t as LoadPrices reads it.
func pricesJSON(t PriceTable) []byte {
	fields := func(p Price) map[string]any {
		m := map[string]any{"input": json.Number(p.Input.decimal()), "output": json.Number(p.Output.decimal())}
		for name, v := range map[string]Money{"cached_input": p.CachedInput, "cache_write": p.CacheWrite, "cache_write_1h": p.CacheWrite1h,
			"audio_input": p.AudioInput, "audio_output": p.AudioOutput, "image_input": p.ImageInput, "image_output": p.ImageOutput, "request": p.Request} {
			if v != 0 {
				m[name] = json.Number(v.decimal())
			}
		}
		return m
	}
	out := map[string]any{}
	for model, p := range t {
		m := fields(p)
		if lc := p.LongContext; lc != nil {
			l := fields(lc.Price)
			l["above"] = lc.Above
			m["long_context"] = l
		}
		out[model] = m
	}
	b, err := json.Marshal(out)
	if err != nil {
		panic(err)
	}
	return b
}

// decimal writes m in dollars, exactly.
func (m Money) decimal() string {
	return new(big.Rat).SetFrac(big.NewInt(int64(m)), big.NewInt(int64(Dollar))).FloatString(9)
}

// referenceLoadPrices is LoadPrices as plain encoding/json reads it,
// with the rules of the implementation before the rewrite (b3c991e):
// json.Number amounts (a number, or a string holding one; null is left
// out), field names matched in any case, a key written twice refused (in
// any case within a price), exact decimal amounts rounded half up to the
// nano-dollar with exponents within ±30, none negative, none above zero
// rounded to zero.
func referenceLoadPrices(b []byte) (PriceTable, error) {
	b = bytes.TrimPrefix(b, []byte("\uFEFF")) // one byte order mark is skipped
	dec := json.NewDecoder(bytes.NewReader(b))
	var whole json.RawMessage
	if err := dec.Decode(&whole); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	if err := refRepeatedKeys(whole); err != nil {
		return nil, err
	}
	if string(whole) == "null" {
		return nil, errors.New("null")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(whole, &raw); err != nil {
		return nil, err
	}
	out := PriceTable{}
	for model, v := range raw {
		if model == "" || strings.TrimSpace(model) != model {
			return nil, errors.New("empty or spaces")
		}
		fields, err := refObject(v, "long_context")
		if err != nil {
			return nil, err
		}
		p, err := refPrice(fields)
		if err != nil {
			return nil, err
		}
		if lcRaw, ok := fields["long_context"]; ok && string(lcRaw) != "null" {
			lf, err := refObject(lcRaw, "above")
			if err != nil || lf == nil {
				return nil, fmt.Errorf("long_context: %v", err)
			}
			var above json.Number
			if a, ok := lf["above"]; ok {
				if err := json.Unmarshal(a, &above); err != nil {
					return nil, err
				}
			}
			n, err := strconv.ParseInt(string(above), 10, 64)
			if err != nil || n <= 0 {
				return nil, errors.New("above")
			}
			lp, err := refPrice(lf)
			if err != nil {
				return nil, err
			}
			p.LongContext = &LongContextPrice{Above: n, Price: lp}
		}
		out[model] = p
	}
	return out, nil
}

var refAmountNames = []string{"input", "cached_input", "cache_write", "cache_write_1h", "output",
	"audio_input", "audio_output", "image_input", "image_output", "request"}

// refObject reads an object of prices, and extra, by their lower-case
// names: null reads as an empty object.
func refObject(v json.RawMessage, extra string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	for k, x := range m {
		name := ""
		for _, n := range append(refAmountNames, extra) {
			if strings.EqualFold(k, n) {
				name = n
			}
		}
		if name == "" {
			return nil, fmt.Errorf("unknown field %q", k)
		}
		out[name] = x
	}
	return out, nil
}

func refPrice(fields map[string]json.RawMessage) (Price, error) {
	var p Price
	dst := []*Money{&p.Input, &p.CachedInput, &p.CacheWrite, &p.CacheWrite1h, &p.Output,
		&p.AudioInput, &p.AudioOutput, &p.ImageInput, &p.ImageOutput, &p.Request}
	for i, name := range refAmountNames {
		var n json.Number
		if v, ok := fields[name]; ok {
			if err := json.Unmarshal(v, &n); err != nil {
				return Price{}, err
			}
		}
		if n == "" {
			if name == "input" || name == "output" {
				return Price{}, errors.New("missing")
			}
			continue
		}
		m, err := refMoney(string(n))
		if err != nil {
			return Price{}, err
		}
		limit := maxPrice
		if name == "request" {
			limit = maxToolPrice
		}
		if m > limit {
			return Price{}, errors.New("too large")
		}
		*dst[i] = m
	}
	return p, nil
}

// refMoney is a JSON number's value in nano-dollars, rounded half up,
// refused when negative, when above zero but rounded to zero, or when its
// exponent is beyond ±30.
func refMoney(s string) (Money, error) {
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e < -30 || e > 30 {
			return 0, errors.New("exponent")
		}
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, errors.New("not a number")
	}
	if r.Sign() < 0 {
		return 0, errors.New("negative")
	}
	nano := new(big.Rat).Mul(r, big.NewRat(int64(Dollar), 1))
	nano.Add(nano, big.NewRat(1, 2))
	n := new(big.Int).Quo(nano.Num(), nano.Denom())
	if !n.IsInt64() {
		return 0, errors.New("out of range")
	}
	if n.Sign() == 0 && r.Sign() != 0 {
		return 0, errors.New("below a nano-dollar")
	}
	return Money(n.Int64()), nil
}

// refRepeatedKeys refuses a key written twice in one object: a model
// exactly, a field in any case.
func refRepeatedKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var walk func(depth int) error
	walk = func(depth int) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			var keys []string
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key := k.(string)
				for _, prev := range keys {
					if prev == key || depth > 0 && strings.EqualFold(prev, key) {
						return fmt.Errorf("%q twice", key)
					}
				}
				keys = append(keys, key)
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		case json.Delim('['):
			for dec.More() {
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		}
		return nil
	}
	return walk(0)
}

// The seeds hold at least one table of each kind the fuzzer must reach:
// accepted, and refused.
func TestFuzzLoadPricesSeedsAgreeWithTheReference(t *testing.T) {
	accepted := 0
	for _, s := range pricesFuzzSeeds {
		if _, err := referenceLoadPrices([]byte(s)); err == nil {
			accepted++
		}
	}
	if accepted == 0 || accepted == len(pricesFuzzSeeds) {
		t.Fatalf("%d of %d seeds accepted", accepted, len(pricesFuzzSeeds))
	}
}
