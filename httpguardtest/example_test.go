package httpguardtest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/holysheep/httpguard/httpguardtest"
)

// The server fails the first request with a 503 and the second with a
// connection reset, then answers; Stats tells what it saw.
func Example() {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{CompletionTokens: 8})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	if err := srv.Enqueue(httpguardtest.ServiceUnavailable(), httpguardtest.ConnectionReset()); err != nil {
		panic(err)
	}

	client := srv.Client()
	body := `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"Say ok."}]}`
	for range 3 {
		resp, err := client.Post(srv.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			fmt.Println("transport error")
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(resp.Status)
	}
	st := srv.Stats()
	// The reset request reached the model: a provider bills it, though its
	// answer never came back.
	fmt.Printf("requests=%d resets=%d 200s=%d answered=%d+%d tokens billable=%d+%d tokens\n",
		st.Requests, st.Resets, st.Status[http.StatusOK], st.PromptTokens, st.CompletionTokens,
		st.BillablePromptTokens, st.BillableCompletionTokens)
	// Output:
	// 503 Service Unavailable
	// transport error
	// 200 OK
	// requests=3 resets=1 200s=1 answered=2+8 tokens billable=4+16 tokens
}
