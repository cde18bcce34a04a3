package httpguard

import (
	"net/http"
	"strconv"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every response the Retrier returns says X-Should-Retry: false in a value
// of its own, from any number of goroutines at once: a caller who changes
// one in place (Header.Values returns it, not a copy) changes no other, and
// one who appends to it gets a new array.
func TestRetrierMarksEachResponseWithAValueOfItsOwn(t *testing.T) {
	r, err := NewRetrier(DefaultRetryPolicy())
	require.NoError(t, err)
	rt := r.Wrap(cannedTransport{openAIJSON})
	values := make([][]string, 8*100)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				req, err := http.NewRequest(http.MethodGet, "http://api.test/v1/models", nil)
				if err != nil {
					panic(err) // not t.Fatal: another goroutine
				}
				resp, err := rt.RoundTrip(req)
				if err != nil {
					panic(err) // not t.Fatal: another goroutine
				}
				resp.Body.Close()
				v := resp.Header.Values("X-Should-Retry")
				assert.Equal(t, []string{"false"}, v)
				v[0] = strconv.Itoa(g*100 + i) // changed by its caller
				values[g*100+i] = v
			}
		}()
	}
	wg.Wait()
	for i, v := range values {
		require.Equal(t, []string{strconv.Itoa(i)}, v)
		assert.Equal(t, 1, cap(v))
	}
	for range 40 { // past the slab's end
		assert.Equal(t, []string{"false"}, falseValue())
	}
	assert.LessOrEqual(t, unsafe.Sizeof(falseSlab{}), uintptr(512), "the slab stays in its size class")
}
