package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/store"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// clock is a fake clock that advances one second per reading.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

var idComparer = cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })

func openAt(t testing.TB, path string) *Store {
	t.Helper()
	c := &clock{now: t0}
	s, err := Open(context.Background(), Config{Path: path, Now: c.Now})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "kith.db")
	return openAt(t, path), path
}

func id(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	v, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sel(s string) attestation.Selector {
	typ, rest, _ := strings.Cut(s, ":")
	key, value, _ := strings.Cut(rest, ":")
	return attestation.Selector{Type: typ, Key: key, Value: value}
}

func testEntry(t testing.TB, n int) store.Entry {
	return store.Entry{
		SPIFFEID:  id(t, fmt.Sprintf("spiffe://kith.test/workload/%d", n)),
		ParentID:  id(t, "spiffe://kith.test/kith/agent/join_token/node1"),
		Selectors: []attestation.Selector{sel(fmt.Sprintf("unix:uid:%d", 1000+n))},
	}
}

func mustVerify(t *testing.T, s *Store) store.AuditVerification {
	t.Helper()
	v, err := s.VerifyAudit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK {
		t.Fatalf("VerifyAudit: broken at %d: %s", v.BrokenAt, v.Problem)
	}
	return v
}

func TestOpen(t *testing.T) {
	t.Run("creates the directory 0700 and the files 0600", func(t *testing.T) {
		s, path := openTemp(t)
		if _, err := s.CreateEntry(context.Background(), "test", testEntry(t, 1)); err != nil {
			t.Fatal(err)
		}
		for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700 | os.ModeDir, path: 0o600, path + "-wal": 0o600} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != want {
				t.Errorf("mode of %s = %v, want %v", p, fi.Mode(), want)
			}
		}
	})
	t.Run("refuses an empty path", func(t *testing.T) {
		if _, err := Open(context.Background(), Config{}); err == nil {
			t.Fatal("Open with no path succeeded")
		}
	})
	t.Run("refuses a schema newer than this binary", func(t *testing.T) {
		s, path := openTemp(t)
		s.Close()
		raw, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec("PRAGMA user_version = 999"); err != nil {
			t.Fatal(err)
		}
		raw.Close()
		_, err = Open(context.Background(), Config{Path: path})
		if !errors.Is(err, store.ErrSchemaTooNew) {
			t.Fatalf("Open error = %v, want ErrSchemaTooNew", err)
		}
		want := fmt.Sprintf("store at %s has schema version 999 but this kith supports up to %d: upgrade kith", path, SchemaVersion())
		if err.Error() != want {
			t.Errorf("Open error = %q, want %q", err, want)
		}
	})
}

