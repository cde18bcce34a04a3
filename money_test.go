package httpguard

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMoneySumsAreExact(t *testing.T) {
	var sum Money
	for range 10 {
		sum += Dollars(0.10)
	}
	assert.Equal(t, Dollar, sum)
	assert.Equal(t, Money(28_000_000), Dollars(0.028))
}

func TestDollarsRoundsToNearestAndSaturates(t *testing.T) {
	assert.Equal(t, Money(2), Dollars(1.5e-9))
	assert.Equal(t, Money(1), Dollars(1.4e-9))
	assert.Equal(t, Money(-1_500_000_000), Dollars(-1.5))
	assert.Equal(t, Money(0), Dollars(math.NaN()))
	assert.Equal(t, maxMoney, Dollars(math.Inf(1)))
	assert.Equal(t, Money(math.MinInt64), Dollars(math.Inf(-1)))
}

func TestMoneyStringPrintsDollarsTrimmed(t *testing.T) {
	for m, want := range map[Money]string{
		0:                    "$0.00",
		Dollar:               "$1.00",
		1_234_567_891:        "$1.234567891",
		1_200_000:            "$0.0012",
		-50 * Cent:           "-$0.50",
		1:                    "$0.000000001",
		maxMoney:             "$9223372036.854775807",
		Money(math.MinInt64): "-$9223372036.854775808",
	} {
		assert.Equal(t, want, m.String())
	}
}

func TestParseMoneyReadsDecimalsExactly(t *testing.T) {
	for s, want := range map[string]Money{
		"0.028":                28_000_000,
		"2":                    2 * Dollar,
		"2.50":                 2_500_000_000,
		".5":                   500_000_000,
		"-1.5":                 -1_500_000_000,
		"$3.75":                3_750_000_000,
		"0.0000000015":         2, // rounds half away from zero on the tenth decimal
		"0.0000000014999":      1,
		"0.00000000000009":     0,
		"1e-3":                 Dollar / 1000,
		"2.8E-1":               280_000_000,
		"9223372036.854775807": maxMoney,
	} {
		got, err := ParseMoney(s)
		require.NoError(t, err, s)
		assert.Equal(t, want, got, s)
	}
}

func TestParseMoneyRejectsWhatIsNotADecimalAmount(t *testing.T) {
	for _, s := range []string{"", ".", "abc", "1.2.3", "1,5", "0x10", "NaN", "Inf", "1e", "1e99", "9223372036.854775808", "- 1", "1 2"} {
		_, err := ParseMoney(s)
		assert.Error(t, err, s)
	}
}

func FuzzParseMoney(f *testing.F) {
	for _, s := range []string{"0.028", "-1.5", "1e-3", "9223372036.854775807", "0.0000000015"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMoney(s)
		if err != nil {
			return
		}
		// What String prints parses back to the same amount.
		back, err := ParseMoney(m.String())
		if err != nil || back != m {
			t.Fatalf("%q -> %v -> %v, %v", s, m, back, err)
		}
	})
}

func TestCostRoundsUpForReservationsAndToNearestForSettlement(t *testing.T) {
	tiny := Price{Input: 1, Output: 1} // a millionth of a nano-dollar per token
	assert.Equal(t, Money(1), tiny.reserveTokens(1, 0, 0))
	assert.Equal(t, Money(0), tiny.Cost(Usage{InputTokens: 1}))

	p := Price{Input: 28 * Cent / 10, Output: 42 * Cent} // $0.028 and $0.42 per million tokens
	assert.Equal(t, Money(28), p.Cost(Usage{InputTokens: 1}))
	assert.Equal(t, Money(28+420), p.reserveTokens(1, 1, 0))
	assert.Equal(t, 28*Cent/10, p.reserveTokens(1_000_000, 0, 0))
	assert.Equal(t, 28*Cent/10+42*Cent, p.Cost(Usage{InputTokens: 1_000_000, OutputTokens: 1_000_000}))
	// Rounding happens once per request, not per component: 0.5 + 0.5.
	q := Price{Input: 500_000, Output: 500_000} // half a nano-dollar per token
	assert.Equal(t, Money(1), q.Cost(Usage{InputTokens: 1, OutputTokens: 1}))
}

