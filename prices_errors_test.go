package httpguard

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
)

// A price table is the first file a newcomer writes by hand, and its
// mistakes are the first errors they read: each says what is wrong in the
// file's own terms (the model, the field, the line), never in Go's types.
func TestLoadPricesErrorsSpeakOfTheFileNotOfGo(t *testing.T) {
	for js, want := range map[string]string{
		``:                                       `httpguard: prices: the input is empty: want a JSON object of model names to prices, such as {"deepseek-v3.2": {"input": 0.28, "output": 0.42}}`,
		` [] `:                                   `httpguard: prices: want a JSON object of model names to prices, such as {"deepseek-v3.2": {"input": 0.28, "output": 0.42}}, got an array`,
		` null `:                                 `httpguard: prices: want a JSON object of model names to prices, such as {"deepseek-v3.2": {"input": 0.28, "output": 0.42}}, got null`,
		`"gpt"`:                                  `httpguard: prices: want a JSON object of model names to prices, such as {"deepseek-v3.2": {"input": 0.28, "output": 0.42}}, got a string`,
		`{"m": 0.28}`:                            `httpguard: prices: model "m": want an object of prices in dollars per million tokens, such as {"input": 0.28, "output": 0.42}, got a number`,
		`{"m": {"input": true, "output": 1}}`:    `httpguard: prices: model "m": input: want a number of dollars, got true`,
		`{"m": {"input": 1, "output": "cheap"}}`: `httpguard: prices: model "m": output: want a number of dollars, got "cheap"`,
		`{"m": {"input": 1, "output": [1]}}`:     `httpguard: prices: model "m": output: want a number of dollars, got [1]`,
		`{"m": {"input": 1, "output": 1, "ouput": 1}}`:                                                 `httpguard: prices: model "m": unknown field "ouput" (known: input, cached_input, cache_write, cache_write_1h, output, audio_input, audio_output, image_input, image_output, request, long_context; and above, in long_context)`,
		`{"m": {"input": 1, "output": 1, "long_context": {"abov": 1, "input": 1, "output": 1}}}`:       `httpguard: prices: model "m": unknown field "abov" (known: input, cached_input, cache_write, cache_write_1h, output, audio_input, audio_output, image_input, image_output, request, long_context; and above, in long_context)`,
		`{"m": {"input": 1, "output": 1, "long_context": 5}}`:                                          `httpguard: prices: model "m": long_context: want an object, such as {"above": 200000, "input": 6, "output": 22.5}, got a number`,
		`{"m": {"input": 1, "output": 1, "long_context": {"above": "many", "input": 1, "output": 1}}}`: `httpguard: prices: model "m": long_context: above must be a whole number of tokens above 0, got "many"`,
		"{\"a\": {\"input\": 1, \"output\": 1},\n \"b\": {\"input\": 1, \"output\": 1},\n}":            `httpguard: prices: line 3, column 1: invalid character '}' looking for beginning of object key string`,
		"{\"a\": {\"input\": 1,\n \"output\": 1}":                                                      `httpguard: prices: line 2, column 14: the JSON ends early (a '}' or ']' missing)`,
	} {
		_, err := LoadPrices(strings.NewReader(js))
		if assert.Error(t, err, js) {
			assert.Equal(t, want, err.Error(), js)
			for _, goTerm := range []string{"Go value", "Go struct", "json.Number", "struct {", "jsonPrice"} {
				assert.NotContains(t, err.Error(), goTerm, js)
			}
		}
	}
	// What json.Number took stays taken: a number written as a string, a
	// null as a field left out.
	table, err := LoadPrices(strings.NewReader(`{"m": {"input": "0.28", "output": 0.42, "cached_input": null}}`))
	if assert.NoError(t, err) {
		assert.Equal(t, Price{Input: 28 * Cent, Output: 42 * Cent}, table["m"])
	}
	_, err = LoadPrices(strings.NewReader(`{"m": {"input": "$0.28", "output": 0.42}}`))
	assert.EqualError(t, err, `httpguard: prices: model "m": input: want a number of dollars, got "$0.28"`,
		"a string is a price only as a JSON number would be")
}

// An amount too long to quote whole is cut between characters, not inside
// one: the error, which a JSON log or a terminal shows, stays UTF-8.
func TestLoadPricesErrorCutsALongAmountBetweenCharacters(t *testing.T) {
	_, err := LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": "` + strings.Repeat("é", 30) + `"}}`))
	if assert.Error(t, err) {
		assert.True(t, utf8.ValidString(err.Error()), "%q", err.Error())
		assert.Equal(t, `httpguard: prices: model "m": output: want a number of dollars, got "`+strings.Repeat("é", 19)+"…", err.Error())
	}
}

// An amount whose string holds bytes that are not UTF-8 (encoding/json
// takes them) is quoted in the error with U+FFFD in their place: the
// error stays UTF-8.
func TestLoadPricesErrorQuotesAnAmountThatIsNotUTF8AsUTF8(t *testing.T) {
	_, err := LoadPrices(strings.NewReader("{\"m\": {\"input\": 1, \"output\": \"4\xff\xfe2\"}}"))
	if assert.Error(t, err) {
		assert.True(t, utf8.ValidString(err.Error()), "%q", err.Error())
		assert.Equal(t, `httpguard: prices: model "m": output: want a number of dollars, got "4`+"\uFFFD"+`2"`, err.Error())
	}
	_, err = LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": "` + strings.Repeat("a", 39) + "\xff\xff\xff\"}}"))
	if assert.Error(t, err) {
		assert.True(t, utf8.ValidString(err.Error()), "%q", err.Error())
	}
}