func TestEntries(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)

	in := store.Entry{
		SPIFFEID:      id(t, "spiffe://kith.test/ns/prod/sa/payments"),
		NodeSelectors: []attestation.Selector{sel("k8s_psat:cluster:prod")},
		Selectors:     []attestation.Selector{sel("k8s:sa:payments"), sel("k8s:ns:prod")},
		X509TTL:       time.Hour,
		JWTTTL:        5 * time.Minute,
		DNSNames:      []string{"payments.prod.svc"},
		Labels:        map[string]string{"team": "billing"},
	}
	created, err := s.CreateEntry(ctx, "cli:uid=0", in)
	if err != nil {
		t.Fatal(err)
	}
	if created.ID == "" || created.Revision != 1 || created.CreatedAt.IsZero() || !created.CreatedAt.Equal(created.UpdatedAt) {
		t.Fatalf("CreateEntry assigned ID %q, revision %d, times %v/%v", created.ID, created.Revision, created.CreatedAt, created.UpdatedAt)
	}
	want := in
	want.ID, want.Revision, want.CreatedAt, want.UpdatedAt = created.ID, 1, created.CreatedAt, created.UpdatedAt
	if diff := cmp.Diff(want, created, idComparer); diff != "" {
		t.Errorf("CreateEntry returned (-want +got):\n%s", diff)
	}

	t.Run("get reads the entry back exactly", func(t *testing.T) {
		got, err := s.GetEntry(ctx, created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(created, got, idComparer); diff != "" {
			t.Errorf("GetEntry (-want +got):\n%s", diff)
		}
	})

	t.Run("nil and empty slices and maps read back as they were written", func(t *testing.T) {
		e := testEntry(t, 7)
		e.DNSNames = []string{}
		e.Labels = nil
		c, err := s.CreateEntry(ctx, "test", e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.GetEntry(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.DNSNames == nil || got.Labels != nil || got.NodeSelectors != nil {
			t.Errorf("GetEntry: DNSNames %#v, Labels %#v, NodeSelectors %#v; want empty, nil, nil", got.DNSNames, got.Labels, got.NodeSelectors)
		}
		if _, err := s.DeleteEntry(ctx, "test", c.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a duplicate is refused naming the existing entry", func(t *testing.T) {
		dup := in
		dup.Selectors = []attestation.Selector{sel("k8s:ns:prod"), sel("k8s:sa:payments"), sel("k8s:ns:prod")} // same set, other order
		dup.X509TTL = 0
		_, err := s.CreateEntry(ctx, "test", dup)
		if !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateEntry error = %v, want ErrAlreadyExists", err)
		}
		if !strings.Contains(err.Error(), created.ID) {
			t.Errorf("error %q does not name the existing entry %s", err, created.ID)
		}
	})

	t.Run("a taken id is refused", func(t *testing.T) {
		e := testEntry(t, 99)
		e.ID = created.ID
		if _, err := s.CreateEntry(ctx, "test", e); !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateEntry error = %v, want ErrAlreadyExists", err)
		}
	})

	t.Run("update replaces fields and keeps the creation time", func(t *testing.T) {
		upd := created
		upd.Selectors = []attestation.Selector{sel("k8s:sa:payments-v2")}
		upd.Labels = nil
		upd.CreatedAt = time.Time{} // ignored
		got, err := s.UpdateEntry(ctx, "test", upd)
		if err != nil {
			t.Fatal(err)
		}
		if !got.CreatedAt.Equal(created.CreatedAt) || !got.UpdatedAt.After(created.UpdatedAt) || got.Revision <= created.Revision {
			t.Errorf("UpdateEntry: created %v updated %v revision %d", got.CreatedAt, got.UpdatedAt, got.Revision)
		}
		read, err := s.GetEntry(ctx, created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, read, idComparer); diff != "" {
			t.Errorf("GetEntry after update (-want +got):\n%s", diff)
		}
		created = got
	})

	t.Run("update into a duplicate of another entry is refused", func(t *testing.T) {
		other, err := s.CreateEntry(ctx, "test", testEntry(t, 1))
		if err != nil {
			t.Fatal(err)
		}
		upd := created
		upd.SPIFFEID, upd.ParentID, upd.NodeSelectors, upd.Selectors = other.SPIFFEID, other.ParentID, other.NodeSelectors, other.Selectors
		_, err = s.UpdateEntry(ctx, "test", upd)
		if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), other.ID) {
			t.Fatalf("UpdateEntry error = %v, want ErrAlreadyExists naming %s", err, other.ID)
		}
	})

	t.Run("update of an unknown entry is not found", func(t *testing.T) {
		e := testEntry(t, 2)
		e.ID = "nope"
		if _, err := s.UpdateEntry(ctx, "test", e); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("UpdateEntry error = %v, want ErrNotFound", err)
		}
	})

	t.Run("list filters and orders by spiffe id then id", func(t *testing.T) {
		all, err := s.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range all {
			got = append(got, e.SPIFFEID.String())
		}
		wantIDs := []string{"spiffe://kith.test/ns/prod/sa/payments", "spiffe://kith.test/workload/1"}
		if diff := cmp.Diff(wantIDs, got); diff != "" {
			t.Errorf("ListEntries (-want +got):\n%s", diff)
		}
		byParent, err := s.ListEntries(ctx, store.EntryFilter{ParentID: id(t, "spiffe://kith.test/kith/agent/join_token/node1")})
		if err != nil {
			t.Fatal(err)
		}
		if len(byParent) != 1 || byParent[0].SPIFFEID.String() != "spiffe://kith.test/workload/1" {
			t.Errorf("ListEntries by parent = %v", byParent)
		}
		bySPIFFE, err := s.ListEntries(ctx, store.EntryFilter{SPIFFEID: created.SPIFFEID})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.Entry{created}, bySPIFFE, idComparer); diff != "" {
			t.Errorf("ListEntries by spiffe id (-want +got):\n%s", diff)
		}
	})

	t.Run("delete returns the entry and then it is gone", func(t *testing.T) {
		got, err := s.DeleteEntry(ctx, "test", created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(created, got, idComparer); diff != "" {
			t.Errorf("DeleteEntry (-want +got):\n%s", diff)
		}
		if _, err := s.GetEntry(ctx, created.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetEntry after delete error = %v, want ErrNotFound", err)
		}
		if _, err := s.DeleteEntry(ctx, "test", created.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second DeleteEntry error = %v, want ErrNotFound", err)
		}
	})

	t.Run("audit records create, update and delete", func(t *testing.T) {
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, ev := range evs {
			if ev.Target == created.ID {
				actions = append(actions, ev.Action)
			}
		}
		if diff := cmp.Diff([]string{"entry.create", "entry.update", "entry.delete"}, actions); diff != "" {
			t.Errorf("audit actions for %s (-want +got):\n%s", created.ID, diff)
		}
		mustVerify(t, s)
	})
}

