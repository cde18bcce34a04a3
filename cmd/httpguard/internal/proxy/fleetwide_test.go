package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tryPost is post for another goroutine than the test's: a stream the
// upstream cut reads as far as it came, and an error as status 0.
func (r *running) tryPost(path, body string, header ...string) (int, []byte) {
	req, err := http.NewRequest(http.MethodPost, r.URL+path, strings.NewReader(body))
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// redisClient is another client of the Redis server client talks to: a
// pool of its own, as a proxy process of its own would have.
func redisClient(t *testing.T, client *redis.Client) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: client.Options().Addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// Two proxies on one Redis, each with its own pool, under concurrent
// requests split between them, against an upstream that bills every
// attempt reaching its model (resets after reading included) and fails a
// third of them: the proxy-wide --budget is one cap for the fleet,
// retries and all.
func TestTwoProxiesOnOneRedisHoldTheProxyWideCapWhileRetrying(t *testing.T) {
	client, _ := startRedis(t)
	srv := faultServer(t, httpguardtest.Config{FaultRate: 0.3, Seed: 7,
		Faults: []httpguardtest.Fault{httpguardtest.ConnectionReset(), httpguardtest.ServiceUnavailable(), httpguardtest.CutStream(1)}})
	const limit = 2000 * httpguard.Microdollar // about 30 requests' worth
	c := Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: limit, Period: httpguard.Daily}}
	ca, cb := c, c
	ca.Redis, cb.Redis = redisClient(t, client), redisClient(t, client)
	proxies := []*running{start(t, ca), start(t, cb)}

	var refused, ok atomic.Int64
	var wg sync.WaitGroup
	// Until the cap has refused 20: a Redis call slowed past its timeout
	// on a loaded machine has the proxies refuse what their budget covers
	// for a second (store_unavailable), which may take many turns.
	deadline := time.Now().Add(20 * time.Second)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; refused.Load() < 20 && time.Now().Before(deadline); i++ {
				p := proxies[(w+i)%2]
				body := chatBody
				if i%3 == 0 {
					body = streamBody
				}
				status, out := p.tryPost("/v1/chat/completions", body, "Authorization", "Bearer sk-client")
				switch status {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusTooManyRequests:
					if bytes.Contains(out, []byte(`"budget_exceeded:proxy"`)) {
						refused.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	require.Positive(t, ok.Load())
	require.Positive(t, refused.Load(), "the cap ended the run")
	billable := billableAt(srv, testPrices["deepseek-v3.2"])
	spentA, spentB := proxies[0].budget.Spent(), proxies[1].budget.Spent()
	assert.Equal(t, spentA, spentB, "one cap in Redis")
	assert.LessOrEqual(t, spentA, limit)
	assert.LessOrEqual(t, billable, limit, "what the provider may bill for every attempt stays within the fleet's cap")
	assert.LessOrEqual(t, billable, spentA, "and within what the budget charged")
	st := srv.Stats()
	t.Logf("cap %v, charged %v, provider may bill %v; %d answered, %d refused by the cap; %d attempts, %d resets, %d 503s",
		limit, spentA, billable, ok.Load(), refused.Load(), st.Requests, st.Resets, st.Status[http.StatusServiceUnavailable])
}

// Two proxies on one Redis, each with the proxy-wide --rps: together they
// send at that rate, not twice it.
func TestTwoProxiesOnOneRedisHoldTheProxyWideRate(t *testing.T) {
	client, _ := startRedis(t)
	var mu sync.Mutex
	var arrivals []time.Time
	srv := faultServer(t, httpguardtest.Config{})
	const rps, burst, n = 50, 2, 30
	c := Config{Upstreams: upstreams(t, srv), Limits: LimitSpec{RPS: rps, Burst: burst}}
	c.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
		return http.DefaultTransport.RoundTrip(r)
	})
	ca, cb := c, c
	ca.Redis, cb.Redis = redisClient(t, client), redisClient(t, client)
	proxies := []*running{start(t, ca), start(t, cb)}
	// Each proxy's limiter counts itself on Redis with its first request:
	// one that fails over before then paces the whole rate alone.
	for _, p := range proxies {
		resp, out := p.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	}
	time.Sleep(time.Second / rps * burst) // the bucket full again
	mu.Lock()
	arrivals = nil
	mu.Unlock()

	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, out := proxies[i%2].post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
			assert.Equal(t, http.StatusOK, resp.StatusCode, string(out))
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, arrivals, n)
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
	// n requests at rps after a burst take (n-burst)/rps; on two proxies
	// each pacing alone they would take half as long. The slack of a
	// second burst covers a Redis call slowed past its timeout on a loaded
	// machine: the proxy then paces its share of the rate, with a burst of
	// its own.
	span := arrivals[n-1].Sub(arrivals[0])
	least := time.Duration(float64(n-2*burst-1) / rps * float64(time.Second))
	if !assert.GreaterOrEqual(t, span, least, "%d requests over two proxies went at most at %d/s", n, rps) {
		t.Logf("proxy a's log:\n%s\nproxy b's log:\n%s", proxies[0].logs.String(), proxies[1].logs.String())
	}
	t.Logf("%d requests in %v (at %d/s, at least %v)", n, span, rps, least)
}

