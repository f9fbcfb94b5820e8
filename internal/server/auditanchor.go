package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/audithead"
	"github.com/kithid/kith/internal/store"
)

// auditKeyID is the key manager's ID of the key that signs audit checkpoints: a key of its own, held where
// the CA keys are, so that the checkpoint survives CA rotations and is verified without the database.
const auditKeyID = "audit-checkpoint"

// checkpointDelay is how long a new head waits to be written while the server runs, so that one write
// covers the commits of that interval.
const checkpointDelay = 50 * time.Millisecond

// auditAnchor keeps the audit log's head (count and last hash) outside the database: after every commit
// that appends audit rows it signs the new head and writes it to audit-head.json in the data dir. At start
// the log is checked against the file, so that rows removed from the end (which leave a chain that still
// verifies) are noticed; `kith audit verify` checks the same, and `kith audit head` exports the head for
// witnessing elsewhere.
//
// Each checkpoint is written to a temporary file and renamed over the old one, without fsync: the database
// commit before it is durable (synchronous=FULL), so after a power loss the file can only lag behind the
// log, never run ahead of it, and a lagging head is not an alarm. Writing it costs ≈ 0.7 ms (the rename
// makes ext4 flush the new file's blocks), as much as a commit, so while the server runs the writes are
// batched: the newest head is written checkpointDelay after the first commit that follows the last write,
// and at once when it is asked for (kith audit head, kith audit verify) and at shutdown. Rows appended in
// the last checkpointDelay before a removal can go unnoticed; everything older cannot.
type auditAnchor struct {
	path   string
	td     string
	keyID  string
	signer crypto.Signer
	pub    []byte // PKIX DER of signer's public key
	now    func() time.Time
	log    *slog.Logger

	writeMu sync.Mutex    // serializes checkpoint writes, so that they land in commit order
	wake    chan struct{} // a new head is pending (Run)

	mu       sync.Mutex
	running  bool               // Run is batching writes
	pending  bool               // pendSeq/pendHash are newer than head
	pendSeq  int64              // the newest head recorded
	pendHash []byte             //
	head     *adminv1.AuditHead // newest signed head, nil before the first
	loaded   *adminv1.AuditHead // what the file held at start, nil if none
	loadErr  error              // why the file at start could not be used
	problem  string             // non-empty once the log was found not to reach its head
	badAt    int64              // the first event that did not fit, with problem
	writeErr error              // the last checkpoint write's failure, nil after a success
}