func TestCreateEntries(t *testing.T) {
	ctx := context.Background()

	t.Run("a batch is one revision with a change and an audit row per entry", func(t *testing.T) {
		s, _ := openTemp(t)
		var es []store.Entry
		for i := range 50 {
			es = append(es, testEntry(t, i))
		}
		got, err := s.CreateEntries(ctx, "test", es)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rev != 1 {
			t.Errorf("Revision = %d, want 1", rev)
		}
		changes, err := s.ChangesSince(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []store.Change
		for _, e := range got {
			if e.Revision != 1 || e.ID == "" {
				t.Errorf("entry %s: revision %d", e.ID, e.Revision)
			}
			want = append(want, store.Change{Revision: 1, Kind: store.KindEntry, ID: e.ID})
		}
		if diff := cmp.Diff(want, changes); diff != "" {
			t.Errorf("ChangesSince(0) (-want +got):\n%s", diff)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 50 || evs[0].Action != "entry.create" || evs[49].Revision != 1 {
			t.Errorf("ListAudit: %d events, first %q", len(evs), evs[0].Action)
		}
		listed, err := s.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(listed) != 50 {
			t.Errorf("ListEntries returned %d entries, want 50", len(listed))
		}
		mustVerify(t, s)
	})

	t.Run("a duplicate inside the batch fails the whole batch", func(t *testing.T) {
		s, _ := openTemp(t)
		_, err := s.CreateEntries(ctx, "test", []store.Entry{testEntry(t, 1), testEntry(t, 2), testEntry(t, 1)})
		if !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateEntries error = %v, want ErrAlreadyExists", err)
		}
		listed, err := s.ListEntries(ctx, store.EntryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		rev, _ := s.Revision(ctx)
		evs, _ := s.ListAudit(ctx, store.AuditFilter{})
		if len(listed) != 0 || rev != 0 || len(evs) != 0 {
			t.Errorf("after a failed batch: %d entries, revision %d, %d audit rows; want none", len(listed), rev, len(evs))
		}
	})

	t.Run("10000 entries take under a few seconds", func(t *testing.T) {
		s, _ := openTemp(t)
		es := make([]store.Entry, 10000)
		for i := range es {
			es[i] = testEntry(t, i)
		}
		start := time.Now()
		if _, err := s.CreateEntries(ctx, "test", es); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 3*time.Second && !raceEnabled {
			t.Errorf("CreateEntries(10000) took %v", d)
		}
		mustVerify(t, s)
	})
}

func TestJoinTokens(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	hash := func(secret string) []byte { h := sha256.Sum256([]byte(secret)); return h[:] }
	agentID := id(t, "spiffe://kith.test/kith/agent/join_token/node1")
	agent := store.Agent{
		ID:              agentID,
		AttestationType: "join_token",
		Selectors:       []attestation.Selector{sel("join_token:name:node1")},
		SerialNumber:    "0abc",
		ExpiresAt:       t0.Add(time.Hour),
	}

	tok, err := s.CreateJoinToken(ctx, "cli:uid=0", store.JoinToken{Name: "node1", Hash: hash("s1"), ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID == "" || tok.CreatedAt.IsZero() {
		t.Fatalf("CreateJoinToken: ID %q, CreatedAt %v", tok.ID, tok.CreatedAt)
	}
	expired, err := s.CreateJoinToken(ctx, "cli:uid=0", store.JoinToken{Hash: hash("s2"), ExpiresAt: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a name is unique among tokens", func(t *testing.T) {
		_, err := s.CreateJoinToken(ctx, "test", store.JoinToken{Name: "node1", Hash: hash("s3"), ExpiresAt: t0.Add(time.Hour)})
		if !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateJoinToken error = %v, want ErrAlreadyExists", err)
		}
	})

	t.Run("list returns the tokens", func(t *testing.T) {
		got, err := s.ListJoinTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.JoinToken{tok, expired}, got, idComparer); diff != "" {
			t.Errorf("ListJoinTokens (-want +got):\n%s", diff)
		}
	})

	t.Run("lookup finds a token by the hash of its secret without using it", func(t *testing.T) {
		got, err := s.LookupJoinToken(ctx, hash("s1"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tok, got, idComparer); diff != "" {
			t.Errorf("LookupJoinToken (-want +got):\n%s", diff)
		}
	})

	t.Run("lookup of an unknown secret is an invalid token", func(t *testing.T) {
		if _, err := s.LookupJoinToken(ctx, hash("nope")); !errors.Is(err, store.ErrTokenInvalid) {
			t.Fatalf("LookupJoinToken error = %v, want ErrTokenInvalid", err)
		}
	})

	for _, tc := range []struct {
		name string
		hash []byte
		now  time.Time
	}{
		{"an unknown token is invalid", hash("nope"), t0.Add(time.Second)},
		{"an expired token is invalid", hash("s2"), t0.Add(time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Revision(ctx)
			_, _, err := s.UseJoinToken(ctx, tc.hash, tc.now, agent)
			if !errors.Is(err, store.ErrTokenInvalid) {
				t.Fatalf("UseJoinToken error = %v, want ErrTokenInvalid", err)
			}
			if after, _ := s.Revision(ctx); after != before {
				t.Errorf("revision moved from %d to %d on a refused token", before, after)
			}
		})
	}

	t.Run("a valid token is used once and records the agent", func(t *testing.T) {
		now := t0.Add(10 * time.Minute)
		used, got, err := s.UseJoinToken(ctx, hash("s1"), now, agent)
		if err != nil {
			t.Fatal(err)
		}
		wantTok := tok
		wantTok.UsedAt, wantTok.UsedBy = now, agentID
		if diff := cmp.Diff(wantTok, used, idComparer); diff != "" {
			t.Errorf("UseJoinToken token (-want +got):\n%s", diff)
		}
		wantAgent := agent
		wantAgent.CreatedAt, wantAgent.UpdatedAt = now, now
		if diff := cmp.Diff(wantAgent, got, idComparer); diff != "" {
			t.Errorf("UseJoinToken agent (-want +got):\n%s", diff)
		}
		stored, err := s.GetAgent(ctx, agentID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(wantAgent, stored, idComparer); diff != "" {
			t.Errorf("GetAgent (-want +got):\n%s", diff)
		}
		if _, _, err := s.UseJoinToken(ctx, hash("s1"), now, agent); !errors.Is(err, store.ErrTokenInvalid) {
			t.Errorf("second UseJoinToken error = %v, want ErrTokenInvalid", err)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		last := evs[len(evs)-1]
		if last.Action != "agent.attest" || last.Target != agentID.String() {
			t.Errorf("last audit event = %s %s, want agent.attest %s", last.Action, last.Target, agentID)
		}
		for _, ev := range evs {
			if strings.Contains(ev.Detail, fmt.Sprintf("%x", hash("s1"))) {
				t.Errorf("audit event %d detail contains the token hash: %s", ev.Seq, ev.Detail)
			}
		}
	})
}

func TestAgents(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	a := store.Agent{ID: id(t, "spiffe://kith.test/kith/agent/join_token/n1"), AttestationType: "join_token", SerialNumber: "01"}

	first, err := s.UpsertAgent(ctx, "system", "agent.attest", a)
	if err != nil {
		t.Fatal(err)
	}
	a.SerialNumber = "02"
	renewed, err := s.UpsertAgent(ctx, "agent:"+a.ID.String(), "agent.renew", a)
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.CreatedAt.Equal(first.CreatedAt) || !renewed.UpdatedAt.After(first.UpdatedAt) {
		t.Errorf("renew: created %v (first %v), updated %v", renewed.CreatedAt, first.CreatedAt, renewed.UpdatedAt)
	}

	t.Run("evict marks the agent evicted", func(t *testing.T) {
		ev, err := s.EvictAgent(ctx, "cli:uid=0", a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Evicted || ev.SerialNumber != "02" {
			t.Errorf("EvictAgent = %+v", ev)
		}
		list, err := s.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.Agent{ev}, list, idComparer); diff != "" {
			t.Errorf("ListAgents (-want +got):\n%s", diff)
		}
	})

	t.Run("evicting an unknown agent is not found", func(t *testing.T) {
		if _, err := s.EvictAgent(ctx, "test", id(t, "spiffe://kith.test/nope")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("EvictAgent error = %v, want ErrNotFound", err)
		}
		if _, err := s.GetAgent(ctx, id(t, "spiffe://kith.test/nope")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetAgent error = %v, want ErrNotFound", err)
		}
	})
}

func testAuthorities() []ca.Authority {
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
			ID: "jwt1", Kind: ca.KindJWT, State: ca.StateActive, KeyID: "k-jwt1", PublicKey: []byte{9},
			NotBefore: t0, NotAfter: t0.AddDate(0, 0, 7), CreatedAt: t0.Add(2 * time.Second), ActivatedAt: t0,
		},
	}
}

func TestAuthorities(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	auths := testAuthorities()
	if err := s.PutAuthorities(ctx, "system", "ca.init", auths); err != nil {
		t.Fatal(err)
	}
	auths[1].State, auths[1].ActivatedAt = ca.StateActive, t0.Add(time.Hour)
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

func TestRevisionsAndChanges(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	ch, stop := s.Watch()
	defer stop()

	e, err := s.CreateEntry(ctx, "test", testEntry(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if got := <-ch; got != 1 {
		t.Errorf("Watch received %d, want 1", got)
	}
	agentID := id(t, "spiffe://kith.test/kith/agent/x/1")
	steps := []func() error{
		func() error { e.DNSNames = []string{"a"}; _, err := s.UpdateEntry(ctx, "test", e); return err },
		func() error {
			_, err := s.UpsertAgent(ctx, "test", "agent.renew", store.Agent{ID: agentID})
			return err
		},
		func() error { _, err := s.EvictAgent(ctx, "test", agentID); return err },
		func() error { return s.PutAuthorities(ctx, "test", "ca.init", testAuthorities()[:1]) },
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

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "kith.db")
	s, err := Open(ctx, Config{Path: path, Now: (&clock{now: t0}).Now})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.CreateEntry(ctx, "test", testEntry(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutAuthorities(ctx, "system", "ca.init", testAuthorities()); err != nil {
		t.Fatal(err)
	}
	before := mustVerify(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, path)
	got, err := s.GetEntry(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, got, idComparer); diff != "" {
		t.Errorf("entry after reopen (-want +got):\n%s", diff)
	}
	auths, err := s.ListAuthorities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(testAuthorities(), auths); diff != "" {
		t.Errorf("authorities after reopen (-want +got):\n%s", diff)
	}
	after := mustVerify(t, s)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("audit verification after reopen (-want +got):\n%s", diff)
	}

	t.Run("the chain continues after reopening", func(t *testing.T) {
		if _, err := s.CreateEntry(ctx, "test", testEntry(t, 2)); err != nil {
			t.Fatal(err)
		}
		v := mustVerify(t, s)
		if v.Count != 3 {
			t.Errorf("VerifyAudit count = %d, want 3", v.Count)
		}
		rev, _ := s.Revision(ctx)
		if rev != 3 {
			t.Errorf("Revision = %d, want 3", rev)
		}
	})
}

func TestAuditTamper(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	for i := range 4 {
		if _, err := s.CreateEntry(ctx, "test", testEntry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	t.Run("the triggers refuse update and delete", func(t *testing.T) {
		for _, q := range []string{"UPDATE audit SET actor = 'mallory' WHERE seq = 2", "DELETE FROM audit WHERE seq = 4"} {
			if _, err := raw.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: error = %v, want append-only refusal", q, err)
			}
		}
		mustVerify(t, s)
	})

	for _, tc := range []struct {
		name     string
		sql      string
		brokenAt int64
		problem  string
	}{
		{"an altered detail breaks the chain at that row", "UPDATE audit SET detail = '{}' WHERE seq = 2", 2, "hash does not match"},
		{"an altered revision breaks the chain at that row", "UPDATE audit SET revision = 9 WHERE seq = 3", 3, "hash does not match"},
		{"a deleted row breaks the chain at the next row", "DELETE FROM audit WHERE seq = 2", 3, "row 2 is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, path := openTemp(t)
			for i := range 4 {
				if _, err := s.CreateEntry(ctx, "test", testEntry(t, i)); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			for _, q := range []string{"DROP TRIGGER audit_no_update", "DROP TRIGGER audit_no_delete", tc.sql} {
				if _, err := raw.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			v, err := s.VerifyAudit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || v.BrokenAt != tc.brokenAt || !strings.Contains(v.Problem, tc.problem) {
				t.Errorf("VerifyAudit = OK %v, BrokenAt %d, Problem %q; want broken at %d with %q", v.OK, v.BrokenAt, v.Problem, tc.brokenAt, tc.problem)
			}
		})
	}
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := w*each + i
				if _, err := s.CreateEntry(ctx, "test", testEntry(t, n)); err != nil {
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
	v := mustVerify(t, s)
	if v.Count != writers*each {
		t.Errorf("audit rows = %d, want %d", v.Count, writers*each)
	}
}

func BenchmarkCreateEntries10k(b *testing.B) {
	ctx := context.Background()
	es := make([]store.Entry, 10000)
	for i := range es {
		es[i] = testEntry(b, i)
	}
	for b.Loop() {
		b.StopTimer()
		s, _ := openTemp(b)
		b.StartTimer()
		if _, err := s.CreateEntries(ctx, "bench", es); err != nil {
			b.Fatal(err)
		}
	}
}

// A node that was evicted re-joins under the same name, and so the same agent SPIFFE ID; a name that still
// stands for an unused token or an active agent is refused.
func TestTokenNameIsFreeAgainOnceItsAgentIsEvicted(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	hash := func(secret string) []byte { h := sha256.Sum256([]byte(secret)); return h[:] }
	agent := store.Agent{ID: id(t, "spiffe://kith.test/kith/agent/join_token/node1"), AttestationType: "join_token",
		Selectors: []attestation.Selector{sel("join_token:name:node1")}, SerialNumber: "01", ExpiresAt: t0.Add(time.Hour)}
	create := func(name, secret string, expires time.Time) error {
		_, err := s.CreateJoinToken(ctx, "test", store.JoinToken{Name: name, Hash: hash(secret), ExpiresAt: expires})
		return err
	}

	if err := create("node1", "s1", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := create("node1", "s2", t0.Add(time.Hour)); !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), "not used yet") {
		t.Fatalf("second token while the first is unused: %v, want ErrAlreadyExists (not used yet)", err)
	}
	if _, _, err := s.UseJoinToken(ctx, hash("s1"), t0, agent); err != nil {
		t.Fatal(err)
	}
	err := create("node1", "s2", t0.Add(time.Hour))
	if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), "kith agents evict spiffe://kith.test/kith/agent/join_token/node1") {
		t.Fatalf("token for a name whose agent is active: %v, want ErrAlreadyExists telling to evict", err)
	}
	if _, err := s.EvictAgent(ctx, "test", agent.ID); err != nil {
		t.Fatal(err)
	}
	if err := create("node1", "s2", t0.Add(time.Hour)); err != nil {
		t.Fatalf("token for the name of an evicted agent: %v", err)
	}
	agent.SerialNumber = "02"
	if _, _, err := s.UseJoinToken(ctx, hash("s2"), t0, agent); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAgent(ctx, agent.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Evicted || got.SerialNumber != "02" {
		t.Errorf("re-joined agent: evicted %v, serial %s; want active with the new serial 02", got.Evicted, got.SerialNumber)
	}
	tokens, err := s.ListJoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 2 || tokens[0].Name != "node1" || tokens[1].Name != "node1" {
		t.Errorf("tokens = %+v, want both kept under the name node1", tokens)
	}

	// An expired, unused token does not hold its name either.
	if err := create("node2", "s3", t0.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := create("node2", "s4", t0.Add(time.Hour)); err != nil {
		t.Fatalf("token for the name of an expired token: %v", err)
	}
}

// A version 3 store keeps its join tokens across the upgrade that lets token names be given again.
func TestUpgradeFromVersion3KeepsJoinTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kith.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:3] {
		if _, err := db.Exec(m.sql); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
	h := sha256.Sum256([]byte("secret"))
	if _, err := db.Exec("PRAGMA user_version = 3"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO join_tokens (id, name, hash, created_at, expires_at, used_at, used_by) VALUES ('t1', 'node1', ?, ?, ?, NULL, '')",
		h[:], timeValue(t0), timeValue(t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openAt(t, path)
	tokens, err := s.ListJoinTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1 || tokens[0].ID != "t1" || tokens[0].Name != "node1" || !tokens[0].ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("tokens after the upgrade = %+v, want t1 named node1", tokens)
	}
	if _, err := s.LookupJoinToken(context.Background(), h[:]); err != nil {
		t.Errorf("the upgraded token's secret no longer finds it: %v", err)
	}
}
