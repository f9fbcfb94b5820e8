package gitsync_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kithid/kith/authz/gitsync"
	"github.com/kithid/kith/authz/gitsync/gitsynctest"
)

// A hostile policy repository: a 100 MB blob outside the policy path must not be read (a sync took the
// server to 482 MB), and files under it beyond the limits are refused naming the file and the limit
// (a 100 MB .rego took the server to ≈ 2 GB) before their content is read.
func TestHostileRepositoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 100 MB blob into a git repository")
	}
	ctx := context.Background()
	const maxRise = 160 << 20
	repo := gitsynctest.New(t)
	big := make([]byte, 100<<20)
	rand.Read(big)
	good := repo.Commit(map[string]string{"policy/ext.rego": goodPolicy, "assets/big.bin": string(big)})
	big = nil

	// sync syncs ref and returns the peak heap in use above what it was before (sampled every 5 ms).
	sync := func(t *testing.T, ref string, l gitsync.Limits) (peak uint64, err error) {
		t.Helper()
		s, err := gitsync.New(gitsync.Config{URL: repo.Dir, Ref: ref, Path: "policy", Limits: l, WorkDir: t.TempDir(),
			Apply: func(context.Context, gitsync.Commit) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		stop, sampled := make(chan struct{}), make(chan uint64)
		go func() {
			var max uint64
			for {
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				max = maxU(max, m.HeapInuse)
				select {
				case <-stop:
					sampled <- max
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
		_, err = s.Sync(ctx)
		close(stop)
		max := <-sampled
		if max < before.HeapInuse {
			return 0, err
		}
		return max - before.HeapInuse, err
	}

	t.Run("a 100 MB blob outside the policy path is never read", func(t *testing.T) {
		allocated, err := sync(t, "main", gitsync.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the heap in use rose by %.1f MiB at most", float64(allocated)/(1<<20))
		// Before, the whole pack went into memory storage: the heap rose by ≈ 400 MiB. go-git still holds
		// the one object it indexes (≈ 100 MiB here), which max_fetch_bytes bounds.
		if allocated > maxRise {
			t.Errorf("the heap in use rose by %.1f MiB, more than %d MiB", float64(allocated)/(1<<20), maxRise>>20)
		}
	})

	bigRego := "package kith.ext\n\n# " + strings.Repeat("x", 2<<20) + "\n"
	repo.Commit(map[string]string{"policy/big.rego": bigRego})
	var many = map[string]string{"policy/big.rego": ""}
	for i := range 5 {
		many[fmt.Sprintf("policy/m%d.rego", i)] = goodPolicy
	}
	manyFiles := repo.Commit(many)
	tests := []struct {
		name   string
		ref    string
		limits gitsync.Limits
		want   string
	}{
		{"a .rego over max_file_bytes", "HEAD~1", gitsync.Limits{},
			fmt.Sprintf("policy/big.rego is %d bytes, more than the 1048576 a policy file may have (policy.git.max_file_bytes)", len(bigRego))},
		{"more files than max_files", manyFiles, gitsync.Limits{MaxFiles: 3},
			"the policy path holds more than 3 policy files (policy.git.max_files)"},
		{"more bytes than max_total_bytes", manyFiles, gitsync.Limits{MaxTotalBytes: 3 * int64(len(goodPolicy))},
			fmt.Sprintf("more than the %d allowed in all (policy.git.max_total_bytes)", 3*len(goodPolicy))},
		{"a fetch over max_fetch_bytes", good, gitsync.Limits{MaxFetchBytes: 10 << 20},
			"the fetch passed 10485760 bytes (policy.git.max_fetch_bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused, naming the file and the limit", func(t *testing.T) {
			ref := tt.ref
			if ref == "HEAD~1" {
				ref = repo.Git("rev-parse", "HEAD~1")
			}
			allocated, err := sync(t, ref, tt.limits)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Sync error = %v, want %q", err, tt.want)
			}
			if allocated > maxRise {
				t.Errorf("the heap in use rose by %.1f MiB, more than %d MiB", float64(allocated)/(1<<20), maxRise>>20)
			}
		})
	}
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}