func TestCostPricesCachedAndCacheWriteTokens(t *testing.T) {
	p := Price{Input: 3 * Dollar, CachedInput: 30 * Cent, CacheWrite: 375 * Cent, Output: 15 * Dollar}
	u := Usage{InputTokens: 1_000_000 + 2_000_000 + 4_000_000, CachedInputTokens: 2_000_000, CacheWriteInputTokens: 4_000_000, OutputTokens: 1_000_000}
	assert.Equal(t, 3*Dollar+60*Cent+15*Dollar+15*Dollar, p.Cost(u))
}

func TestCostPricesOneHourCacheWritesAtTheirOwnPrice(t *testing.T) {
	p := Price{Input: 3 * Dollar, CacheWrite: 375 * Cent, CacheWrite1h: 6 * Dollar, Output: 15 * Dollar}
	u := Usage{InputTokens: 1_000_000 + 4_000_000, CacheWriteInputTokens: 4_000_000, CacheWrite1hInputTokens: 1_000_000}
	assert.Equal(t, 3*Dollar+3*375*Cent+6*Dollar, p.Cost(u))
	p.CacheWrite1h = 0
	assert.Equal(t, 3*Dollar+4*375*Cent, p.Cost(u), "without a one-hour price, the cache-write price")
	assert.Equal(t, 6*Dollar, (&Price{Input: 3 * Dollar, CacheWrite1h: 6 * Dollar}).reserveTokens(1_000_000, 0, 0), "a reservation takes the dearest input price")
}

func TestCostChargesCachedTokensAtInputWhenNoCachedPriceIsSet(t *testing.T) {
	p := Price{Input: Dollar, Output: Dollar}
	assert.Equal(t, Dollar, p.Cost(Usage{InputTokens: 1_000_000, CachedInputTokens: 1_000_000}))
}

func TestReservationUsesTheDearestInputPrice(t *testing.T) {
	p := Price{Input: 3 * Dollar, CachedInput: 30 * Cent, CacheWrite: 375 * Cent, Output: 15 * Dollar}
	assert.Equal(t, 375*Cent+15*Dollar, p.reserveTokens(1_000_000, 1_000_000, 0))
}

// A reservation prices its prompt at the dearest of the input prices each
// field means (a field left out meaning the price it defaults to), and
// its output at the dearest of Output and what AudioOutput and
// ImageOutput mean, for the kinds of output it asks for (images too when it
// lists none: the model's default outputs): over prices with
// fields left out, set, and negative (outside a validated table), whatever
// the tokens.
func TestReservationReadsLeftOutPricesAsTheirDefaults(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	values := []Money{0, 0, 1, 7, Cent, 3 * Dollar, -1, maxPrice}
	pick := func() Money { return values[rng.IntN(len(values))] }
	for range 5000 {
		p := Price{Input: pick(), CachedInput: pick(), CacheWrite: pick(), CacheWrite1h: pick(), Output: pick(), AudioOutput: pick(),
			ImageOutput: pick()}
		prompt, output := int64(rng.IntN(3_000_000)), int64(rng.IntN(3_000_000))
		for _, outputs := range []outputKinds{0, audioOutput, imageOutput, audioOutput | imageOutput,
			outputsStated, outputsStated | audioOutput, outputsStated | imageOutput, outputsStated | audioOutput | imageOutput} {
			var c costSum
			c.add(prompt, max(p.Input, p.cachedInput(), p.cacheWrite(), p.cacheWrite1h()))
			out := p.Output
			if outputs&audioOutput != 0 {
				out = max(out, p.audioOutput())
			}
			if outputs&imageOutput != 0 || outputs&outputsStated == 0 { // unstated: the model's default, images for an image model
				out = max(out, p.imageOutput())
			}
			c.add(output, out)
			require.Equal(t, c.money(true), p.reserveTokens(prompt, output, outputs), "%+v %d %d %v", p, prompt, output, outputs)
		}
	}
}

func TestCostSaturatesInsteadOfOverflowing(t *testing.T) {
	p := Price{Input: maxPrice, Output: maxPrice}
	assert.Equal(t, maxMoney, p.reserveTokens(math.MaxInt64, math.MaxInt64, 0))
	var c costSum
	c.add(maxUsageTokens, maxPrice)
	assert.Greater(t, c.money(true), Money(0))
}

