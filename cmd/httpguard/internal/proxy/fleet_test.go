package proxy

import (
	"context"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startRedis runs a redis-server of the test's own on loopback and returns
// a client of it. The test fails without the binary: CI installs it.
func startRedis(t *testing.T) (*redis.Client, func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "the fleet tests need redis-server (apt-get install redis-server; .ci/run installs it)")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(stop)
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	require.Eventually(t, func() bool { return client.Ping(context.Background()).Err() == nil }, 10*time.Second, 5*time.Millisecond)
	return client, stop
}

func TestProxiesSharingRedisShareATenantsBudget(t *testing.T) {
	client, stopRedis := startRedis(t)
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Redis = client
	const limit = 200 * httpguard.Microdollar
	c.Tenants[0].Budget = &BudgetSpec{Limit: limit}
	a, b := start(t, c), start(t, c)

	served := 0
	for i := 0; ; i++ {
		require.Less(t, i, 1000, "the cap ends proxy a's requests")
		resp, body := a.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-search")
		if resp.StatusCode == http.StatusOK {
			served++
			continue
		}
		// A Redis call slowed past redisguard's timeout on a loaded machine
		// refuses the request (store_unavailable): not the cap's refusal.
		if _, code, _ := errorOf(t, body); code != "store_unavailable" {
			require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(body))
			break
		}
	}
	require.Positive(t, served)
	var code string
	for i := 0; code == "" || code == "store_unavailable"; i++ {
		require.Less(t, i, 1000)
		resp, body := b.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-search")
		require.NotEqual(t, http.StatusOK, resp.StatusCode, "proxy b sees what proxy a spent")
		_, code, _ = errorOf(t, body)
	}
	assert.Equal(t, "budget_exceeded:search", code)
	spent := a.tenants[0].budget.Spent()
	assert.Positive(t, spent)
	assert.Equal(t, spent, b.tenants[0].budget.Spent(), "one cap in Redis")
	billable := billableAt(srv, testPrices["deepseek-v3.2"])
	assert.Positive(t, billable)
	assert.LessOrEqual(t, billable, limit, "what the provider may bill stays within the cap")
	assert.LessOrEqual(t, billable, spent, "and within what the budget charged")
	t.Logf("cap %v, charged %v, provider may bill %v", limit, spent, billable)

	ready, err := a.client.Get(a.URL + "/readyz")
	require.NoError(t, err)
	ready.Body.Close()
	assert.Equal(t, http.StatusOK, ready.StatusCode)
	stopRedis()
	ready, err = a.client.Get(a.URL + "/readyz")
	require.NoError(t, err)
	ready.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, ready.StatusCode, "not ready without Redis")
}

func TestProxiesSharingRedisShareATenantsRate(t *testing.T) {
	client, _ := startRedis(t)
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Redis = client
	c.Tenants[1].Limits = LimitSpec{RPS: 0.1, Burst: 1, MaxWait: -1}
	a, b := start(t, c), start(t, c)
	resp, _ := a.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, body := b.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "proxy b waits for the turn proxy a took")
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "rate_limit_exceeded", code)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
}
