package subrole

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestIDTable: entries keep their index, and find works whether ids were
// added in order (as the store iterates) or not (linked users without a
// subscription, added in Discord id order).
func TestIDTable(t *testing.T) {
	for _, shuffled := range []bool{false, true} {
		var ids []string
		for i := range 1000 {
			ids = append(ids, fmt.Sprintf("%d", 100000+i*3))
		}
		if shuffled {
			rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		}
		var tab idTable
		for i, id := range ids {
			if got := tab.add(id); got != i {
				t.Fatalf("add %s: index %d, want %d", id, got, i)
			}
		}
		if tab.unsorted != shuffled {
			t.Fatalf("shuffled %v: unsorted %v", shuffled, tab.unsorted)
		}
		for i, id := range ids {
			if j, ok := tab.find(id); !ok || j != i || string(tab.at(j)) != id {
				t.Fatalf("shuffled %v: find %s = %d %v, want %d", shuffled, id, j, ok, i)
			}
			for _, miss := range []string{id + "0", id[:len(id)-1], "", "99999", "999999"} {
				if j, ok := tab.find(miss); ok {
					t.Fatalf("find %q found entry %d (%s)", miss, j, tab.at(j))
				}
			}
		}
		// Adding after a find keeps find right.
		tab.add("100001")
		if j, ok := tab.find("100001"); !ok || j != len(ids) {
			t.Fatalf("find after add: %d %v", j, ok)
		}
	}
}