func TestLoadPricesReadsDecimalDollarsExactly(t *testing.T) {
	table, err := LoadPrices(strings.NewReader(`{
		"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42},
		"claude-sonnet-4-5": {"input": 3, "cached_input": 0.30, "cache_write": 3.75, "output": 15.00},
		"*": {"input": 10, "output": 30}
	}`))
	require.NoError(t, err)
	assert.Equal(t, PriceTable{
		"deepseek-v3.2":     {Input: 28 * Cent, CachedInput: 28 * Cent / 10, Output: 42 * Cent},
		"claude-sonnet-4-5": {Input: 3 * Dollar, CachedInput: 30 * Cent, CacheWrite: 375 * Cent, Output: 15 * Dollar},
		"*":                 {Input: 10 * Dollar, Output: 30 * Dollar},
	}, table)
}

func TestLoadPricesRejectsBadTables(t *testing.T) {
	for name, js := range map[string]string{
		"negative":      `{"m":{"input":-0.1,"output":1}}`,
		"unknown field": `{"m":{"input":1,"outptu":1}}`,
		"not a number":  `{"m":{"input":"cheap","output":1}}`,
		"huge":          `{"m":{"input":1e30,"output":1}}`,
		"not an object": `[1]`,
		"no output":     `{"m":{"input":1,"outptut":1}}`,
		"trailing data": `{"m":{"input":1,"output":1}} {"n":{"input":0,"output":0}}`,
	} {
		_, err := LoadPrices(strings.NewReader(js))
		if assert.Error(t, err, name) {
			assert.Equal(t, 1, strings.Count(err.Error(), "httpguard:"), err.Error())
		}
	}
}

func TestLoadPricesNeedsInputAndOutputSoATypoCannotMakeAModelFree(t *testing.T) {
	_, err := LoadPrices(strings.NewReader(`{"gpt-4.1": {"input": 2, "ouput": 8}}`))
	assert.ErrorContains(t, err, "unknown field", "a misspelt key is an error")
	_, err = LoadPrices(strings.NewReader(`{"gpt-4.1": {"input": 2}}`))
	assert.EqualError(t, err, `httpguard: prices: model "gpt-4.1": output is missing (write 0 if it is free)`)
	_, err = LoadPrices(strings.NewReader(`{"*": {"output": 2}}`))
	assert.EqualError(t, err, `httpguard: prices: model "*": input is missing (write 0 if it is free)`)
	free, err := LoadPrices(strings.NewReader(`{"local-model": {"input": 0, "output": 0}}`))
	require.NoError(t, err, "an explicit 0 is allowed")
	assert.Equal(t, PriceTable{"local-model": {}}, free)
}

func TestExamplePricesMatchTheLiteLLMMirror(t *testing.T) {
	want, err := LoadPrices(strings.NewReader(`{
		"deepseek-chat": {"input": 0.28, "cached_input": 0.028, "output": 0.42},
		"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42},
		"gpt-4.1": {"input": 2.00, "cached_input": 0.50, "output": 8.00},
		"gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.60},
		"claude-sonnet-4-5": {"input": 3.00, "cached_input": 0.30, "cache_write": 3.75, "cache_write_1h": 6.00, "output": 15.00,
			"long_context": {"above": 200000, "input": 6.00, "cached_input": 0.60, "cache_write": 7.50, "cache_write_1h": 12.00, "output": 22.50}},
		"gemini-2.5-flash": {"input": 0.30, "cached_input": 0.03, "output": 2.50}
	}`))
	require.NoError(t, err)
	assert.Equal(t, want, ExamplePrices())
	_, fallback := ExamplePrices()[FallbackModel]
	assert.False(t, fallback)
}

// costOfUsage is Cost by its general path, addUsage, for every usage.
func costOfUsage(p Price, u Usage) Money {
	if lc := p.LongContext; lc != nil && u.InputTokens > lc.Above {
		p = lc.Price
	}
	var c costSum
	c.addUsage(&p, &u)
	m := c.money(false)
	return m + min(p.Request, maxMoney-m)
}

