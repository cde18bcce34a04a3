package httpguard

// End to end, the answer and request fast paths (writtenHead and
// writtenUsage in jsonusage.go, compactMessage in request.go) against a
// loopback server that bills what encoding/json reads: of its own answer
// (the model that served it, at that model's price, and the usage) and of
// the request (an image allowance for each image part). Answers come in
// the providers' form and near misses of it, whole and in pieces split
// inside the head, through Retrier, Budget and Limiter.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fastPathAnswers are answers in and near writtenHead's form; %[1]s is the
// cheap model the request names, %[2]s the dear one, %[3]d and %[4]d the
// prompt and completion tokens billed. Each is read by encoding/json as
// the server bills it.
var fastPathAnswers = []string{
	// The providers' form, served by the model named or a dearer one.
	`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"%[1]s","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d,"total_tokens":0}}`,
	`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d},"system_fingerprint":"fp"}`,
	`{"id":"chatcmpl-1","object":"chat.completion","model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	// A model repeated after the head: the last is read.
	`{"id":"c","object":"chat.completion","created":1,"model":"%[1]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d},"model":"%[2]s"}`,
	`{"id":"c","object":"chat.completion","created":1,"model":"%[1]s","choices":[],"model":"%[2]s","usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c","object":"chat.completion","created":1,"model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d},"model":"%[1]s"}`,
	// A usage repeated after it, or before the head's; null after it.
	`{"id":"c","object":"chat.completion","created":1,"model":"%[1]s","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c","object":"chat.completion","created":1,"model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d},"usage":null}`,
	`{"id":"c","object":"chat.completion","created":1,"model":"%[2]s","choices":[],"usage":null,"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c","usage":{"prompt_tokens":1,"completion_tokens":1},"object":"chat.completion","model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	// A count repeated in the usage, or after a details object.
	`{"id":"c","object":"chat.completion","created":1,"model":"%[2]s","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":%[4]d,"prompt_tokens":%[3]d}}`,
	`{"id":"c","object":"chat.completion","created":1,"model":"%[2]s","choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":0},"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	// Near misses of the form, which the general path reads.
	`{"id":"c","object":"chat.completion","created":1.5,"model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c","object":"chat.completion.chunk","model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c", "object":"chat.completion","model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c","object":"chat.completion","model" : "%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c","object":"chat.completion","model":"%[2]s","choices":[] ,"usage" :{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c\"d","object":"chat.completion","model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d}}`,
	`{"id":"c","object":"chat.completion","created":1,"model":"%[2]s","choices":{"a":[[[]]]},"usage": {"prompt_tokens":%[3]d,"completion_tokens":%[4]d} }`,
	"{\n  \"id\": \"c\",\n  \"object\": \"chat.completion\",\n  \"model\": \"%[2]s\",\n  \"choices\": [],\n  \"usage\": {\"prompt_tokens\": %[3]d, \"completion_tokens\": %[4]d}\n}\n",
	// A usage too long for its one-pass reading, after the head.
	`{"id":"c","object":"chat.completion","created":1,"model":"%[2]s","choices":[],"usage":{"prompt_tokens":%[3]d,"completion_tokens":%[4]d,"x":` + strings.Repeat("[", 70) + "1" + strings.Repeat("]", 70) + `}}`,
}

// billedAnswer is what encoding/json reads of an answer, as a billing
// server reads it: the last model and usage (a null usage keeps the one
// before, as encoding/json keeps a struct's value).
type billedAnswer struct {
	Model string `json:"model"`
	Usage struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
	} `json:"usage"`
}

