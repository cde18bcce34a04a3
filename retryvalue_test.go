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

// A full slab is never cut from again, however it comes back from the
// pool. Under -race sync.Pool drops a quarter of the Puts, so a slab there
// seldom fills by use: this test hands falseValue full slabs itself.
func TestFalseValueNeverCutsFromAFullSlab(t *testing.T) {
	for range 200 {
		full := &falseSlab{taken: len(falseSlab{}.values)}
		for i := range full.values {
			full.values[i] = "changed by its caller"
		}
		held := falseSlabs.Get() // empties this P's own slot, so that the Get below finds full
		falseSlabs.Put(full)
		v := falseValue()
		falseSlabs.Put(held)
		require.Equal(t, []string{"false"}, v)
		require.Equal(t, 1, cap(v))
		p, start := uintptr(unsafe.Pointer(&v[0])), uintptr(unsafe.Pointer(&full.values[0]))
		require.False(t, p >= start && p < start+unsafe.Sizeof(full.values), "a value cut from a full slab")
	}
}

// The values cost an allocation per slab of 31, not one each.
// (testing.AllocsPerRun divides in integers: under -race, whose sync.Pool
// drops a quarter of the Puts, about a quarter of an allocation a value
// still reads 0.)
func TestFalseValueAllocatesOncePerSlab(t *testing.T) {
	assert.Zero(t, testing.AllocsPerRun(31*20, func() { _ = falseValue() }))
}
