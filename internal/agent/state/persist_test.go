package state_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/internal/agent/state"
)

// changes is a stand-in for the cache's change channel.
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

func (c *changes) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch
}

func (c *changes) change() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.ch)
	c.ch = make(chan struct{})
}

func TestPersisterSavesAfterChangesAtMostOnceASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &changes{ch: make(chan struct{})}
		var mu sync.Mutex
		saves := 0
		p := state.NewPersister(state.PersisterConfig{Changed: c.Changed, Save: func() error {
			mu.Lock()
			defer mu.Unlock()
			saves++
			return errors.New("disk full") // logged; the persister goes on
		}})
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return saves
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()

		var got []int
		synctest.Wait()
		got = append(got, count()) // nothing changed: no save
		c.change()
		synctest.Wait()
		got = append(got, count()) // saved at once
		c.change()
		c.change()
		synctest.Wait()
		got = append(got, count()) // within the second: waits
		time.Sleep(time.Second)
		synctest.Wait()
		got = append(got, count()) // then saves both changes at once
		p.MarkDirty()
		synctest.Wait()
		got = append(got, count()) // a change the cache does not see waits too
		time.Sleep(time.Second)
		synctest.Wait()
		got = append(got, count())
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		got = append(got, count()) // and once more on the way out
		if diff := cmp.Diff([]int{0, 1, 1, 2, 2, 3, 4}, got); diff != "" {
			t.Errorf("saves (-want +got):\n%s", diff)
		}
	})
}
