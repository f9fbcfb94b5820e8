package sqlstore

import "sync"

// Watchers are the subscribers to a store's committed revisions (store.Backend's Watch). Each channel holds
// one value and coalesces: a slow reader finds only the newest revision waiting, and Send never blocks.
// The zero value is ready to use.
type Watchers struct {
	mu     sync.Mutex
	chans  map[int]chan int64
	next   int
	closed bool
}

// Watch subscribes; the returned func unsubscribes and closes the channel (Close closes every channel too).
func (w *Watchers) Watch() (<-chan int64, func()) {
	ch := make(chan int64, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		close(ch)
		return ch, func() {}
	}
	if w.chans == nil {
		w.chans = map[int]chan int64{}
	}
	id := w.next
	w.next++
	w.chans[id] = ch
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if c, ok := w.chans[id]; ok {
			close(c)
			delete(w.chans, id)
		}
	}
}

// Send tells every watcher rev, replacing a revision still waiting.
func (w *Watchers) Send(rev int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.chans {
		select {
		case ch <- rev:
			continue
		default:
		}
		select { // full: replace the stale revision with the newest one
		case <-ch:
		default:
		}
		select {
		case ch <- rev:
		default:
		}
	}
}

// Close closes every channel and refuses new watchers; it reports whether it had been closed already.
func (w *Watchers) Close() (already bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return true
	}
	w.closed = true
	for id, ch := range w.chans {
		close(ch)
		delete(w.chans, id)
	}
	return false
}
