package httpguard

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// flashImagePrices price google/gemini-2.5-flash-image as Google bills it,
// in dollars per million tokens: text 0.30 in, 2.50 out; the images it
// writes 30 (1,290 tokens, $0.039, an image).
const flashImagePrices = `{"google/gemini-2.5-flash-image": {"input": 0.3, "output": 2.5, "image_output": 30}}`

// gptImagePrices price gpt-image-1 as OpenAI bills it: text input 5, image
// input 10, image output 40 (its only output); and a model that also
// writes text, at 10 against 40 for its images.
const gptImagePrices = `{"gpt-image-1": {"input": 5, "output": 40, "image_input": 10},
 "gpt-image-text": {"input": 5, "output": 10, "image_input": 10, "image_output": 40}}`

func loadPrices(t *testing.T, table string) PriceTable {
	t.Helper()
	p, err := LoadPrices(strings.NewReader(table))
	require.NoError(t, err)
	return p
}

func TestLoadPricesReadsImagePrices(t *testing.T) {
	p := loadPrices(t, gptImagePrices)
	assert.Equal(t, Price{Input: 5 * Dollar, Output: 10 * Dollar, ImageInput: 10 * Dollar, ImageOutput: 40 * Dollar}, p["gpt-image-text"])

	_, err := LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 1, "image_output": -30}}`))
	require.EqualError(t, err, `httpguard: prices: model "m": ImageOutput must be >= 0, got -$30.00`)
	_, err = LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 1, "image_input": "x"}}`))
	require.Error(t, err)
	_, err = LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": 2, "output": 2, "image_input": -1}}}`))
	require.Error(t, err)

	// Zero image prices mean the text prices, as a table written before
	// images were priced read.
	text := Price{Input: Dollar, Output: 2 * Dollar}
	u := Usage{InputTokens: 1000, ImageInputTokens: 600, OutputTokens: 500, ImageOutputTokens: 400}
	assert.Equal(t, text.Cost(Usage{InputTokens: 1000, OutputTokens: 500}), text.Cost(u))
	// A Priority price made of it by times keeps its image prices.
	assert.Equal(t, Price{Input: 15 * Dollar, Output: 30 * Dollar, ImageInput: 30 * Dollar, ImageOutput: 120 * Dollar}, p["gpt-image-text"].times(3))
}

func TestCostPricesImageTokens(t *testing.T) {
	p := Price{Input: Dollar, CachedInput: 10 * Cent, Output: 2 * Dollar, AudioInput: 40 * Dollar, AudioOutput: 80 * Dollar,
		ImageInput: 10 * Dollar, ImageOutput: 30 * Dollar}
	// Disjoint: 10 text, 30 cached, 20 audio, 40 image.
	assert.Equal(t, (10*100+30*10+20*4000+40*1000)*Cent/1_000_000,
		p.Cost(Usage{InputTokens: 100, CachedInputTokens: 30, AudioInputTokens: 20, ImageInputTokens: 40}))
	// 100 tokens, all cached and all image: priced as image, never both
	// discounted and subtracted from the text.
	assert.Equal(t, 100*1000*Cent/1_000_000, p.Cost(Usage{InputTokens: 100, CachedInputTokens: 100, ImageInputTokens: 100}))
	// 30 of the 20 audio and 50 image tokens must be among the 60 cached:
	// 30 cached text, 20 audio, 50 image.
	assert.Equal(t, (30*10+20*4000+50*1000)*Cent/1_000_000,
		p.Cost(Usage{InputTokens: 100, CachedInputTokens: 60, AudioInputTokens: 20, ImageInputTokens: 50}))
	// Output: 5 text, 10 audio, 15 image.
	assert.Equal(t, (5*200+10*8000+15*3000)*Cent/1_000_000, p.Cost(Usage{OutputTokens: 30, AudioOutputTokens: 10, ImageOutputTokens: 15}))
	// Long prompts are priced by LongContext's image prices.
	long := Price{Input: Dollar, Output: Dollar, LongContext: &LongContextPrice{Above: 50, Price: Price{Input: Dollar, Output: Dollar, ImageInput: 7 * Dollar}}}
	assert.Equal(t, (40*100+60*700)*Cent/1_000_000, long.Cost(Usage{InputTokens: 100, ImageInputTokens: 60}))
}
