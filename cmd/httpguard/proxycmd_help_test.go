package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: the flag package takes --h, --help=true and -h=1 for a
// request for help too, which the proxy's own check (-h, -help, --help
// exactly) missed: they were answered "httpguard proxy: flag: help
// requested" with exit code 2, where demo prints its usage.
func TestProxyHelpInEveryFormTheFlagPackageTakesPrintsTheUsage(t *testing.T) {
	for _, arg := range []string{"--h", "--help=true", "-h=1", "-help=t"} {
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run([]string{"proxy", arg}, &out, &errOut), arg)
		assert.Contains(t, out.String(), "usage: httpguard proxy [flags]", arg)
		assert.Empty(t, errOut.String(), arg)
	}
}
