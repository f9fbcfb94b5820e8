package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz/grant"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/store"
)

func authorities() []ca.Authority {
	return []ca.Authority{
		{
			ID: "root1", Kind: ca.KindX509Root, State: ca.StateActive, KeyID: "k-root1", CertDER: []byte{1, 2, 3},
			NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0), CreatedAt: t0, ActivatedAt: t0,
		},
		{
			ID: "int1", Kind: ca.KindX509Intermediate, State: ca.StatePrepared, KeyID: "k-int1", CertDER: []byte{4, 5},
			ParentID: "root1", NotBefore: t0, NotAfter: t0.AddDate(0, 0, 7), CreatedAt: t0.Add(time.Second),
		},
		{
			ID: "int2", Kind: ca.KindX509Intermediate, State: ca.StateActive, KeyID: "k-int2", CertDER: []byte{6, 7},
			ParentID: "root1", Owner: "server-b", NotBefore: t0, NotAfter: t0.AddDate(0, 0, 7), CreatedAt: t0.Add(time.Second + time.Millisecond), ActivatedAt: t0,
		},
		{
			ID: "jwt1", Kind: ca.KindJWT, State: ca.StateActive, KeyID: "k-jwt1", PublicKey: []byte{9},
			NotBefore: t0, NotAfter: t0.AddDate(0, 0, 7), CreatedAt: t0.Add(2 * time.Second), ActivatedAt: t0,
		},
	}
}

