package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withoutUsageUpstream streams an answer without usage, whatever the
// request asks (an OpenAI-compatible server that ignores stream_options),
// so that each budget charges its reservation, and counts the bytes of
// each request body it got.
func withoutUsageUpstream(t *testing.T, sizes chan<- int) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		sizes <- int(n)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}`+"\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	return up
}

// With a proxy-wide budget and a tenant's, the outer budget (the proxy's)
// adds "stream_options":{"include_usage":true} to a stream request, and
// the tenant's, below it, reads the body with those 40 bytes. A body the
// proxy accepts (within MaxRequestBytes) then went over what the tenant's
// budget may read, and was refused as a body it could not price.
func TestAStreamWithinMaxRequestBytesPassesBothBudgets(t *testing.T) {
	sizes := make(chan int, 1)
	up := withoutUsageUpstream(t, sizes)
	const max = 1000
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}, MaxRequestBytes: max, Limits: LimitSpec{TPM: 1_000_000},
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	head := `{"model":"deepseek-v3.2","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"`
	body := head + strings.Repeat("a", max-len(head)-len(`"}]}`)) + `"}]}`
	require.Len(t, body, max)
	resp, answer := r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", answer)
	assert.Equal(t, max+len(`"stream_options":{"include_usage":true},`), <-sizes, "the upstream is asked for usage")
	// The tenant's budget still prices the 40 bytes added as 40 more
	// prompt tokens (a token a byte bounds a prompt): its reservation,
	// charged when the stream reports no usage, is that much above the
	// proxy's ($0.0000112 at deepseek-v3.2's $0.28 per 1M input tokens).
	tenant, proxy := r.tenants[0].budget.Spent(), r.budget.Spent()
	extra := testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: 40})
	assert.Equal(t, proxy+extra, tenant, "proxy %v, tenant %v", proxy, tenant)
}
