package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/store/sqlite"
)

func init() {
	extraCommands = append(extraCommands, (*env).storeCommand)
}

func (e *env) storeCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "The server's database"}
	var dataDir, db string
	check := &cobra.Command{
		Use:   "check [--data-dir DIR | --db FILE]",
		Short: "Run the store's integrity check (SQLite quick_check); exits 1 if it finds damage",
		Long: "Without flags the running server checks its own store, through the admin socket.\n" +
			"With --data-dir (or --db) the database file is checked directly, read-only and without\n" +
			"migrating it: for a stopped server (it also works beside a running one). Either way every page\n" +
			"is read, so it takes time in proportion to the database's size; the server stays available.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir != "" && db != "" {
				return usage(fmt.Errorf("give --data-dir or --db, not both"))
			}
			var resp *adminv1.CheckStoreResponse
			if dataDir != "" || db != "" {
				if db == "" {
					db = filepath.Join(dataDir, "kith.db")
				}
				start := time.Now()
				check, problems, err := sqlite.CheckFile(cmd.Context(), db)
				if err != nil {
					return fmt.Errorf("check %s: %w", db, err)
				}
				resp = &adminv1.CheckStoreResponse{Ok: len(problems) == 0, Check: check, Problems: problems, TookMs: time.Since(start).Milliseconds()}
			} else {
				var err error
				if resp, err = call(cmd.Context(), e, adminv1.AdminServiceClient.CheckStore, &adminv1.CheckStoreRequest{}); err != nil {
					return err
				}
			}
			err := e.print(resp, func() {
				if resp.GetOk() {
					fmt.Fprintf(e.stdout, "store intact (%s, %d ms)\n", resp.GetCheck(), resp.GetTookMs())
				}
			})
			if err != nil {
				return err
			}
			if !resp.GetOk() {
				return &exitError{code: 1, err: fmt.Errorf("store damaged (%s found: %s): stop the server and restore the database from a backup",
					resp.GetCheck(), strings.Join(resp.GetProblems(), "; "))}
			}
			return nil
		},
	}
	check.Flags().StringVar(&dataDir, "data-dir", "", "check <DIR>/kith.db directly instead of asking the server")
	check.Flags().StringVar(&db, "db", "", "check this database file directly (a store.dsn outside the data dir)")
	cmd.AddCommand(check, e.storeMigrateCommand())
	return cmd
}
