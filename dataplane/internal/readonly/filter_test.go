package readonly

import (
	"slices"
	"testing"
)

func TestFilter(t *testing.T) {
	in := []int{1, 2, 3, 4}
	even := func(n int) bool { return n%2 == 0 }
	if got := Filter(in, even); !slices.Equal(got, []int{2, 4}) {
		t.Fatalf("Filter = %v, want [2 4]", got)
	}
	if got := Filter(in, func(int) bool { return true }); &got[0] != &in[0] || len(got) != len(in) {
		t.Fatal("keeping everything copied the slice")
	}
	if got := Filter(in, func(int) bool { return false }); got != nil {
		t.Fatalf("keeping nothing = %v, want nil", got)
	}
	if got := Filter([]int(nil), even); got != nil {
		t.Fatalf("Filter(nil) = %v", got)
	}
}