// billedRequest is what encoding/json reads of a chat request: its model,
// max_tokens and the image parts of its messages.
type billedRequest struct {
	Model     string `json:"model"`
	MaxTokens int64  `json:"max_tokens"`
	Messages  []struct {
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

func (r *billedRequest) images() (n int64) {
	for _, m := range r.Messages {
		var parts []struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(m.Content, &parts) != nil {
			continue // a string: text
		}
		for _, p := range parts {
			n += int64(b2u(p.Type == "image_url"))
		}
	}
	return n
}

// fastPathServer answers each request with fastPathAnswers[X-Form], in
// pieces of X-Piece bytes (flushed; 0: whole), and bills what
// encoding/json reads of the answer and the request: prompt tokens a
// byte of the body each and an allowance an image, max_tokens of output,
// at the price of the model the answer names (the request's when the
// table has none).
type fastPathServer struct {
	prices PriceTable
	mu     sync.Mutex
	bills  []Money
}

func (s *fastPathServer) answer(t *testing.T) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		var req billedRequest
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		form, _ := strconv.Atoi(r.Header.Get("X-Form"))
		piece, _ := strconv.Atoi(r.Header.Get("X-Piece"))
		prompt := int64(len(body)) + req.images()*openAIImageTokenAllowance
		answer := fmt.Sprintf(fastPathAnswers[form], req.Model, r.Header.Get("X-Dear"), prompt, req.MaxTokens)
		var read billedAnswer
		if err := json.Unmarshal([]byte(answer), &read); err != nil {
			t.Errorf("answer %d does not decode: %v", form, err)
		}
		price, ok := s.prices[read.Model]
		if !ok {
			price = s.prices[req.Model]
		}
		bill := price.Cost(Usage{InputTokens: read.Usage.PromptTokens, OutputTokens: read.Usage.CompletionTokens})
		s.mu.Lock()
		s.bills = append(s.bills, bill)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if piece == 0 {
			io.WriteString(w, answer)
			return
		}
		for p := answer; len(p) > 0; p = p[min(len(p), piece):] {
			io.WriteString(w, p[:min(len(p), piece)])
			w.(http.Flusher).Flush()
		}
	}
}

// smallReads reads r n bytes at a time, so that the Budget's scanner sees
// each piece on its own.
func smallReads(r io.Reader, n int) error {
	buf := make([]byte, n)
	for {
		if _, err := r.Read(buf); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// fastPathRequests are chat requests in and near compactMessage's form,
// the last with image parts after compact messages.
var fastPathRequests = []string{
	`{"model":"gpt-4o-mini","max_tokens":300,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}]}`,
	`{"model":"gpt-4o-mini","max_tokens":300,"messages":[{"role":"user","content":"image_url"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`,
	`{"model":"gpt-4o-mini","max_tokens":300,"messages":[{"role":"user","content":"a\"},{\"role\":\"user\",\"content\":["},{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"image_url","image_url":{"url":"https://x/z.png"}}]}]}`,
	`{"model":"gpt-4o-mini","max_tokens":300,"messages":[{"role":"user","content":"x"} ,{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]},{"role":"users","content":"y"}]}`,
	`{"model":"gpt-4o-mini","max_tokens":300,"messages":[{"role":"user","content":"x","name":"n"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]}]}`,
}

// Each answer in or near the providers' form, whole or in pieces split
// anywhere in its head, is charged at least what a server reading it with
// encoding/json bills, through Retrier, Budget and Limiter; and the Limit
// holds against the total bill.
func TestFastPathsChargeWhatEncodingJSONBills(t *testing.T) {
	prices := PriceTable{"gpt-4o-mini": ExamplePrices()["gpt-4o-mini"], "gpt-4.1": ExamplePrices()["gpt-4.1"]}
	for _, piece := range []int{0, 1, 5, 13, 64} {
		for _, read := range []int{1, 7, 32 << 10} {
			t.Run(fmt.Sprintf("piece %d read %d", piece, read), func(t *testing.T) {
				srv := &fastPathServer{prices: prices}
				api := newFakeAPI(t, srv.answer(t))
				var charged []Money
				b := newTestBudget(t, BudgetConfig{Limit: 2 * Dollar, MaxWait: -1, Prices: prices,
					OnSettle: func(s Settlement) { charged = append(charged, s.Charged) }})
				retrier, err := NewRetrier(RetryPolicy{MaxRetries: 2, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond})
				require.NoError(t, err)
				limiter, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1e9})
				require.NoError(t, err)
				base := api.srv.Client().Transport.(*http.Transport).Clone()
				t.Cleanup(base.CloseIdleConnections)
				client := &http.Client{Transport: Chain(base, retrier, b, limiter)}
				refused := 0
				for i := range 4 * len(fastPathAnswers) {
					form := i % len(fastPathAnswers)
					req, err := http.NewRequest(http.MethodPost, api.srv.URL+"/v1/chat/completions",
						strings.NewReader(fastPathRequests[i%len(fastPathRequests)]))
					require.NoError(t, err)
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Form", strconv.Itoa(form))
					req.Header.Set("X-Piece", strconv.Itoa(piece))
					req.Header.Set("X-Dear", "gpt-4.1")
					resp, err := client.Do(req)
					if err != nil {
						require.ErrorIs(t, err, ErrBudgetExceeded)
						refused++
						continue
					}
					require.NoError(t, smallReads(resp.Body, read))
					resp.Body.Close()
					srv.mu.Lock()
					require.Len(t, charged, len(srv.bills), "one settlement an answer")
					bill := srv.bills[len(srv.bills)-1]
					srv.mu.Unlock()
					assert.GreaterOrEqual(t, charged[len(charged)-1], bill, "answer %d, request %d: charged less than billed", form, i%len(fastPathRequests))
				}
				var total Money
				for _, bill := range srv.bills {
					total += bill
				}
				t.Logf("served %d, refused %d, billed %v of %v", len(srv.bills), refused, total, b.Limit())
				assert.Positive(t, refused, "the Limit should be reached")
				assert.LessOrEqual(t, total, b.Limit(), "billed past the Limit")
			})
		}
	}
}

