package integration

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// The README's example test of a client of one's own (under "The fault server:
// httpguardtest"), as written there.
func TestMyClientSurvivesFaults(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{FaultRate: 0.05, Seed: 1,
		Faults: []httpguardtest.Fault{httpguardtest.ServiceUnavailable(), httpguardtest.ConnectionReset()}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// The next request gets a 429 asking for a 20ms wait.
	if err := srv.Enqueue(httpguardtest.RateLimited(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}

	policy := httpguard.DefaultRetryPolicy()
	policy.BaseDelay, policy.Jitter = 10*time.Millisecond, 5*time.Millisecond // tests wait milliseconds
	retrier, err := httpguard.NewRetrier(policy)
	if err != nil {
		t.Fatal(err)
	}
	guarded := &http.Client{Transport: httpguard.Chain(srv.Client().Transport, retrier)}
	client := openai.NewClient(option.WithBaseURL(srv.BaseURL()), option.WithAPIKey("test"),
		option.WithHTTPClient(guarded), option.WithMaxRetries(0))
	for range 20 {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    "deepseek-v3.2",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say ok.")},
		})
		if err != nil {
			t.Errorf("the guarded client failed: %v", err)
		}
	}
	st := srv.Stats() // Requests, Status by code, Resets, RateLimited, tokens billed
	t.Logf("%d requests for 20 calls: %d answered 429, %d answered 503, %d reset",
		st.Requests, st.Status[429], st.Status[503], st.Resets)
}
