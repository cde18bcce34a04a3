package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sharedPrefixPrices are models whose names begin alike (one modelNames
// slot for all, by their first four bytes), one a prefix of another, at
// prices far apart: a name read as another's is priced wrong.
var sharedPrefixPrices = PriceTable{
	"gpt-4":         {Input: 30 * Dollar, Output: 60 * Dollar},
	"gpt-4o":        {Input: 250 * Cent, Output: 10 * Dollar},
	"gpt-4o-mini":   {Input: 15 * Cent, Output: 60 * Cent},
	"gpt-4o-mini-x": {Input: 3 * Cent, Output: 6 * Cent},
}

// plainChatBillBody returns a chat body of the members plainChat reads,
// written as the fast paths see them and off them: a model escaped, one a
// prefix of another (a model or a count given twice is refused: see
// TestRequestModelOrCountGivenTwiceIsRefused); with whitespace anywhere;
// text messages, sometimes a part that is not.
func plainChatBillBody(r *rand.Rand) []byte {
	models := []string{`"gpt-4"`, `"gpt-4o"`, `"gpt-4o-mini"`, `"gpt-4o-mini-x"`, `"gpt-4\u006f"`, `"\u0067pt-4o-mini"`, `"gpt-4o-mini\u002dx"`}
	sp := func(b *bytes.Buffer) {
		b.WriteString([]string{"", "", "", " ", "\n\t", "\r\n "}[r.IntN(6)])
	}
	var b bytes.Buffer
	b.WriteByte('{')
	members := []string{"model", "max_tokens", "messages", "stream"}
	r.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	for i, k := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		sp(&b)
		b.WriteString(`"` + k + `"`)
		sp(&b)
		b.WriteByte(':')
		sp(&b)
		switch k {
		case "model":
			b.WriteString(models[r.IntN(len(models))])
		case "max_tokens":
			b.WriteString(strconv.Itoa([]int{0, 1, 9, 10, 99, 999, 1000, 4096, 123456789}[r.IntN(9)] + r.IntN(3)))
		case "stream":
			b.WriteString([]string{"false", "false", "true"}[r.IntN(3)])
		default:
			b.WriteByte('[')
			for m := range 1 + r.IntN(3) {
				if m > 0 {
					b.WriteByte(',')
				}
				sp(&b)
				content := `"` + strings.Repeat("word ", r.IntN(40)) + `"`
				if r.IntN(5) == 0 {
					content = `[{"type":"text","text":"hi"}]`
				}
				fmt.Fprintf(&b, `{"role":%s,%s"content":%s}`, []string{`"user"`, `"system"`, `"assistant"`}[r.IntN(3)], "", content)
				sp(&b)
			}
			b.WriteByte(']')
		}
		sp(&b)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// promptBytes is body's length without the stream_options a Budget adds
// to a stream's body to be told its usage: bytes of no prompt.
func promptBytes(body []byte) int64 {
	n := int64(len(body))
	if bytes.Contains(body, []byte(`"stream_options":{"include_usage":true},`)) {
		n -= int64(len(`"stream_options":{"include_usage":true},`))
	}
	return n
}

// billPlainChat bills every attempt it receives by what encoding/json
// reads of its body (the last of a member given twice, escapes decoded):
// every byte of its prompt a token of input, and max_tokens of output, at the model's
// price; and answers with that usage, in one write or in pieces.
func billPlainChat(billed *atomic.Int64) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var req struct {
			Model     string `json:"model"`
			MaxTokens int64  `json:"max_tokens"`
			Stream    bool   `json:"stream"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p, ok := sharedPrefixPrices[req.Model]
		if !ok {
			http.Error(w, "no such model", http.StatusNotFound)
			return
		}
		u := Usage{InputTokens: promptBytes(body), OutputTokens: req.MaxTokens}
		billed.Add(int64(p.Cost(u)))
		usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, u.InputTokens, u.OutputTokens, u.InputTokens+u.OutputTokens)
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: {\"choices\":[],\"usage\":%s}\n\ndata: [DONE]\n\n", usage)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		answer := `{"id":"x","object":"chat.completion","model":` + strconv.Quote(req.Model) + `,"choices":[{"message":{"role":"assistant","content":"ok"}}],"usage":` + usage + `}`
		if len(body)%2 == 0 { // in pieces: the answer's lexer, not its whole read
			f := w.(http.Flusher)
			for i := 0; i < len(answer); i += 7 {
				io.WriteString(w, answer[i:min(i+7, len(answer))])
				f.Flush()
			}
			return
		}
		io.WriteString(w, answer)
	}
}

// postPlainChats posts n plainChatBillBody bodies to url's chat
// completions from each of 8 goroutines, handing each answer (read to its
// end) or error to check.
func postPlainChats(client *http.Client, url string, n int, check func(*http.Response, error)) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 3))
			for range n {
				resp, err := post(client, url, string(plainChatBillBody(r)))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				check(resp, err)
			}
		}()
	}
	wg.Wait()
}

// A Budget holds its Limit against a provider billing every attempt by
// what it reads of plain chat bodies (those plainChat and modelNames read
// quickly), sent by many goroutines at once: models sharing their first
// bytes, a name that is another's prefix, escaped names, members given
// twice, and answers read whole or in pieces.
func TestBudgetLimitHoldsAgainstPlainChatBillsFromManyGoroutines(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billPlainChat(&billed))
	limit := 20 * Dollar
	b := newTestBudget(t, BudgetConfig{Limit: limit, Prices: sharedPrefixPrices})
	client := api.client(t, b)
	var served, refused atomic.Int64
	postPlainChats(client, api.srv.URL, 300, func(resp *http.Response, err error) {
		if err != nil {
			assert.ErrorIs(t, err, ErrBudgetExceeded)
			refused.Add(1)
			return
		}
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		served.Add(1)
	})
	settled, held, ok := b.totals()
	require.True(t, ok)
	t.Logf("limit %v, provider billed %v, budget charged %v; %d served, %d refused", limit, Money(billed.Load()), settled, served.Load(), refused.Load())
	assert.Zero(t, held)
	assert.Positive(t, served.Load())
	assert.Positive(t, refused.Load())
	assert.Equal(t, Money(billed.Load()), settled, "the budget charged what the provider billed")
	assert.LessOrEqual(t, Money(billed.Load()), limit)
}

// A Limiter takes from each model's bucket the tokens the provider's
// answers report for that model, read whole or in pieces, streamed or not:
// none fewer, whatever the plain chat body's spelling (names sharing their
// first bytes, escaped names), from many goroutines.
func TestLimiterTakesEveryTokenThePlainChatAnswersReport(t *testing.T) {
	const tpm = 60_000_000_000 // a token a nanosecond: the finest bucket
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: tpm}, clk)
	var mu sync.Mutex
	used := map[string]int64{}
	var billed atomic.Int64
	bill := billPlainChat(&billed)
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Model     string `json:"model"`
			MaxTokens int64  `json:"max_tokens"`
		}
		if json.Unmarshal(body, &req) == nil {
			mu.Lock()
			used[req.Model] += promptBytes(body) + req.MaxTokens
			mu.Unlock()
		}
		bill(w, r, body)
	})
	postPlainChats(client, srv.URL, 200, func(_ *http.Response, err error) { assert.NoError(t, err) })
	require.Len(t, used, len(sharedPrefixPrices))
	for model, n := range used {
		assert.InDelta(t, float64(tpm-n), available(t, l, keyName(srv, model)), 1, "%s: the provider reported %d tokens", model, n)
	}
}
