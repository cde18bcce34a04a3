package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSplitParamsSplitsOutsideQuotesOnly(t *testing.T) {
	for h, want := range map[string][]string{
		`form-data; name="a;b"; x=1`:    {`form-data`, ` name="a;b"`, ` x=1`},
		`form-data; name="a\";b"; x=1`:  {`form-data`, ` name="a\";b"`, ` x=1`},
		`form-data; name="a\\";b"; x=1`: {`form-data`, ` name="a\\";b"`, ` x=1`}, // Python counts \" as escaped, after a \ too
		`;a;`:                           {``, `a`, ``},
		`x; name="never closed; y=2`:    {`x`, ` name="never closed; y=2`},
	} {
		assert.Equal(t, want, splitParams(h), h)
	}
}

// Was a denial of service: splitParams counted the quotes before each ;
// anew, so a Content-Disposition line of a tenant's form (read whole by
// lineDestination, anywhere in a body of MaxRequestBytes) with its ;s
// inside a quote took time quadratic in its length: 64 Ki of them took
// ~80 ms, a MiB of them minutes of a core. BenchmarkSplitParamsQuotedSemicolons
// shows it (~0.1 ms now); this pins the answer on such a line.
func TestSplitParamsReadsALongQuotedLine(t *testing.T) {
	h := `form-data; name="` + strings.Repeat(";", 1<<20) + `"; name*=api_base`
	params := splitParams(h)
	assert.Len(t, params, 3)
	assert.Equal(t, []string{"api_base"}, emailParams(h, "name")[1:])
}