// checkCostPath fails t when Cost, whose text-only usage takes a path of
// its own, differs from its general path.
func checkCostPath(t *testing.T, p Price, u Usage) {
	t.Helper()
	if got, want := p.Cost(u), costOfUsage(p, u); got != want {
		t.Fatalf("Cost(%+v) at %+v = %d, the general path %d", u, p, got, want)
	}
}

func TestCostOfTextOnlyUsageIsTheGeneralPaths(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	counts := []int64{-1, 0, 1, 999_999, 1_000_000, maxUsageTokens, math.MaxInt64}
	prices := []int64{0, 1, 150_000, 1_000_000, int64(MaxBudgetLimit), int64(maxMoney)}
	pick := func(s []int64) int64 {
		if r.IntN(3) == 0 {
			return r.Int64N(4_000_000)
		}
		return s[r.IntN(len(s))]
	}
	for range 20_000 {
		p := Price{Input: Money(pick(prices)), CachedInput: Money(pick(prices)), CacheWrite: Money(pick(prices)),
			CacheWrite1h: Money(pick(prices)), Output: Money(pick(prices)), AudioInput: Money(pick(prices)),
			AudioOutput: Money(pick(prices)), ImageInput: Money(pick(prices)), ImageOutput: Money(pick(prices)), Request: Money(pick(prices))}
		if r.IntN(4) == 0 {
			p.LongContext = &LongContextPrice{Above: pick(counts), Price: Price{Input: Money(pick(prices)), Output: Money(pick(prices))}}
		}
		u := Usage{InputTokens: pick(counts), OutputTokens: pick(counts)}
		switch r.IntN(4) { // now and then a usage for the general path itself
		case 0:
			u.CachedInputTokens, u.AudioOutputTokens = pick(counts), pick(counts)
		case 1:
			u.ImageInputTokens, u.ImageOutputTokens = pick(counts), pick(counts)
		}
		checkCostPath(t, p, u)
	}
}

func FuzzCostOfTextOnlyUsage(f *testing.F) {
	f.Add(int64(1000), int64(200), int64(0), int64(0), int64(150_000), int64(600_000), int64(0))
	f.Add(int64(maxUsageTokens), int64(maxUsageTokens), int64(5), int64(0), int64(maxMoney), int64(maxMoney), int64(1))
	f.Add(int64(-1), int64(3), int64(0), int64(7), int64(1), int64(0), int64(0))
	f.Add(int64(1300), int64(1310), int64(0), int64(0), int64(300_000), int64(2_500_000), int64(0))
	f.Fuzz(func(t *testing.T, in, out, cached, mediaOut, inPrice, outPrice, request int64) {
		p := Price{Input: Money(inPrice), Output: Money(outPrice), CachedInput: Money(inPrice / 10),
			AudioOutput: Money(outPrice * 2), ImageInput: Money(inPrice * 2), ImageOutput: Money(outPrice * 12), Request: Money(request)}
		checkCostPath(t, p, Usage{InputTokens: in, OutputTokens: out, CachedInputTokens: cached, AudioOutputTokens: mediaOut})
		checkCostPath(t, p, Usage{InputTokens: in, OutputTokens: out, ImageInputTokens: cached, ImageOutputTokens: mediaOut})
	})
}

