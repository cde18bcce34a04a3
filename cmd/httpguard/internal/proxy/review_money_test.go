package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A price left empty in YAML (output: with nothing after it, or "") is
// missing, as in LoadPrices's JSON, not 0: a forgotten value must not
// make output free.
func TestParseFileRefusesAnEmptyPrice(t *testing.T) {
	for _, yaml := range []string{
		"prices:\n  m: {input: 1, output: }\n",
		"prices:\n  m:\n    input: 1\n    output:\n",
		"prices:\n  m: {input: 1, output: \"\"}\n",
		"prices:\n  m: {input: 1, output: 15, long_context: {above: 10, input: 2, output: }}\n",
	} {
		f, err := ParseFile(strings.NewReader(yaml), "p.yaml")
		assert.ErrorContains(t, err, `p.yaml:2: model "m"`, "%s read as %+v", yaml, f.Prices)
		assert.ErrorContains(t, err, "output", yaml)
	}
}
