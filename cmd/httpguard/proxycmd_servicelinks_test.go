package main

import (
	"bytes"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: Kubernetes gives every container variables for each
// Service of its namespace (enableServiceLinks, on by default), named
// after the Service: one named httpguard, the proxy's own as anyone would
// name it, gives HTTPGUARD_SERVICE_HOST, HTTPGUARD_SERVICE_PORT,
// HTTPGUARD_PORT and HTTPGUARD_PORT_8787_TCP and its _PROTO, _PORT and
// _ADDR; httpguard-redis gives HTTPGUARD_REDIS_SERVICE_HOST and the rest.
// The proxy named each at every start as "no setting of httpguard proxy
// ... ignored" (eleven warnings for these two Services), where nothing was
// wrong. Such names are not taken for settings; a typo still is.
func TestProxyDoesNotNameKubernetesServiceVariablesAsUnknownSettings(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	defer srv.Close()
	for name, value := range map[string]string{
		"HTTPGUARD_SERVICE_HOST":                "10.96.0.12",
		"HTTPGUARD_SERVICE_PORT":                "8787",
		"HTTPGUARD_SERVICE_PORT_HTTP":           "8787",
		"HTTPGUARD_PORT":                        "tcp://10.96.0.12:8787",
		"HTTPGUARD_PORT_8787_TCP":               "tcp://10.96.0.12:8787",
		"HTTPGUARD_PORT_8787_TCP_PROTO":         "tcp",
		"HTTPGUARD_PORT_8787_TCP_PORT":          "8787",
		"HTTPGUARD_PORT_8787_TCP_ADDR":          "10.96.0.12",
		"HTTPGUARD_REDIS_SERVICE_HOST":          "10.96.0.13",
		"HTTPGUARD_REDIS_SERVICE_PORT":          "6379",
		"HTTPGUARD_REDIS_PORT_6379_TCP_ADDR":    "10.96.0.13",
		"HTTPGUARD_BUDGT":                       "20",
		"HTTPGUARD_REDIS_PORT_6379_TCP_UNKNOWN": "x",
	} {
		t.Setenv(name, value)
	}
	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--upstream", srv.BaseURL()}, noEnv, &bytes.Buffer{}, &errOut)
	}()
	listeningAddr(t, &errOut)
	stopBySIGTERM(t, done, &errOut)
	logs := errOut.String()
	assert.Contains(t, logs, `"variable":"HTTPGUARD_BUDGT"`, "a typo is still named")
	assert.Contains(t, logs, `"variable":"HTTPGUARD_REDIS_PORT_6379_TCP_UNKNOWN"`, "no Service variable")
	for _, name := range []string{"HTTPGUARD_SERVICE_HOST", "HTTPGUARD_SERVICE_PORT", "HTTPGUARD_SERVICE_PORT_HTTP", "HTTPGUARD_PORT",
		"HTTPGUARD_PORT_8787_TCP", "HTTPGUARD_PORT_8787_TCP_PROTO", "HTTPGUARD_PORT_8787_TCP_PORT", "HTTPGUARD_PORT_8787_TCP_ADDR",
		"HTTPGUARD_REDIS_SERVICE_HOST", "HTTPGUARD_REDIS_SERVICE_PORT", "HTTPGUARD_REDIS_PORT_6379_TCP_ADDR"} {
		assert.NotContains(t, logs, `"variable":"`+name+`"`)
	}
}

// A Service's variables by their shape and value; a setting mistaken
// (HTTPGUARD_PORT=8080, as if --listen had a port flag) is no Service's.
func TestWhichVariablesAreAServicesLinks(t *testing.T) {
	for _, c := range []struct {
		name, value string
		link        bool
	}{
		{"HTTPGUARD_SERVICE_HOST", "10.96.0.12", true},
		{"HTTPGUARD_METRICS_SERVICE_PORT_PROM", "9090", true},
		{"HTTPGUARD_PORT", "tcp://10.96.0.12:8787", true},
		{"HTTPGUARD_PORT_53_UDP", "udp://10.96.0.10:53", true},
		{"HTTPGUARD_PORT_8787_TCP_PORT", "8787", true},
		{"HTTPGUARD_PORT_8787_SCTP_ADDR", "10.96.0.12", true},
		{"HTTPGUARD_PORT", "8080", false},
		{"HTTPGUARD_REDIS_PORT", "6379", false},
		{"HTTPGUARD_PORT_8787_TCP", "8787", false},
		{"HTTPGUARD_PORT_8787_HTTP_ADDR", "10.96.0.12", false},
		{"HTTPGUARD_PORT_X_TCP_ADDR", "10.96.0.12", false},
		{"HTTPGUARD_PORT_8787_TCP_HOST", "10.96.0.12", false},
		{"HTTPGUARD_BUDGT", "20", false},
	} {
		assert.Equal(t, c.link, serviceLink(c.name, c.value), "%s=%s", c.name, c.value)
	}
}
