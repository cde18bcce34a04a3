package redisguard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/redisguard"
)

// Two processes of one service, each with its own Budget and its own store
// of the same Name on one Redis (here an embedded miniredis), share one
// cap: what the first spends, the second cannot.
func ExampleNewBudgetStore() {
	// A stand-in for the provider: every answer reports 1,000 prompt and
	// 500 completion tokens, $0.00049 at these prices.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":500}}`)
	}))
	defer api.Close()
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	prices, err := httpguard.LoadPrices(strings.NewReader(
		`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`))
	if err != nil {
		panic(err)
	}

	// process starts one replica's client: a store and a Budget of its own.
	process := func() (*http.Client, *httpguard.Budget, func()) {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		store, err := redisguard.NewBudgetStore(rdb, redisguard.BudgetStoreConfig{Name: "openai-daily"})
		if err != nil {
			panic(err)
		}
		budget, err := httpguard.NewBudget(httpguard.BudgetConfig{
			Limit: httpguard.Dollars(0.001), Period: httpguard.Daily, Prices: prices, Store: store,
		})
		if err != nil {
			panic(err)
		}
		transport := &http.Transport{}
		return &http.Client{Transport: httpguard.Chain(transport, budget)}, budget, func() {
			transport.CloseIdleConnections()
			store.Close()
			rdb.Close()
		}
	}
	first, _, stopFirst := process()
	defer stopFirst()
	second, secondBudget, stopSecond := process()
	defer stopSecond()

	body := `{"model":"deepseek-v3.2","max_tokens":500,"messages":[{"role":"user","content":"Hello"}]}`
	send := func(name string, c *http.Client) {
		resp, err := c.Post(api.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		var refused *httpguard.BudgetError
		if errors.As(err, &refused) {
			fmt.Printf("%s: refused, nothing sent: it needs %v at worst, %v remains\n", name, refused.Need, refused.Remaining)
			return
		}
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // settles the reservation, in Redis, to the reported usage
		fmt.Printf("%s: %s\n", name, resp.Status)
	}
	send("first", first)
	send("first", first)
	send("second", second)

	settled, _, err := secondBudget.Totals(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println("spent by the fleet, as the second process reads it:", settled)
	// Output:
	// first: 200 OK
	// first: 200 OK
	// second: refused, nothing sent: it needs $0.00023492 at worst, $0.00002 remains
	// spent by the fleet, as the second process reads it: $0.00098
}