// newAuditAnchor gets (or makes, the first time) the checkpoint key and reads the checkpoint file, which is
// checked against the log by verify.
func newAuditAnchor(ctx context.Context, dataDir, td string, keys ca.KeyManager, now func() time.Time, log *slog.Logger) (*auditAnchor, error) {
	signer, err := keys.GetKey(ctx, auditKeyID)
	if errors.Is(err, fs.ErrNotExist) {
		signer, err = keys.GenerateKey(ctx, auditKeyID)
		if err != nil {
			// Another server sharing the key manager made it meanwhile.
			if s, err2 := keys.GetKey(ctx, auditKeyID); err2 == nil {
				signer, err = s, nil
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("audit checkpoint key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("audit checkpoint key: %w", err)
	}
	a := &auditAnchor{path: filepath.Join(dataDir, checkpointFile), td: td, keyID: auditKeyID, signer: signer, pub: pub, now: now, log: log,
		wake: make(chan struct{}, 1)}
	b, err := os.ReadFile(a.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		a.loadErr = err
	default:
		h := &adminv1.AuditHead{}
		if err := protojson.Unmarshal(b, h); err != nil {
			a.loadErr = fmt.Errorf("%s is not an audit head: %w", a.path, err)
		} else if err := audithead.Verify(h); err != nil {
			a.loadErr = fmt.Errorf("%s: %w", a.path, err)
		} else if !bytes.Equal(h.GetPublicKey(), pub) {
			a.loadErr = fmt.Errorf("%s is signed by another key than this server's %s key", a.path, auditKeyID)
		} else {
			a.loaded = h
		}
	}
	return a, nil
}

// record takes the new head (seq, hash). The store calls it after each commit that appended audit rows,
// in commit order (sqlite.Config.OnAuditHead). While Run runs, the write is left to it; otherwise (during
// New, after shutdown) the head is written now.
func (a *auditAnchor) record(seq int64, hash []byte) {
	a.mu.Lock()
	a.pending, a.pendSeq, a.pendHash = true, seq, bytes.Clone(hash)
	running := a.running
	a.mu.Unlock()
	if !running {
		a.flush()
		return
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run batches checkpoint writes until ctx ends, then writes the last head.
func (a *auditAnchor) Run(ctx context.Context) error {
	a.mu.Lock()
	a.running = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
		a.flush()
	}()
	timer := time.NewTimer(checkpointDelay)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.wake:
		}
		timer.Reset(checkpointDelay)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		a.flush()
	}
}

// flush signs the pending head, if any, and writes it to the checkpoint file.
func (a *auditAnchor) flush() {
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	a.mu.Lock()
	if !a.pending {
		a.mu.Unlock()
		return
	}
	seq, hash := a.pendSeq, a.pendHash
	a.pending = false
	a.mu.Unlock()

	h := &adminv1.AuditHead{TrustDomain: a.td, Count: seq, Hash: hash, Time: timestamppb.New(a.now()), KeyId: a.keyID, PublicKey: a.pub}
	err := audithead.Sign(h, a.signer)
	if err == nil {
		var b []byte
		if b, err = audithead.Marshal(h); err == nil {
			err = writeFileNoSync(a.path, b)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		if a.writeErr == nil {
			a.log.Error("audit checkpoint not written: removed audit rows may go unnoticed until it is", "path", a.path, "seq", seq, "error", err)
		}
		a.writeErr = err
		return
	}
	if a.writeErr != nil {
		a.log.Info("audit checkpoint written again", "path", a.path, "seq", seq)
	}
	a.writeErr = nil
	a.head = h
}

// Head writes the pending head, if any, and returns the newest signed head (adminapi.AuditHeadSource).
func (a *auditAnchor) Head() *adminv1.AuditHead {
	a.flush()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.head == nil {
		return nil
	}
	return proto.Clone(a.head).(*adminv1.AuditHead)
}

// Problem returns what verify found at start, "" if the log reached its checkpoint
// (adminapi.AuditHeadSource).
func (a *auditAnchor) Problem() (int64, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.badAt, a.problem
}

// intact reports whether the log was found to reach its recorded head, and if not why.
func (a *auditAnchor) intact() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.problem == "", a.problem
}

// auditStore is what verify reads and writes.
type auditStore interface {
	VerifyAudit(ctx context.Context) (store.AuditVerification, error)
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error)
	Audit(ctx context.Context, actor, action, target string, detail any) error
}

// verify checks the log against the checkpoint read at start, before anything appends to it. It does not
// refuse to start: the log's damage is evidence to keep and alert on (an error log line, the metric
// kith_audit_chain_intact 0, a warning on /readyz), not a reason to stop issuing; whoever can rewrite the
// database could stop the server in worse ways anyway. The old checkpoint is kept beside the new one
// (audit-head.json.mismatch-<time>) and the finding is appended to the log itself, so that it is not lost
// when the next append writes a new checkpoint.
func (a *auditAnchor) verify(ctx context.Context, st auditStore, markerExisted bool) error {
	v, err := st.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("verify audit log at start: %w", err)
	}
	var problem string
	var at int64
	switch {
	case !v.OK:
		problem, at = fmt.Sprintf("the audit chain is broken at event %d: %s", v.BrokenAt, v.Problem), v.BrokenAt
	case a.loadErr != nil:
		problem = "the audit checkpoint cannot be used: " + a.loadErr.Error()
	case a.loaded == nil && v.Count > 0 && markerExisted:
		problem = fmt.Sprintf("the audit checkpoint %s is missing although the log has %d events", a.path, v.Count)
	case a.loaded == nil && v.Count > 0:
		a.log.Warn("no audit checkpoint yet (a data dir from before checkpoints): starting one from the log's head", "path", a.path, "events", v.Count)
	case a.loaded != nil:
		var err error
		at, problem, err = store.CheckHead(ctx, st, a.loaded.GetCount(), a.loaded.GetHash(), v)
		if err != nil {
			return fmt.Errorf("verify audit log at start: %w", err)
		}
		if problem != "" {
			problem += " (checkpoint signed " + a.loaded.GetTime().AsTime().UTC().Format(time.RFC3339) + ")"
		}
	}
	if problem == "" {
		if a.loaded != nil {
			a.mu.Lock()
			a.head = a.loaded
			a.mu.Unlock()
		}
		return nil
	}
	a.mu.Lock()
	a.problem, a.badAt = problem, at
	a.mu.Unlock()
	kept := ""
	if _, err := os.Stat(a.path); err == nil {
		kept = a.path + ".mismatch-" + a.now().UTC().Format("20060102T150405Z")
		if err := os.Rename(a.path, kept); err != nil {
			return fmt.Errorf("keep the audit checkpoint that does not match: %w", err)
		}
	}
	a.log.Error("AUDIT LOG TAMPERED OR DAMAGED: it does not match its signed checkpoint; keep the data dir for investigation",
		"problem", problem, "first_bad_event", at, "events", v.Count, "checkpoint_kept", kept)
	detail := map[string]any{"problem": problem, "events": v.Count, "checkpoint_kept": kept}
	if a.loaded != nil {
		detail["checkpoint_count"] = a.loaded.GetCount()
		detail["checkpoint_hash"] = hex.EncodeToString(a.loaded.GetHash())
	}
	if err := st.Audit(ctx, "system", "audit.checkpoint.mismatch", a.path, detail); err != nil {
		return fmt.Errorf("record the audit checkpoint mismatch: %w", err)
	}
	return nil
}
