package cli

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/keymanager/disk"
	"github.com/kithid/kith/internal/store"
	"github.com/kithid/kith/internal/store/postgres"
	"github.com/kithid/kith/internal/store/sqlite"
)

// migrateResult is what kith store migrate prints.
type migrateResult struct {
	From        string `json:"from"`
	To          string `json:"to"`
	Revision    int64  `json:"revision"`
	AuditEvents int64  `json:"audit_events"`
	AuditHead   string `json:"audit_head"`
	Keys        int    `json:"keys"`
}

func (e *env) storeMigrateCommand() *cobra.Command {
	var from, to, kekFile, keysDir string
	cmd := &cobra.Command{
		Use:   "migrate --from sqlite:///var/lib/kith/kith.db --to postgres://... --kek-file FILE [--keys-dir DIR]",
		Short: "Move a deployment from SQLite to PostgreSQL (store, audit chain and CA keys), then check both read the same",
		Long: "Stop the server first: writes made after the copy would not be moved. The destination database must\n" +
			"be new (the schema is created; a store with data is refused). Every table is copied in one\n" +
			"transaction, rows as they are, so the audit chain keeps its hashes; the CA keys of the authorities in\n" +
			"use and the audit checkpoint key move from the disk key manager (--keys-dir, default the keys\n" +
			"directory beside the database) into the database key manager, sealed under --kek-file (env\n" +
			"KITH_CA_KEK_FILE): give the servers that file as ca.kek_file. Afterwards both stores are read\n" +
			"through the store contract and compared (audit chains verified, same head; same entries, agents,\n" +
			"tokens, grants, policy, authorities and change feed); any difference exits 1.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !strings.HasPrefix(from, "sqlite://") {
				return usage(errors.New("--from must be the SQLite store's URL: sqlite:///var/lib/kith/kith.db"))
			}
			if !postgres.ParseURL(to) {
				return usage(errors.New("--to must be the PostgreSQL store's URL: postgres://user:password@host:5432/db?sslmode=verify-full"))
			}
			if kekFile == "" {
				kekFile = os.Getenv("KITH_CA_KEK_FILE")
			}
			if kekFile == "" {
				return usage(errors.New("--kek-file is required: the CA keys move into the database sealed under it (head -c 32 /dev/urandom | base64 > kek; chmod 600 kek)"))
			}
			path := strings.TrimPrefix(from, "sqlite://")
			if keysDir == "" {
				keysDir = filepath.Join(filepath.Dir(path), "keys")
			}
			res, err := migrateStore(cmd.Context(), path, to, kekFile, keysDir)
			if err != nil {
				return err
			}
			return e.print(res, func() {
				fmt.Fprintf(e.stdout, "moved %s to %s: revision %d, %d audit events (head %s, verified on both), %d CA keys\n",
					res.From, res.To, res.Revision, res.AuditEvents, res.AuditHead, res.Keys)
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the SQLite store: sqlite:///path/kith.db")
	cmd.Flags().StringVar(&to, "to", "", "the new PostgreSQL store: postgres://user:password@host:5432/db?sslmode=verify-full")
	cmd.Flags().StringVar(&kekFile, "kek-file", "", "key-encryption key the CA keys are sealed under in the database (env KITH_CA_KEK_FILE)")
	cmd.Flags().StringVar(&keysDir, "keys-dir", "", "the disk key manager's directory (default: keys beside the database)")
	return cmd
}

func migrateStore(ctx context.Context, path, url, kekFile, keysDir string) (*migrateResult, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("source store: %w", err)
	}
	kek, err := postgres.ReadKEK(kekFile)
	if err != nil {
		return nil, err
	}
	src, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		return nil, fmt.Errorf("source store: %w", err)
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, postgres.Config{URL: url, MaxConns: 4})
	if err != nil {
		return nil, fmt.Errorf("destination store: %w", err)
	}
	defer dst.Close()
	err = dst.Import(ctx, func(fn func(string, []string, postgres.Rows) error) error {
		return sqlite.Export(ctx, path, func(t string, cols []string, rows *sql.Rows) error { return fn(t, cols, rows) })
	})
	if err != nil {
		return nil, fmt.Errorf("copy %s to %s: %w", path, postgres.Redact(url), err)
	}
	n, err := moveKeys(ctx, src, url, kek, keysDir)
	if err != nil {
		return nil, err
	}
	diffs, err := store.Compare(ctx, src, dst)
	if err != nil {
		return nil, fmt.Errorf("compare the stores after the copy: %w", err)
	}
	if len(diffs) > 0 {
		return nil, &exitError{code: 1, err: fmt.Errorf("the copy differs from the source: %s: drop the destination database and run again with the server stopped", strings.Join(diffs, "; "))}
	}
	v, err := dst.VerifyAudit(ctx)
	if err != nil {
		return nil, err
	}
	rev, err := dst.Revision(ctx)
	if err != nil {
		return nil, err
	}
	return &migrateResult{From: "sqlite://" + path, To: postgres.Redact(url), Revision: rev, AuditEvents: v.Count,
		AuditHead: hex.EncodeToString(v.HeadHash), Keys: n}, nil
}

// moveKeys copies the keys of the authorities not retired, and the audit checkpoint key, from the disk key
// manager into the database one.
func moveKeys(ctx context.Context, src ca.AuthorityStore, url string, kek []byte, dir string) (int, error) {
	from, err := disk.New(dir)
	if err != nil {
		return 0, err
	}
	to, err := postgres.OpenKeys(ctx, url, kek)
	if err != nil {
		return 0, err
	}
	defer to.Close()
	auths, err := src.ListAuthorities(ctx)
	if err != nil {
		return 0, err
	}
	ids := []string{"audit-checkpoint"}
	for _, a := range auths {
		if a.KeyID != "" && a.State != ca.StateRetired {
			ids = append(ids, a.KeyID)
		}
	}
	n := 0
	for _, id := range ids {
		k, err := from.GetKey(ctx, id)
		if errors.Is(err, fs.ErrNotExist) && id == "audit-checkpoint" {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("read CA key %s from %s (--keys-dir): %w", id, dir, err)
		}
		if err := to.ImportKey(ctx, id, k); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
