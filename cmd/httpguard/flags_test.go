package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A mistyped number or duration, on the command line or in the
// environment, was refused with the flag package's bare "parse error",
// which does not say what the flag takes.
func TestAFlagsBadValueSaysWhatTheFlagTakes(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"proxy", "--base-delay", "5"}, want: `invalid value "5" for flag -base-delay: want a Go duration, such as 500ms, 1s or 2m`},
		{args: []string{"proxy", "--rps", "ten"}, want: `invalid value "ten" for flag -rps: want a number, such as 10 or 0.5`},
		{args: []string{"proxy", "--tpm", "1.5"}, want: `invalid value "1.5" for flag -tpm: want a whole number, such as 10`},
		{args: []string{"proxy", "--max-request-bytes", "99999999999999999999"}, want: `invalid value "99999999999999999999" for flag -max-request-bytes: value out of range`},
		{args: []string{"proxy"}, env: map[string]string{"HTTPGUARD_SHUTDOWN_GRACE": "30"}, want: `HTTPGUARD_SHUTDOWN_GRACE="30": want a Go duration, such as 500ms, 1s or 2m`},
		{args: []string{"proxy"}, env: map[string]string{"HTTPGUARD_BURST": "x"}, want: `HTTPGUARD_BURST="x": want a whole number, such as 10`},
		{args: []string{"demo", "-n", "abc"}, want: `invalid value "abc" for flag -n: want a whole number, such as 10`},
		{args: []string{"demo", "-seed", "-1"}, want: `invalid value "-1" for flag -seed: want a whole number, such as 10`},
	} {
		var out, errOut bytes.Buffer
		getenv := func(k string) string { return c.env[k] }
		var code int
		if c.args[0] == "proxy" {
			code = proxyCommand(c.args[1:], getenv, &out, &errOut)
		} else {
			code = run(c.args, &out, &errOut)
		}
		assert.Equal(t, 2, code, "%v", c.args)
		assert.Contains(t, errOut.String(), "httpguard "+c.args[0]+": "+c.want, "%v %v", c.args, c.env)
		assert.NotContains(t, errOut.String(), "parse error", "%v %v", c.args, c.env)
	}
}

// The flags keep the values and syntax the flag package took.
func TestNumberFlagsTakeWhatTheFlagPackageTook(t *testing.T) {
	s, err := parseProxyFlags([]string{"--rps", "0.5", "--burst", "0x10", "--tpm", "2000", "--base-delay", "250ms",
		"--max-request-bytes", "1024", "--shutdown-grace", "0"}, noEnv)
	if assert.NoError(t, err) {
		assert.Equal(t, 0.5, s.rps)
		assert.Equal(t, 16, s.burst)
		assert.Equal(t, 2000, s.tpm)
		assert.Equal(t, "250ms", s.baseDelay.String())
		assert.EqualValues(t, 1024, s.maxRequestBytes)
		assert.Zero(t, s.shutdownGrace)
		assert.Equal(t, 5, s.maxRetries, "defaults stay")
		assert.Equal(t, "1m0s", s.maxDelay.String())
	}
}
