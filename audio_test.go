package httpguard

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// audioPrices price audio as OpenAI does gpt-4o-audio-preview's, in
// dollars per million tokens: text 2.50 in, 10 out; audio 40 in, 80 out
// (the review measured the $80 against $10 of output).
const audioPrices = `{"gpt-4o-audio-preview": {"input": 2.5, "output": 10, "audio_input": 40, "audio_output": 80}}`

func loadAudioPrices(t *testing.T) PriceTable {
	t.Helper()
	p, err := LoadPrices(strings.NewReader(audioPrices))
	require.NoError(t, err)
	return p
}

// audioBody asks gpt-4o-audio-preview for up to maxTokens tokens of text
// and audio, with extra top-level members.
func audioBody(maxTokens int, extra string) string {
	return fmt.Sprintf(`{"model":"gpt-4o-audio-preview",%s"max_tokens":%d,"messages":[{"role":"user","content":"Say hello"}]}`, extra, maxTokens)
}

// audioUsage is an answer's usage with audio in and out: 120 prompt tokens
// (100 audio), 900 completion tokens (880 audio).
const audioUsage = `{"prompt_tokens":120,"completion_tokens":900,"total_tokens":1020,` +
	`"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":100},` +
	`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":880}}`

// audioBill is what OpenAI bills for audioUsage: 20 text and 100 audio
// prompt tokens at $2.50 and $40 per million, 20 text and 880 audio
// completion tokens at $10 and $80 per million: $0.07465.
const audioBill = (20*250 + 100*4000 + 20*1000 + 880*8000) * Cent / 1_000_000

func TestBudgetChargesAudioTokensAtAudioPrices(t *testing.T) {
	answers := map[string]func(http.ResponseWriter, *http.Request, []byte){
		"json": func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","audio":{"id":"a","data":"AAAA"}}}],"usage":%s}`, audioUsage)
		},
		"stream": func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"audio\":{\"data\":\"AAAA\"}}}],\"usage\":null}\n\n")
			fmt.Fprintf(w, "data: {\"id\":\"c\",\"choices\":[],\"usage\":%s}\n\ndata: [DONE]\n\n", audioUsage)
		},
	}
	for name, answer := range answers {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, answer)
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: loadAudioPrices(t)})
			stream := ""
			if name == "stream" {
				stream = `"stream":true,"stream_options":{"include_usage":true},`
			}
			_, err := send(t, api.client(t, b), api.srv.URL, audioBody(900, stream+`"modalities":["text","audio"],"audio":{"voice":"alloy","format":"wav"},`))
			require.NoError(t, err)
			assert.Equal(t, Money(74_650_000), audioBill)
			assert.Equal(t, audioBill, b.Spent(), "charged what the provider bills")
		})
	}
}