func testAuthorities(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	auths := authorities()
	if err := s.PutAuthorities(ctx, "system", "ca.init", auths); err != nil {
		t.Fatal(err)
	}
	auths[1].State, auths[1].ActivatedAt, auths[1].Owner = ca.StateActive, t0.Add(time.Hour), "server-a"
	if err := s.PutAuthorities(ctx, "system", "ca.rotate", auths[1:2]); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListAuthorities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(auths, got); diff != "" {
		t.Errorf("ListAuthorities (-want +got):\n%s", diff)
	}
	changes, err := s.ChangesSince(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.Change{{Revision: 2, Kind: store.KindAuthority, ID: "int1"}}, changes); diff != "" {
		t.Errorf("ChangesSince(1) (-want +got):\n%s", diff)
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{AfterSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Action != "ca.rotate" || evs[0].Target != "int1" || evs[0].Revision != 2 {
		t.Errorf("ListAudit(after 1) = %+v", evs)
	}
}

func testRevisionsAndChanges(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	ch, stop := s.Watch()
	defer stop()

	e, err := s.CreateEntry(ctx, "test", Entry(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if got := <-ch; got != 1 {
		t.Errorf("Watch received %d, want 1", got)
	}
	agentID := ID(t, "spiffe://kith.test/kith/agent/x/1")
	steps := []func() error{
		func() error { e.DNSNames = []string{"a"}; _, err := s.UpdateEntry(ctx, "test", e); return err },
		func() error {
			_, err := s.UpsertAgent(ctx, "test", "agent.renew", store.Agent{ID: agentID})
			return err
		},
		func() error { _, err := s.EvictAgent(ctx, "test", agentID); return err },
		func() error { return s.PutAuthorities(ctx, "test", "ca.init", authorities()[:1]) },
		func() error { _, err := s.DeleteEntry(ctx, "test", e.ID); return err },
		func() error {
			return s.Audit(ctx, "test", "agent.attest.refused", "x", map[string]string{"why": "test"})
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}

	t.Run("each change bumps the revision by one and an audit-only event does not", func(t *testing.T) {
		rev, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rev != 6 {
			t.Errorf("Revision = %d, want 6", rev)
		}
	})

	t.Run("changes since a revision are exactly the later changes", func(t *testing.T) {
		got, err := s.ChangesSince(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.Change{
			{Revision: 3, Kind: store.KindAgent, ID: agentID.String()},
			{Revision: 4, Kind: store.KindAgent, ID: agentID.String()},
			{Revision: 5, Kind: store.KindAuthority, ID: "root1"},
			{Revision: 6, Kind: store.KindEntry, ID: e.ID, Deleted: true},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ChangesSince(2) (-want +got):\n%s", diff)
		}
		none, err := s.ChangesSince(ctx, 6)
		if err != nil {
			t.Fatal(err)
		}
		if len(none) != 0 {
			t.Errorf("ChangesSince(6) = %v, want none", none)
		}
	})

	t.Run("a slow watcher sees only the newest revision", func(t *testing.T) {
		if got := <-ch; got != 6 {
			t.Errorf("Watch received %d, want 6", got)
		}
		select {
		case got := <-ch:
			t.Errorf("Watch received %d after the newest revision", got)
		default:
		}
	})

	t.Run("unsubscribing closes the channel", func(t *testing.T) {
		ch2, stop2 := s.Watch()
		stop2()
		stop2()
		if _, ok := <-ch2; ok {
			t.Error("channel still open after unsubscribe")
		}
	})
}

func testConcurrentWriters(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := w*each + i
				if _, err := s.CreateEntry(ctx, "test", Entry(t, n)); err != nil {
					errs <- err
				}
				if _, err := s.ListEntries(ctx, store.EntryFilter{}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev != writers*each {
		t.Errorf("Revision = %d, want %d", rev, writers*each)
	}
	v := MustVerify(t, s)
	if v.Count != writers*each {
		t.Errorf("audit rows = %d, want %d", v.Count, writers*each)
	}
}

// Every call that changes something bumps the revision exactly once, however many objects it changes, and
// its audit rows carry that revision; calls that change nothing (reads, refusals, audit-only events, agent
// policy reports, rejected policies) leave it alone.
func testOneRevisionPerChange(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	hash := sha256.Sum256([]byte("secret"))
	agentID := ID(t, "spiffe://kith.test/kith/agent/join_token/n1")
	var e store.Entry
	steps := []struct {
		name    string
		changes bool
		run     func() error
	}{
		{"create an entry", true, func() (err error) { e, err = s.CreateEntry(ctx, "test", Entry(t, 1)); return err }},
		{"create three entries", true, func() error {
			_, err := s.CreateEntries(ctx, "test", []store.Entry{Entry(t, 2), Entry(t, 3), Entry(t, 4)})
			return err
		}},
		{"refuse a duplicate entry", false, func() error { return wantErr(s.CreateEntry(ctx, "test", Entry(t, 2))) }},
		{"update an entry", true, func() (err error) { e.DNSNames = []string{"a"}; e, err = s.UpdateEntry(ctx, "test", e); return err }},
		{"delete an entry", true, func() error { _, err := s.DeleteEntry(ctx, "test", e.ID); return err }},
		{"refuse to delete it again", false, func() error { return wantErr(s.DeleteEntry(ctx, "test", e.ID)) }},
		{"create a join token", true, func() error {
			_, err := s.CreateJoinToken(ctx, "test", store.JoinToken{Name: "n1", Hash: hash[:], ExpiresAt: t0.Add(time.Hour)})
			return err
		}},
		{"use it", true, func() error {
			_, _, err := s.UseJoinToken(ctx, hash[:], t0.Add(time.Minute), store.Agent{ID: agentID, AttestationType: "join_token"})
			return err
		}},
		{"refuse to use it again", false, func() error {
			_, _, err := s.UseJoinToken(ctx, hash[:], t0.Add(time.Minute), store.Agent{ID: agentID})
			if err == nil {
				return errors.New("a used token was accepted")
			}
			return nil
		}},
		{"renew an agent", true, func() error {
			_, err := s.UpsertAgent(ctx, "test", "agent.renew", store.Agent{ID: agentID})
			return err
		}},
		{"evict it", true, func() error { _, err := s.EvictAgent(ctx, "test", agentID); return err }},
		{"create a grant", true, func() error { _, err := s.CreateGrant(ctx, "test", grantFor(1)); return err }},
		{"revoke it", true, func() error { _, err := s.DeleteGrant(ctx, "test", "g-1"); return err }},
		{"replace git grants", true, func() error {
			return s.ReplaceGrantsFromSource(ctx, "system", "git:", "git:a", []grant.Grant{{ID: "git-1", Caller: frontend, Target: payments, Source: "git:a"}})
		}},
		{"set a target mode", true, func() error { return s.SetTargetMode(ctx, "test", payments, grant.ModeAudit) }},
		{"record and activate a policy", true, func() error {
			return s.RecordPolicy(ctx, "system", store.PolicyBundle{Revision: "r1", Status: store.PolicyOK, Bundle: []byte("b")}, true)
		}},
		{"record a rejected policy", false, func() error {
			return s.RecordPolicy(ctx, "system", store.PolicyBundle{Revision: "r2", Status: store.PolicyRejected, Error: "bad"}, false)
		}},
		{"roll back a policy", true, func() error { _, err := s.ActivatePolicy(ctx, "test", "r1", true); return err }},
		{"put authorities", true, func() error { return s.PutAuthorities(ctx, "system", "ca.init", authorities()) }},
		{"write an audit-only event", false, func() error { return s.Audit(ctx, "test", "note", "x", nil) }},
		{"record an agent's policy report", false, func() error { return s.SetAgentPolicy(ctx, agentID.String(), "r1", "") }},
		{"read everything", false, func() error {
			_, err := s.ListEntries(ctx, store.EntryFilter{})
			return err
		}},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			before := mustRevision(t, s)
			evsBefore, err := s.ListAudit(ctx, store.AuditFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if err := step.run(); err != nil {
				t.Fatal(err)
			}
			want := before
			if step.changes {
				want++
			}
			if got := mustRevision(t, s); got != want {
				t.Fatalf("Revision = %d, want %d", got, want)
			}
			changes, err := s.ChangesSince(ctx, before)
			if err != nil {
				t.Fatal(err)
			}
			if step.changes != (len(changes) > 0) {
				t.Errorf("ChangesSince(%d) = %v", before, changes)
			}
			for _, c := range changes {
				if c.Revision != want {
					t.Errorf("change %+v, want revision %d", c, want)
				}
			}
			evs, err := s.ListAudit(ctx, store.AuditFilter{AfterSeq: int64(len(evsBefore))})
			if err != nil {
				t.Fatal(err)
			}
			wantAuditRev := int64(0)
			if step.changes {
				wantAuditRev = want
			}
			for _, ev := range evs {
				if ev.Revision != wantAuditRev {
					t.Errorf("audit event %d %s has revision %d, want %d", ev.Seq, ev.Action, ev.Revision, wantAuditRev)
				}
			}
		})
	}
	MustVerify(t, s)
}

// wantErr turns the refusal a step expects into success, and a success into the error.
func wantErr[T any](_ T, err error) error {
	if err == nil {
		return errors.New("the call succeeded, want a refusal")
	}
	return nil
}

func testWatch(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	ch1, stop1 := s.Watch()
	defer stop1()
	ch2, stop2 := s.Watch()
	defer stop2()

	t.Run("every watcher is told each committed revision", func(t *testing.T) {
		if _, err := s.CreateEntry(ctx, "test", Entry(t, 1)); err != nil {
			t.Fatal(err)
		}
		for i, ch := range []<-chan int64{ch1, ch2} {
			if got := receive(t, ch); got != 1 {
				t.Errorf("watcher %d received %d, want 1", i+1, got)
			}
		}
	})

	t.Run("a write that changes nothing is not announced", func(t *testing.T) {
		if err := s.Audit(ctx, "test", "note", "x", nil); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAgentPolicy(ctx, "spiffe://kith.test/kith/agent/x", "r1", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateEntry(ctx, "test", Entry(t, 1)); err == nil {
			t.Fatal("a duplicate entry was accepted")
		}
		assertNothing(t, ch1)
	})

	t.Run("a slow watcher finds only the newest revision", func(t *testing.T) {
		for i := 2; i <= 4; i++ {
			if _, err := s.CreateEntry(ctx, "test", Entry(t, i)); err != nil {
				t.Fatal(err)
			}
		}
		if got := receive(t, ch1); got != 4 {
			t.Errorf("Watch received %d, want 4", got)
		}
		assertNothing(t, ch1)
	})

	t.Run("close closes every watch channel, and later watches are closed at once", func(t *testing.T) {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ch1)
		waitClosed(t, ch2)
		ch3, stop3 := s.Watch()
		defer stop3()
		waitClosed(t, ch3)
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// receive waits for one revision on ch.
func receive(t *testing.T, ch <-chan int64) int64 {
	t.Helper()
	select {
	case rev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return rev
	case <-time.After(5 * time.Second):
		t.Fatal("no revision announced within 5s")
	}
	return 0
}

// waitClosed waits for ch to be closed, discarding what was pending.
func waitClosed(t *testing.T, ch <-chan int64) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("watch channel still open after 5s")
		}
	}
}

func assertNothing(t *testing.T, ch <-chan int64) {
	t.Helper()
	select {
	case rev := <-ch:
		t.Errorf("Watch received %d, want nothing", rev)
	default:
	}
}

// Writers of every kind at once lose nothing: each change gets its own revision, a watcher sees revisions
// only go up, and the audit chain holds.
func testConcurrentMixedWriters(t *testing.T, h harness) {
	ctx := context.Background()
	s := h.new(t)
	ch, stop := s.Watch()
	var seen []int64
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for rev := range ch {
			seen = append(seen, rev)
		}
	}()

	const writers, each = 6, 15
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := w*each + i
				var err error
				switch w % 3 {
				case 0:
					_, err = s.CreateEntry(ctx, "test", Entry(t, n))
				case 1:
					_, err = s.CreateGrant(ctx, "test", grantFor(n))
				case 2:
					err = s.SetTargetMode(ctx, "test", fmt.Sprintf("spiffe://kith.test/workload/%d", n), grant.ModeAudit)
				}
				if err != nil {
					errs <- err
				}
				if err := s.Audit(ctx, "test", "note", fmt.Sprint(n), nil); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	stop()
	<-watched
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	const total = writers * each
	if rev := mustRevision(t, s); rev != total {
		t.Errorf("Revision = %d, want %d", rev, total)
	}
	changes, err := s.ChangesSince(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != total {
		t.Errorf("ChangesSince(0) has %d changes, want %d", len(changes), total)
	}
	for i, c := range changes {
		if c.Revision != int64(i+1) {
			t.Errorf("change %d has revision %d, want %d", i, c.Revision, i+1)
			break
		}
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Errorf("watcher saw revision %d after %d", seen[i], seen[i-1])
		}
	}
	if len(seen) == 0 || seen[len(seen)-1] != total {
		t.Errorf("watcher saw %v, want it to end at %d", seen, total)
	}
	entries, err := s.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	grants, err := s.ListGrants(ctx, store.GrantFilter{})
	if err != nil {
		t.Fatal(err)
	}
	modes, err := s.TargetModes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2*each || len(grants) != 2*each || len(modes) != 2*each {
		t.Errorf("stored %d entries, %d grants, %d modes; want %d of each", len(entries), len(grants), len(modes), 2*each)
	}
	if v := MustVerify(t, s); v.Count != 2*total {
		t.Errorf("audit rows = %d, want %d", v.Count, 2*total)
	}
}
