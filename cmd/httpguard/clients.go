package main

import (
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/holysheep/httpguard"
)

// This file builds the clients the demo compares, with every wait of the
// real-world settings divided by timeScale.

// timeScale divides every wait of the real-world settings, so that the demo
// runs in seconds: a Retry-After of 2s becomes 20ms.
const timeScale = 100

// contender is a client the demo compares.
type contender struct {
	name      string
	newClient newClientFunc
}

// client is what a contender builds for one run: fresh, so that no retry
// budget, limiter or spend carries over from another run.
type client struct {
	*http.Client
	budget *httpguard.Budget // nil unless the client caps spending
	limit  httpguard.Money   // the budget's limit
}

// newClientFunc builds a client that sends its requests through base.
type newClientFunc func(base http.RoundTripper) (client, error)

// guardedPolicy is the HolySheep reference policy, DefaultRetryPolicy,
// with its waits scaled down by timeScale.
func guardedPolicy() httpguard.RetryPolicy {
	p := httpguard.DefaultRetryPolicy()
	p.BaseDelay /= timeScale
	p.MaxDelay /= timeScale
	p.Jitter /= timeScale
	p.MaxServerDelay = 60 * time.Second / timeScale
	return p
}

// demoPrices prices the demo's model like DeepSeek V3.2 (USD per 1M tokens).
const demoPrices = `{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`

func prices() httpguard.PriceTable {
	t, err := httpguard.LoadPrices(strings.NewReader(demoPrices))
	if err != nil {
		panic("httpguard demo: bad built-in price table: " + err.Error())
	}
	return t
}

var (
	plain = contender{"plain http.Client", func(base http.RoundTripper) (client, error) {
		return client{Client: &http.Client{Transport: base}}, nil
	}}

	naive = contender{"go-retryablehttp, 3 retries", func(base http.RoundTripper) (client, error) {
		c := retryablehttp.NewClient()
		c.HTTPClient = &http.Client{Transport: base}
		c.RetryMax = 3
		c.RetryWaitMin = time.Second / timeScale
		c.RetryWaitMax = 30 * time.Second / timeScale
		c.Logger = nil
		return client{Client: c.StandardClient()}, nil
	}}

	guarded = contender{"httpguard Retrier", func(base http.RoundTripper) (client, error) {
		r, err := httpguard.NewRetrier(guardedPolicy())
		if err != nil {
			return client{}, err
		}
		return client{Client: &http.Client{Transport: httpguard.Chain(base, r)}}, nil
	}}
)

// capped returns the guarded stack with a Budget capped at limit inside
// the Retrier, where it sees every attempt.
func capped(limit httpguard.Money) contender {
	return contender{"httpguard Retrier + Budget", func(base http.RoundTripper) (client, error) {
		b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: prices()})
		if err != nil {
			return client{}, err
		}
		r, err := httpguard.NewRetrier(guardedPolicy())
		if err != nil {
			return client{}, err
		}
		return client{Client: &http.Client{Transport: httpguard.Chain(base, r, b)}, budget: b, limit: limit}, nil
	}}
}

// providerRate is the provider's request limit in the rate-limit scenario,
// and limiterBurst the Limiter's burst there: below the server's (which is
// providerRate), so that the Limiter never drains the server's bucket.
const (
	providerRate = 20
	limiterBurst = 5
)

// paced is the guarded stack with a Limiter at the provider's rate inside
// the Retrier, as the package documentation recommends.
var paced = contender{"httpguard Retrier + Limiter", func(base http.RoundTripper) (client, error) {
	r, err := httpguard.NewRetrier(guardedPolicy())
	if err != nil {
		return client{}, err
	}
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: providerRate, Burst: limiterBurst})
	if err != nil {
		return client{}, err
	}
	return client{Client: &http.Client{Transport: httpguard.Chain(base, r, l)}}, nil
}}