// encoding/json keeps the last of repeated keys, and matches field names
// in any case: a table that lists a model twice, or a price's field twice,
// read silently, may make the model free.
func TestLoadPricesRejectsAModelOrAFieldWrittenTwice(t *testing.T) {
	for _, js := range []string{
		`{"gpt-4.1": {"input": 2, "output": 8}, "gpt-4.1": {"input": 0, "output": 0}}`,
		`{"gpt-4.1": {"input": 2, "output": 8, "output": 0}}`,
		`{"gpt-4.1": {"input": 2, "output": 8, "Output": 0}}`,
		`{"gpt-4.1": {"input": 2, "output": 8, "request": 0.01, "requeſt": 0}}`,
		`{"c": {"input": 3, "output": 15, "long_context": {"above": 200000, "input": 6, "output": 22.5, "OUTPUT": 0}}}`,
	} {
		_, err := LoadPrices(strings.NewReader(js))
		assert.Error(t, err, js)
	}
	// One spelling of a field each, and models apart by case, are fine.
	table, err := LoadPrices(strings.NewReader(`{"gpt-4.1": {"INPUT": 2, "output": 8}, "GPT-4.1": {"input": 3, "output": 9},
		"c": {"input": 3, "output": 15, "long_context": {"above": 200000, "input": 6, "output": 22.5}}}`))
	require.NoError(t, err)
	assert.Equal(t, Price{Input: 2 * Dollar, Output: 8 * Dollar}, table["gpt-4.1"])
	assert.Equal(t, 3*Dollar, table["GPT-4.1"].Input)
	for _, js := range []string{`[{"a": 1, "a": 2}]`, `{"a": [{"b": 1, "b": 2}]}`, `{"a": {"input": 1, "output": 1}`} {
		_, err := LoadPrices(strings.NewReader(js))
		assert.Error(t, err, js) // malformed tables are the decoder's to refuse, without a panic
	}
}

// Was a bug: a price above zero but below half a nano-dollar per million
// tokens rounded to $0, which makes the model free: the one rounding of a
// price that changes what it means.
func TestLoadPricesRefusesAPriceThatWouldRoundToFree(t *testing.T) {
	for _, js := range []string{
		`{"m": {"input": 0.0000000004, "output": 8}}`,
		`{"m": {"input": 1, "output": 4e-10}}`,
		`{"m": {"input": 1, "output": 1, "request": 0.00000000001}}`,
	} {
		_, err := LoadPrices(strings.NewReader(js))
		assert.ErrorContains(t, err, "below a nano-dollar", js)
	}
	table, err := LoadPrices(strings.NewReader(`{"m": {"input": 0.0000000005, "output": 0e5, "cached_input": 0.000}}`))
	require.NoError(t, err)
	assert.Equal(t, Price{Input: Nanodollar}, table["m"])
}

// A key with spaces around it, a slip in a hand-written table, matched no
// request for its model, which "*" then priced (or the Budget refused):
// {"gpt-4.1 ": $8, "*": $0.10} priced gpt-4.1 at $0.10.
func TestPricesRefuseAModelNameWithSpacesAroundIt(t *testing.T) {
	for _, js := range []string{
		`{"gpt-4.1 ": {"input": 2, "output": 8}, "*": {"input": 0.1, "output": 0.1}}`,
		`{" gpt-4.1": {"input": 2, "output": 8}}`,
		`{"gpt-4.1\t": {"input": 2, "output": 8}}`,
	} {
		_, err := LoadPrices(strings.NewReader(js))
		assert.ErrorContains(t, err, "spaces around it", js)
	}
	_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: PriceTable{"gpt-4.1 ": {Input: 2 * Dollar, Output: 8 * Dollar}}})
	assert.ErrorContains(t, err, "spaces around it")
}

// A model named "" matches no request (one without a model is refused), so
// its entry priced nothing while the table looked complete.
func TestPricesRefuseAnEmptyModelName(t *testing.T) {
	_, err := LoadPrices(strings.NewReader(`{"": {"input": 2, "output": 8}}`))
	assert.ErrorContains(t, err, `model "": an empty name matches no request`)
	_, err = NewBudget(BudgetConfig{Limit: Dollar, Prices: PriceTable{"": {Input: 2 * Dollar, Output: 8 * Dollar}}})
	assert.ErrorContains(t, err, `model "": an empty name matches no request`)
}

// Windows PowerShell 5 writes a UTF-8 file with a byte order mark
// (Out-File -Encoding utf8, Set-Content): the table was refused with
// "invalid character 'ï' looking for beginning of value".
func TestLoadPricesSkipsAByteOrderMark(t *testing.T) {
	table, err := LoadPrices(strings.NewReader("\uFEFF{\"m\": {\"input\": 0.28, \"output\": 0.42}}"))
	require.NoError(t, err)
	assert.Equal(t, Price{Input: 28 * Cent, Output: 42 * Cent}, table["m"])
	_, err = LoadPrices(strings.NewReader("\uFEFF\uFEFF{}"))
	assert.Error(t, err, "one mark, not any number of them")
}
