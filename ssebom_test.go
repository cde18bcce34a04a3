package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An event stream may begin with a UTF-8 byte order mark, which the SSE
// specification has readers ignore (a PHP relay whose source files carry
// one writes it before its output). Its first line was read as a field
// named by the mark and skipped: a stream whose first line is its end —
// an image stream without partial images, its one event sent as a data
// line alone, or a chat stream of nothing but [DONE] — reached the reader
// as cut (io.ErrUnexpectedEOF) and counted as a failure of a provider
// that had answered whole, so that such a relay's every image opened its
// circuit.
func TestBreakerTakesAStreamAfterAByteOrderMarkForWhole(t *testing.T) {
	const completed = `data: {"type":"image_generation.completed","b64_json":"iVBORw0KGgo=","usage":{"input_tokens":10,"output_tokens":272}}` + "\n\n"
	for name, tc := range map[string]struct{ path, stream string }{
		"image": {"/v1/images/generations", completed},
		"chat":  {"/v1/chat/completions", openAIDone},
	} {
		for _, split := range []bool{false, true} {
			writes := []string{utf8BOM + tc.stream}
			if split { // the reads split the mark
				writes = []string{utf8BOM[:1], utf8BOM[1:2], utf8BOM[2:] + tc.stream}
			}
			srv := sseServer(t, writes...)
			r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
			read, err := readStream(t, clientFor(t, r.b), srv.URL, tc.path)
			assert.NoError(t, err, "%s, split %v", name, split)
			assert.Equal(t, utf8BOM+tc.stream, read, "%s, split %v", name, split)
			assert.Equal(t, CircuitClosed, r.stats(t).State, "%s, split %v", name, split)
		}

		// A part of a mark is no mark: the line it begins is no field.
		srv := sseServer(t, utf8BOM[:2]+tc.stream)
		r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
		_, err := readStream(t, clientFor(t, r.b), srv.URL, tc.path)
		assert.ErrorIs(t, err, errStreamCut, name)
	}
}

// The Budget reads such a stream's usage, which its first line carries.
// It charged the reservation instead: $0.01718 for a bill of $0.01093.
func TestBudgetChargesAStreamAfterAByteOrderMarkItsUsage(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, utf8BOM+`data: {"type":"image_generation.completed","b64_json":"iVBORw0KGgo=","usage":{"input_tokens":10,"output_tokens":272,"input_tokens_details":{"text_tokens":10,"image_tokens":0}}}`+"\n\n")
	})
	var settled []Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: loadPrices(t, gptImagePrices),
		OnSettle: func(s Settlement) { settled = append(settled, s) }})

	read := readThrough(t, api, b, "/v1/images/generations", `{"model":"gpt-image-1","prompt":"A red fox in the snow","stream":true,"quality":"low"}`)

	assert.True(t, strings.HasPrefix(read, utf8BOM+"data: "), "the caller reads the stream as sent")
	require.Len(t, settled, 1)
	assert.True(t, settled[0].UsageKnown)
	assert.Equal(t, (10*500+272*4000)*Cent/1_000_000, b.Spent(), "charged the usage the stream reported")
}
