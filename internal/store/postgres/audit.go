package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/kithid/kith/internal/store/sqlstore"
)

// Audit records an event that changes nothing else, such as a refused join token. detail is encoded as
// JSON (nil as {}); it must not carry secrets.
//
// Concurrent calls are group-committed: while one transaction appends, the calls that arrive queue, and the
// next transaction appends all of them (one write lock, one head read, one commit for the group), each
// caller returning when its own row committed. A caller whose context ends stops waiting; its row may
// still be written with the group.
func (s *Store) Audit(ctx context.Context, actor, action, target string, detail any) error {
	if detail != nil {
		if _, err := json.Marshal(detail); err != nil {
			return fmt.Errorf("encode audit detail for %s %s: %w", action, target, err)
		}
	}
	req := &auditReq{actor: actor, action: action, target: target, detail: detail, done: make(chan error, 1)}
	s.amu.Lock()
	s.aqueue = append(s.aqueue, req)
	lead := !s.aflushing
	s.aflushing = true
	s.amu.Unlock()
	if lead {
		go s.flushAudits(context.WithoutCancel(ctx))
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// auditReq is one queued Audit call.
type auditReq struct {
	actor, action, target string
	detail                any
	done                  chan error
}

// flushAudits appends the queued rows, a group per transaction, until the queue is empty.
func (s *Store) flushAudits(ctx context.Context) {
	for {
		s.amu.Lock()
		group := s.aqueue
		s.aqueue = nil
		if len(group) == 0 {
			s.aflushing = false
			s.amu.Unlock()
			return
		}
		s.amu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.write(wctx, func(w *sqlstore.Tx) error {
			for _, r := range group {
				if err := w.Audit(r.actor, r.action, r.target, r.detail); err != nil {
					return err
				}
			}
			return nil
		})
		cancel()
		for _, r := range group {
			r.done <- err
		}
	}
}