// An answer that names the model that served it with an escape, as PHP's
// json_encode writes a slash by default ("openai\/gpt-4.1"), is priced at
// that model, as encoding/json reads its name: a relay that serves a
// request with a model of its own choosing bills that model's price. Whether writtenHead reads the answer
// or the general path does (a space after the head's first ','), and
// whole or in pieces. (The answer is served by a model dearer than the
// one its request was reserved at, so one may cost beyond the Limit.)
func TestAnEscapedAnswerModelIsPricedAsItReads(t *testing.T) {
	for _, form := range []int{1, 14} {
		for _, piece := range []int{0, 7} {
			t.Run(fmt.Sprintf("answer %d piece %d", form, piece), func(t *testing.T) {
				prices := PriceTable{"openai/gpt-4o-mini": ExamplePrices()["gpt-4o-mini"], "openai/gpt-4.1": ExamplePrices()["gpt-4.1"]}
				srv := &fastPathServer{prices: prices}
				api := newFakeAPI(t, srv.answer(t))
				var charged []Money
				b := newTestBudget(t, BudgetConfig{Limit: 10 * Cent, MaxWait: -1, Prices: prices,
					OnSettle: func(s Settlement) { charged = append(charged, s.Charged) }})
				client := api.client(t, b)
				body := `{"model":"openai/gpt-4o-mini","max_tokens":1000,"messages":[{"role":"user","content":"` +
					strings.Repeat("word ", 200) + `"}]}`
				refused := 0
				for range 40 {
					req, err := http.NewRequest(http.MethodPost, api.srv.URL+"/api/v1/chat/completions", strings.NewReader(body))
					require.NoError(t, err)
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Form", strconv.Itoa(form))
					req.Header.Set("X-Piece", strconv.Itoa(piece))
					req.Header.Set("X-Dear", `openai\/gpt-4.1`)
					resp, err := client.Do(req)
					if err != nil {
						require.ErrorIs(t, err, ErrBudgetExceeded)
						refused++
						continue
					}
					require.NoError(t, smallReads(resp.Body, 32<<10))
					resp.Body.Close()
					srv.mu.Lock()
					bill := srv.bills[len(srv.bills)-1]
					srv.mu.Unlock()
					assert.GreaterOrEqual(t, charged[len(charged)-1], bill, "charged less than billed")
				}
				var total, dearest Money
				for _, bill := range srv.bills {
					total, dearest = total+bill, max(dearest, bill)
				}
				assert.Positive(t, refused, "the Limit should be reached")
				// One answer served by a dearer model than it was reserved at
				// costs beyond its reservation: the Budget is full after it.
				assert.LessOrEqual(t, total, b.Limit()+dearest, "billed past the Limit")
			})
		}
	}
}
