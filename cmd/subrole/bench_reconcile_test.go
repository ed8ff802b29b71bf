package main

import (
	"context"
	"testing"
	"time"
)

// TestBenchReconcileSmall runs "subrole bench reconcile" at a small size, so
// the benchmark keeps working (it fails when the role writes differ from the
// drifted members).
func TestBenchReconcileSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess benchmark")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := reconcileBench{Dir: t.TempDir(), Members: 400, Drift: 0.05, Spawn: testSpawner}
	m, err := b.run(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range m {
		if x.name == "members whose roles were written" && x.value != 20 {
			t.Fatalf("%s = %v, want 20", x.name, x.value)
		}
	}
}