func TestBudgetReservesAudioOutputAtTheAudioPrice(t *testing.T) {
	// The review's case: 900 tokens of audio output cost $0.072, above a
	// $0.05 Limit; priced as text they cost $0.009, and the request went
	// out.
	for _, extra := range []string{
		`"modalities":["text","audio"],"audio":{"voice":"alloy","format":"wav"},`,
		`"modalities":["text","\u0061udio"],`,
		`"audio":{"voice":"alloy","format":"mp3"},`,
	} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"usage":%s}`, audioUsage)
		})
		b := newTestBudget(t, BudgetConfig{Limit: 5 * Cent, Prices: loadAudioPrices(t)})
		_, err := send(t, api.client(t, b), api.srv.URL, audioBody(900, extra))
		require.ErrorIs(t, err, ErrBudgetExceeded, extra)
		assert.Zero(t, api.hits.Load(), "%s: the request must not reach the server", extra)
		assert.Zero(t, b.Spent())
	}

	// Without audio output, the output is reserved at the text price.
	api := newFakeAPI(t, answerUsage(20, 900))
	b := newTestBudget(t, BudgetConfig{Limit: 5 * Cent, Prices: loadAudioPrices(t)})
	_, err := send(t, api.client(t, b), api.srv.URL, audioBody(900, `"modalities":["text"],"audio":null,`))
	require.NoError(t, err)
	assert.Equal(t, (20*250+900*1000)*Cent/1_000_000, b.Spent())
}

func TestLoadPricesReadsAudioPrices(t *testing.T) {
	p := loadAudioPrices(t)
	assert.Equal(t, Price{Input: 250 * Cent, Output: 10 * Dollar, AudioInput: 40 * Dollar, AudioOutput: 80 * Dollar}, p["gpt-4o-audio-preview"])

	_, err := LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 1, "audio_output": -80}}`))
	require.EqualError(t, err, `httpguard: prices: model "m": AudioOutput must be >= 0, got -$80.00`)
	_, err = LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 1, "audio_input": "x"}}`))
	require.Error(t, err)

	// Zero audio prices mean the text prices, as a table written before
	// audio was priced read.
	text := Price{Input: Dollar, Output: 2 * Dollar}
	u := Usage{InputTokens: 1000, AudioInputTokens: 600, OutputTokens: 500, AudioOutputTokens: 400}
	assert.Equal(t, text.Cost(Usage{InputTokens: 1000, OutputTokens: 500}), text.Cost(u))
	assert.Equal(t, text.reserveTokens(10, 20, 0), text.reserveTokens(10, 20, audioOutput))
}

func TestCostPricesCachedAudioOnce(t *testing.T) {
	p := Price{Input: Dollar, CachedInput: 10 * Cent, Output: 2 * Dollar, AudioInput: 40 * Dollar, AudioOutput: 80 * Dollar}
	// Disjoint: 10 text, 30 cached, 60 audio.
	assert.Equal(t, (10*100+30*10+60*4000)*Cent/1_000_000, p.Cost(Usage{InputTokens: 100, CachedInputTokens: 30, AudioInputTokens: 60}))
	// 100 tokens, all cached and all audio: priced as audio, never both
	// discounted and subtracted from the text.
	assert.Equal(t, 100*4000*Cent/1_000_000, p.Cost(Usage{InputTokens: 100, CachedInputTokens: 100, AudioInputTokens: 100}))
	// 20 of the 60 audio tokens must be among the 60 cached: 40 cached
	// text, 60 audio.
	assert.Equal(t, (40*10+60*4000)*Cent/1_000_000, p.Cost(Usage{InputTokens: 100, CachedInputTokens: 60, AudioInputTokens: 60}))
	// Usage whose cached tokens exceed its input, and no audio, is priced
	// as before audio was.
	assert.Equal(t, 20*10*Cent/1_000_000, p.Cost(Usage{InputTokens: 10, CachedInputTokens: 20}))
	// Output: 5 text, 15 audio.
	assert.Equal(t, (5*200+15*8000)*Cent/1_000_000, p.Cost(Usage{OutputTokens: 20, AudioOutputTokens: 15}))
}

func TestObserveUsageReadsAudioTokens(t *testing.T) {
	for _, c := range []struct {
		usage string
		want  Usage
		ok    bool
	}{
		{audioUsage, Usage{InputTokens: 120, AudioInputTokens: 100, OutputTokens: 900, AudioOutputTokens: 880}, true},
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":null}`, Usage{InputTokens: 5, OutputTokens: 2}, true},
		// Audio above its total is a lie: the reservation is charged.
		{`{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"audio_tokens":6}}`, Usage{}, false},
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":{"audio_tokens":3}}`, Usage{}, false},
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":{"audio_tokens":-1}}`, Usage{}, false},
		// A key in another case: encoding/json's reading, the dearer, not ok.
		// Read by encoding/json, one of two output tokens is audio; by the
		// others, none: as many of each kind as either reading counts.
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":{"Audio_Tokens":1}}`, Usage{InputTokens: 5, OutputTokens: 3, AudioOutputTokens: 1}, false},
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":3}`, Usage{}, false},
	} {
		_, rep := observe(t, "application/json", strings.NewReader(`{"usage":`+c.usage+`}`))
		assert.Equal(t, usageReport{1, c.want, c.ok}, rep, c.usage)
	}
	// A stream: a later chunk's 0 does not lower the audio count.
	stream := "data: {\"choices\":[],\"usage\":" + audioUsage + "}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":900,\"completion_tokens_details\":{\"audio_tokens\":0}}}\n\n" +
		"data: [DONE]\n\n"
	_, rep := observe(t, "text/event-stream", strings.NewReader(stream))
	assert.Equal(t, usageReport{1, Usage{InputTokens: 120, AudioInputTokens: 100, OutputTokens: 900, AudioOutputTokens: 880}, true}, rep)
}

func TestParseChatRequestReadsAudioOutput(t *testing.T) {
	for _, c := range []struct {
		extra     string
		audio     bool
		ambiguous bool
	}{
		{``, false, false},
		{`"modalities":["text"],`, false, false},
		{`"modalities":null,"audio":null,`, false, false},
		{`"modalities":["text","audio"],`, true, false},
		{`"modalities":["\u0061udio"],`, true, false},
		{`"modalities":["AUDIO"],`, true, false}, // a lenient server may take it
		{`"audio":{"voice":"alloy","format":"wav"},`, true, false},
		{`"\u0061udio":{"voice":"alloy"},`, true, false},
		{`"modalities":["text"],"modalities":["audio"],`, false, true}, // some servers keep the first, some the last
		{`"modalities":["audio"],"modalities":["text"],`, false, true},
		{`"Modalities":["audio"],`, false, true},
		{`"AUDIO":{"voice":"alloy"},`, false, true},
		{`"modalities":["audio"],"modalities":null,`, false, true},
		{`"audio":{"voice":"alloy"},"audio":null,`, false, true},
		{`"modalities":"audio",`, false, true},
		{`"modalities":[1],`, false, true},
	} {
		cr, err := parseChatRequest([]byte(audioBody(10, c.extra)))
		if c.ambiguous {
			require.Error(t, err, c.extra)
			assert.True(t, errors.Is(err, errAmbiguousRequest), "%s: %v", c.extra, err)
			continue
		}
		require.NoError(t, err, c.extra)
		assert.Equal(t, c.audio, cr.Outputs&audioOutput != 0, c.extra)
	}
}
