package redisguard

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hashTag is the part of a key a Redis Cluster hashes: what is between the
// first { and the first } after it, when that is not empty; else the key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// Every script takes a budget's keys together: on a Cluster they must be
// in one slot, whatever the names.
func TestBudgetStoreKeysOfABudgetShareOneHashTag(t *testing.T) {
	for _, name := range []string{"daily", "with:colons", "with{braces}", "}", "{"} {
		k := newKeyspace("httpguard", name)
		keys := []string{k.newest(), k.window("day:2026-11-30"), k.leases("day:2026-11-30"), k.window("w{x}"), k.leases("lifetime")}
		for _, key := range keys {
			assert.Equal(t, hashTag(keys[0]), hashTag(key), "%q and %q", keys[0], key)
		}
	}
}

// What Redis holds of a budget is windows, IDs and integers: nothing of the
// requests, their keys or their prompts.
func TestBudgetStoreKeepsNothingOfTheRequests(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newStore(t, client, BudgetStoreConfig{Name: "private"})
	api := newFaultServer(t, httpguardtest.Config{})
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: testPrices, Store: s})
	require.NoError(t, err)
	hc := &http.Client{Transport: httpguard.Chain(api.Client().Transport, b)}
	const secret, prompt = "sk-secret-4242", "my confidential prompt"
	body := strings.Replace(chatBody(10), "hello", prompt, 1)
	req, err := http.NewRequest("POST", api.BaseURL()+"/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close() // the hold stays in Redis while the answer is open

	ctx := context.Background()
	keys, err := client.Keys(ctx, "*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	layout := regexp.MustCompile(`^\{httpguard:private\}:(newest|win:lifetime|lease:lifetime)$`)
	var stored strings.Builder
	for _, key := range keys {
		assert.Regexp(t, layout, key)
		switch typ := client.Type(ctx, key).Val(); typ {
		case "hash":
			for f, v := range client.HGetAll(ctx, key).Val() {
				stored.WriteString(f + "=" + v + "\n")
			}
		case "zset":
			for _, z := range client.ZRangeWithScores(ctx, key, 0, -1).Val() {
				stored.WriteString(z.Member.(string) + "\n")
			}
		default:
			t.Errorf("%s is a %s", key, typ)
		}
	}
	assert.Regexp(t, `^([a-z]+(:[0-9]+)?=(-?[0-9]+|lifetime)\n|[0-9]+\n)+$`, stored.String(), "windows, IDs and integers only")
	assert.NotContains(t, stored.String(), secret)
	assert.NotContains(t, stored.String(), "confidential")
}