// A Redis that does not answer when the proxy starts: the proxy starts,
// /readyz says not ready, and what the budget covers is refused unsent,
// in the provider's format, until Redis answers; then it is served.
func TestAProxyWhoseRedisIsDownAtStartRefusesWhatItCannotAccountFor(t *testing.T) {
	rp := startRedisProcess(t)
	rp.kill()
	srv := faultServer(t, httpguardtest.Config{})
	c := Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}, Limits: LimitSpec{RPS: 100}}
	c.Redis = rp.client()
	r := start(t, c)

	assert.Equal(t, http.StatusServiceUnavailable, r.get(t, "/readyz").StatusCode)
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(out))
	_, code, msg := errorOf(t, out)
	assert.Equal(t, "store_unavailable", code)
	assert.NotContains(t, msg, rp.addr, "a client is not told where Redis is")
	assert.Zero(t, srv.Stats().Requests, "nothing was sent that the budget could not account for")

	rp.start()
	require.Eventually(t, func() bool {
		status, _ := r.tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
		return status == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "served once Redis answers, without a restart of the proxy")
	assert.Equal(t, http.StatusOK, r.get(t, "/readyz").StatusCode)
	assert.NotContains(t, r.logs.String(), "sk-client")
}

// redisProcess is a redis-server of the test's own that can be stalled
// (SIGSTOP), resumed, and killed and started again on its port.
type redisProcess struct {
	t      *testing.T
	bin    string
	args   []string
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startRedisProcess(t *testing.T, extra ...string) *redisProcess {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "the fleet tests need redis-server (apt-get install redis-server)")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	r := &redisProcess{t: t, bin: bin, addr: "127.0.0.1:" + port,
		args: append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}, extra...)}
	r.start()
	t.Cleanup(r.kill)
	return r
}

// start runs the server and waits until it answers.
func (r *redisProcess) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, r.args...)
	require.NoError(r.t, r.cmd.Start())
	r.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(r.cmd, r.exited)
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer c.Close()
	require.Eventually(r.t, func() bool { return c.Ping(context.Background()).Err() == nil }, 10*time.Second, 5*time.Millisecond)
}

func (r *redisProcess) stall()  { r.cmd.Process.Signal(syscall.SIGSTOP) }
func (r *redisProcess) resume() { r.cmd.Process.Signal(syscall.SIGCONT) }

// kill ends the server with SIGKILL, as a crash would.
func (r *redisProcess) kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGCONT)
	r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// client is a client of the server with a pool of its own, as a proxy
// process of its own would have, set as the command's --redis sets it.
func (r *redisProcess) client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.addr, ContextTimeoutEnabled: true})
	r.t.Cleanup(func() { c.Close() })
	return c
}

// A Redis that stalls mid-run (SIGSTOP): both proxies refuse what their
// budget covers within about a second, unsent, say not ready, and serve
// again by themselves once it answers; the cap holds across.
func TestTwoProxiesOnOneRedisRideOutAStall(t *testing.T) {
	rp := startRedisProcess(t)
	srv := faultServer(t, httpguardtest.Config{})
	const limit = 2000 * httpguard.Microdollar
	c := Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: limit, Window: time.Hour}}
	ca, cb := c, c
	ca.Redis, cb.Redis = rp.client(), rp.client()
	proxies := []*running{start(t, ca), start(t, cb)}
	for _, p := range proxies {
		status, out := p.tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
		require.Equal(t, http.StatusOK, status, string(out))
	}

	rp.stall()
	sent := srv.Stats().Requests
	for _, p := range proxies {
		began := time.Now()
		status, out := p.tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
		assert.Equal(t, http.StatusServiceUnavailable, status, string(out))
		assert.Contains(t, string(out), `"store_unavailable"`)
		assert.Less(t, time.Since(began), 3*time.Second, "a stalled Redis is given up on, not waited for")
	}
	assert.Equal(t, http.StatusServiceUnavailable, proxies[0].get(t, "/readyz").StatusCode)
	assert.Equal(t, sent, srv.Stats().Requests, "nothing sent while the budget could not account for it")
	rp.resume()

	for _, p := range proxies {
		require.Eventually(t, func() bool {
			status, _ := p.tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
			return status == http.StatusOK
		}, 10*time.Second, 20*time.Millisecond, "back on Redis by itself")
	}
	for p, i := proxies[0], 0; ; i++ {
		require.Less(t, i, 1000)
		status, out := p.tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
		if status != http.StatusOK && !bytes.Contains(out, []byte(`"store_unavailable"`)) { // a Redis call slowed past its timeout on a loaded machine
			require.Contains(t, string(out), `"budget_exceeded:proxy"`)
			break
		}
	}
	status, out := proxies[1].tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
	assert.NotEqual(t, http.StatusOK, status, "proxy b sees the spend: %s", out)
	billable := billableAt(srv, testPrices["deepseek-v3.2"])
	assert.LessOrEqual(t, billable, limit)
	assert.Equal(t, proxies[0].budget.Spent(), proxies[1].budget.Spent())
	t.Logf("cap %v, charged %v, provider may bill %v", limit, proxies[0].budget.Spent(), billable)
}

