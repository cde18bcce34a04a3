package redisguard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
)

// The fleet tests run the test binary again as child processes: when
// childEnv is set, TestMain runs runChild with its value (a childConfig in
// JSON) instead of the tests.
const childEnv = "REDISGUARD_TEST_CHILD"

// childConfig says what a child process does.
type childConfig struct {
	// Role is "load" (send requests through Retrier → Budget and report a
	// childResult), "hold" (send Requests that never end, and wait to be
	// killed), "settle" (hold Amount in the store, settle it when told) or
	// "limit" (send requests through a Limiter on a LimitStore, see
	// limitfleet_test.go).
	Role  string
	Redis string // the Redis server's address
	API   string // the fault server's base URL (…/v1)
	Name  string // the budget's name in Redis
	Limit httpguard.Money
	Lease time.Duration

	Requests    int // load: requests to send in all (0: until a line on stdin); hold: requests to keep in flight
	Concurrency int // load: requests in flight at once
	MaxTokens   int
	// AttemptTimeout is the load Retrier's (0: 250ms, which the fault
	// server's SlowHeaders pass).
	AttemptTimeout time.Duration

	Amount httpguard.Money // settle: the money to hold

	// limit: the Limiter's rate and burst, how often the store counts
	// itself in Redis, and how often it probes Redis once lost (0: 20ms).
	Rate          float64
	Burst         int
	PresenceEvery time.Duration
	ProbeInterval time.Duration
}

// childResult is what a load child reports on its last line of output.
type childResult struct {
	// OK counts answers, Refused ErrBudgetExceeded, Unavailable
	// ErrUnavailable, Failed the other errors (the faults the Retrier did
	// not get past).
	OK, Refused, Unavailable, Failed int
	// Recovered counts the requests the store decided on (answered or
	// refused for the budget) after the first ErrUnavailable.
	Recovered         int
	UnavailableSample string
	FailedSample      string
	CloseErr          string
}

func runChild(env string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(env), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	client := redis.NewClient(testClientOptions(c.Redis))
	defer client.Close()
	if c.Role == "limit" {
		if err := childLimit(c, client); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	store, err := NewBudgetStore(client, BudgetStoreConfig{Name: c.Name, Timeout: testTimeout, ProbeInterval: 20 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch c.Role {
	case "load":
		err = childLoad(c, store)
	case "hold":
		err = childHold(c, store)
	case "settle":
		err = childSettle(c, store)
	default:
		err = fmt.Errorf("unknown role %q", c.Role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// newChildClient is the stack the fleet tests check: Retrier → Budget, the
// Budget on store; without the Retrier when retrier is false.
func newChildClient(c childConfig, store *BudgetStore, retrier bool) (*http.Client, error) {
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: c.Limit, Prices: testPrices, Store: store, Lease: c.Lease,
		MaxWait: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	layers := []httpguard.Layer{budget}
	if retrier {
		timeout := c.AttemptTimeout
		if timeout == 0 {
			timeout = 250 * time.Millisecond
		}
		r, err := httpguard.NewRetrier(httpguard.RetryPolicy{MaxRetries: 2, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond,
			AttemptTimeout: timeout})
		if err != nil {
			return nil, err
		}
		layers = []httpguard.Layer{r, budget}
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 100
	return &http.Client{Transport: httpguard.Chain(base, layers...)}, nil
}

// childLoad sends requests, every third one streaming. It says "answered"
// after its first answer, and prints a childResult at the end.
func childLoad(c childConfig, store *BudgetStore) error {
	hc, err := newChildClient(c, store, true)
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		res     childResult
		sent    atomic.Int64
		sawDown atomic.Bool
		wg      sync.WaitGroup
		stop    atomic.Bool
	)
	if c.Requests == 0 {
		go func() {
			bufio.NewReader(os.Stdin).ReadString('\n')
			stop.Store(true)
		}()
	}
	for range c.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := sent.Add(1)
				if c.Requests > 0 && n > int64(c.Requests) || stop.Load() {
					return
				}
				body := chatBody(c.MaxTokens)
				if n%3 == 0 {
					body = strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1)
				}
				err := send(hc, c.API, body)
				mu.Lock()
				switch {
				case err == nil:
					res.OK++
					if res.OK == 1 {
						fmt.Println("answered")
					}
					if sawDown.Load() {
						res.Recovered++
					}
				case errors.Is(err, httpguard.ErrBudgetExceeded):
					res.Refused++
					if sawDown.Load() {
						res.Recovered++
					}
				case errors.Is(err, ErrUnavailable):
					res.Unavailable++
					res.UnavailableSample = err.Error()
					sawDown.Store(true)
				default:
					res.Failed++
					res.FailedSample = err.Error()
				}
				mu.Unlock()
				if errors.Is(err, ErrUnavailable) {
					time.Sleep(5 * time.Millisecond) // as a caller would, rather than spin
				}
			}
		}()
	}
	wg.Wait()
	if err := store.Close(); err != nil {
		res.CloseErr = err.Error()
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// send posts body and reads the answer to its end. An error status after
// the Retrier's retries is an error too.
func send(hc *http.Client, api, body string) error {
	resp, err := hc.Post(api+"/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// childHold sends requests to a server that does not answer them, so that
// their reservations stay held and renewed, until the process is killed.
// No Retrier: its AttemptTimeout would end them.
func childHold(c childConfig, store *BudgetStore) error {
	hc, err := newChildClient(c, store, false)
	if err != nil {
		return err
	}
	for range c.Requests {
		go send(hc, c.API, chatBody(c.MaxTokens))
	}
	select {}
}

// childSettle takes orders from its stdin, one a line: "hold" holds
// c.Amount and says "held"; "settle" settles the hold for a nano-dollar
// and says "settled <time in Unix ns>", the time just before it called
// Settle.
func childSettle(c childConfig, store *BudgetStore) error {
	defer store.Close()
	ctx := context.Background()
	lines := bufio.NewScanner(os.Stdin)
	var id uint64
	for lines.Scan() {
		switch lines.Text() {
		case "hold":
			id++
			res, err := store.Reserve(ctx, httpguard.Reservation{ID: id, Window: "lifetime", Amount: c.Amount}, c.Limit)
			if err != nil || !res.OK {
				return fmt.Errorf("reserve: %+v %v", res, err)
			}
			fmt.Println("held")
		case "settle":
			at := time.Now()
			if _, err := store.Settle(ctx, "lifetime", id, 1); err != nil {
				return err
			}
			fmt.Println("settled", at.UnixNano())
		}
	}
	return nil // the test is over
}
