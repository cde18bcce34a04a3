package httpguard_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/holysheep/httpguard"
)

// ExampleNewBudget caps spending at a tenth of a cent and shows how a
// refused request looks to the caller.
func ExampleNewBudget() {
	// A stand-in for the provider: every answer reports 1,000 prompt and
	// 500 completion tokens.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":500}}`)
	}))
	defer api.Close()

	prices, err := httpguard.LoadPrices(strings.NewReader(
		`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`))
	if err != nil {
		panic(err)
	}
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{
		Limit:  httpguard.Dollars(0.001),
		Period: httpguard.Daily,
		Prices: prices,
	})
	if err != nil {
		panic(err)
	}
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: httpguard.Chain(transport, budget)}

	body := `{"model":"deepseek-v3.2","max_tokens":500,"messages":[{"role":"user","content":"Hello"}]}`
	for i := 1; ; i++ {
		resp, err := client.Post(api.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if errors.Is(err, httpguard.ErrBudgetExceeded) {
			fmt.Printf("request %d refused, nothing sent; spent %v\n", i, budget.Spent())
			break
		}
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // settles the reservation to the reported usage
	}
	// Output:
	// request 3 refused, nothing sent; spent $0.00098
}