// A Redis that restarts empty (no AOF) forgets what the fleet spent in
// the window. The proxies spent the cap again (this test pinned it); now
// the stores that spent there notice that Redis lost its data, and the
// proxies refuse what they cannot account for until the window ends.
func TestTwoProxiesOnARedisRestartedEmptyDoNotSpendTheCapAgain(t *testing.T) {
	rp := startRedisProcess(t)
	srv := faultServer(t, httpguardtest.Config{})
	const limit = 500 * httpguard.Microdollar
	c := Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: limit, Window: time.Hour}}
	ca, cb := c, c
	ca.Redis, cb.Redis = rp.client(), rp.client()
	proxies := []*running{start(t, ca), start(t, cb)}
	for i := 0; ; i++ {
		require.Less(t, i, 1000)
		status, out := proxies[i%2].tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
		if status != http.StatusOK && !bytes.Contains(out, []byte(`"store_unavailable"`)) { // a Redis call slowed past its timeout
			require.Contains(t, string(out), `"budget_exceeded:proxy"`, "status %d", status)
			break
		}
	}
	once := billableAt(srv, testPrices["deepseek-v3.2"])
	rp.kill()
	rp.start()
	for _, p := range proxies {
		require.Eventually(t, func() bool {
			status, out := p.tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
			require.NotEqual(t, http.StatusOK, status, "a Redis restarted empty forgot the window's spend: %s", out)
			return strings.Contains(p.logs.String(), "Redis lost the money spent")
		}, 10*time.Second, 20*time.Millisecond, "the proxy notices that Redis lost the window's spend")
	}
	for i := range 20 {
		status, out := proxies[i%2].tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
		require.Equal(t, http.StatusServiceUnavailable, status, "%s", out)
		require.Contains(t, string(out), `"store_unavailable"`)
	}
	billable := billableAt(srv, testPrices["deepseek-v3.2"])
	t.Logf("cap %v; billable %v before the restart, %v after", limit, once, billable)
	assert.LessOrEqual(t, billable, limit, "the cap holds across the restart")
}

// A Redis with an append-only file killed mid-run and started again: the
// proxies refuse what they cannot account for meanwhile, come back by
// themselves, and the fleet's cap holds over the whole run.
func TestTwoProxiesOnAnAOFRedisKilledMidRunKeepTheCap(t *testing.T) {
	rp := startRedisProcess(t, "--appendonly", "yes", "--appendfsync", "always")
	srv := faultServer(t, httpguardtest.Config{FaultRate: 0.2, Seed: 3,
		Faults: []httpguardtest.Fault{httpguardtest.ConnectionReset(), httpguardtest.ServiceUnavailable()}})
	const limit = 1500 * httpguard.Microdollar
	c := Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: limit, Period: httpguard.Monthly}}
	ca, cb := c, c
	ca.Redis, cb.Redis = rp.client(), rp.client()
	proxies := []*running{start(t, ca), start(t, cb)}

	var refused, unavailable, ok atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				status, out := proxies[(w+i)%2].tryPost("/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
				switch {
				case status == http.StatusOK:
					ok.Add(1)
				case bytes.Contains(out, []byte(`"budget_exceeded:proxy"`)):
					refused.Add(1)
				case bytes.Contains(out, []byte(`"store_unavailable"`)):
					unavailable.Add(1)
				}
			}
		}()
	}
	require.Eventually(t, func() bool { return ok.Load() >= 5 }, 10*time.Second, time.Millisecond)
	rp.kill()
	require.Eventually(t, func() bool { return unavailable.Load() > 0 }, 10*time.Second, time.Millisecond, "refused while Redis is away")
	rp.start()
	require.Eventually(t, func() bool { return refused.Load() >= 10 }, 20*time.Second, 5*time.Millisecond, "the cap ends the run, after Redis came back")
	close(stop)
	wg.Wait()

	billable := billableAt(srv, testPrices["deepseek-v3.2"])
	assert.LessOrEqual(t, billable, limit, "what the provider may bill for every attempt stays within the cap across the restart")
	t.Logf("cap %v; provider may bill %v; %d answered, %d refused while Redis was away, %d by the cap", limit, billable, ok.Load(), unavailable.Load(), refused.Load())
}
