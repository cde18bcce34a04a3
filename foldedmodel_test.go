package httpguard

// An answer whose "model" key is spelled in another case ("Model", as Go's
// encoding/json writes an untagged field) was priced at the requested
// model, while encoding/json (and a billing server reading the answer with
// it) reads that key as the model.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAFoldedModelKeyIsPricedAsEncodingJSONReadsIt(t *testing.T) {
	saved := fastPathAnswers
	defer func() { fastPathAnswers = saved }()
	fastPathAnswers = []string{
		`{"id":"c","object":"chat.completion","created":1,"model":"%[1]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d},"Model":"%[2]s"}`,
		`{"id":"c","object":"chat.completion","created":1,"MODEL":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	}
	prices := PriceTable{"gpt-4o-mini": ExamplePrices()["gpt-4o-mini"], "gpt-4.1": ExamplePrices()["gpt-4.1"]}
	for form := range fastPathAnswers {
		srv := &fastPathServer{prices: prices}
		api := newFakeAPI(t, srv.answer(t))
		var charged []Money
		b := newTestBudget(t, BudgetConfig{Limit: 2 * Cent, MaxWait: -1, Prices: prices, OnSettle: func(s Settlement) { charged = append(charged, s.Charged) }})
		client := api.client(t, b)
		for range 100 {
			req, _ := http.NewRequest(http.MethodPost, api.srv.URL+"/v1/chat/completions", strings.NewReader(fastPathRequests[0]))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Form", strconv.Itoa(form))
			req.Header.Set("X-Dear", "gpt-4.1")
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			smallReads(resp.Body, 1<<15)
			resp.Body.Close()
			assert.GreaterOrEqual(t, charged[len(charged)-1], srv.bills[len(srv.bills)-1])
		}
		var total, dearest Money
		for _, x := range srv.bills {
			total, dearest = total+x, max(dearest, x)
		}
		assert.LessOrEqual(t, total, b.Limit()+dearest, "form %d", form)
	}
}

// spellModel rewrites what an answer writer writes: each "model" key
// naming servedModel becomes keys, which name it and the cheap model in
// two spellings that decoders read differently.
type spellModel struct {
	http.ResponseWriter
	keys string
}

func (w spellModel) Write(p []byte) (int, error) {
	_, err := io.WriteString(w.ResponseWriter, strings.ReplaceAll(string(p), `"model":"`+servedModel+`"`, w.keys))
	return len(p), err
}

func (w spellModel) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

// An answer (or stream) whose decoders read different models, one spelt
// "model" and one in another case, is charged at the dearer: the server
// bills servedModel, the dear one, as the decoder that reads it does
// (encoding/json, which matches keys in any case, the last winning; or an
// exact decoder, which reads the last "model" only), and the Limit holds
// against that bill, whether the answer is read whole or a few bytes at a
// time.
func TestBudgetChargesTheDearerOfTheModelsDecodersReadInAnswersAndStreams(t *testing.T) {
	const cheap = "openai/gpt-4o-mini"
	for _, spelling := range []struct{ name, keys string }{
		{"encoding/json reads the dear one", `"model":"` + cheap + `","Model":"` + servedModel + `"`},
		{"encoding/json reads only the dear one", `"MODEL":"` + servedModel + `"`},
		{"an exact decoder reads the dear one", `"model":"` + servedModel + `","Model":"` + cheap + `"`},
		{"an exact decoder reads the dear one after a folded null", `"Model":"` + cheap + `","model":"` + servedModel + `","MODEL":null`},
	} {
		for _, f := range answerFormats {
			for _, piece := range []int{1 << 15, 5} {
				t.Run(fmt.Sprintf("%s/%s/reads of %d", spelling.name, f.name, piece), func(t *testing.T) {
					var billed atomic.Int64
					serve := serveWith(&billed, openRouterPrices, servedModel, f.write)
					api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
						serve(spellModel{w, spelling.keys}, r, body)
					})
					var settled []Settlement
					b := newTestBudget(t, BudgetConfig{Limit: Dollar, MaxWait: -1, Prices: openRouterPrices, OnSettle: func(s Settlement) { settled = append(settled, s) }})
					client := api.client(t, b)
					var refused int
					for range 40 {
						resp, err := client.Do(answerRequest(t, api.srv.URL, f.path, f.stream, cheap))
						if errors.Is(err, ErrBudgetExceeded) {
							refused++
							continue
						}
						require.NoError(t, err)
						require.NoError(t, smallReads(resp.Body, piece))
						resp.Body.Close()
					}
					opusCost := opus46.Cost(Usage{InputTokens: 10_104, OutputTokens: 1000})
					assert.Positive(t, refused)
					assert.LessOrEqual(t, Money(billed.Load()), b.Limit()+opusCost, "billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
					assert.Equal(t, Money(billed.Load()), b.Spent())
					require.NotEmpty(t, settled)
					assert.Equal(t, servedModel, settled[0].PricedAs)
				})
			}
		}
	}
}
