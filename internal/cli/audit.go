package cli

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/internal/audithead"
	"github.com/kithid/kith/internal/config"
	"github.com/kithid/kith/internal/store"
)

func (e *env) auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The append-only, hash-chained audit log"}
	var after int64
	var limit int32
	var since string
	var oldestFirst, follow bool
	list := &cobra.Command{
		Use:   "list [--since 1h|TIME] [--limit N] [--oldest-first] [--follow] [--after SEQ]",
		Short: "List audit events, newest first; --follow prints new ones as they are written",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 || after < 0 {
				return usage(fmt.Errorf("--limit and --after must not be negative"))
			}
			req := &adminv1.ListAuditEventsRequest{AfterSeq: after, Limit: limit, NewestFirst: !oldestFirst && !follow}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usage(err)
				}
				req.Since = timestamppb.New(t)
			}
			if follow {
				// The newest --limit events (all with none) in the order written, then each new one.
				req.NewestFirst = limit > 0
				return e.followAudit(cmd.Context(), req)
			}
			resp, err := withClient(cmd.Context(), e, func(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListAuditEventsResponse, error) {
				return listAuditEvents(ctx, c, req)
			})
			if err != nil {
				return err
			}
			return e.print(resp, func() { e.auditTable(resp.GetEvents(), true) })
		},
	}
	list.Flags().Int64Var(&after, "after", 0, "only events after this sequence number")
	list.Flags().Int32Var(&limit, "limit", 0, "at most this many events, the newest (0: all)")
	list.Flags().StringVar(&since, "since", "", "only events since this long ago (e.g. 1h, 2d) or this RFC 3339 time")
	list.Flags().BoolVar(&oldestFirst, "oldest-first", false, "list in the order written")
	list.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events as they are written (oldest first), until interrupted")

	var witnessed string
	verify := &cobra.Command{
		Use:   "verify [--head FILE|JSON]",
		Short: "Check the audit log's hash chain and its signed head; exits 1 if any row was changed or removed",
		Long: "The server recomputes the hash chain (a changed or removed row breaks it) and compares the log with the\n" +
			"head it signs into audit-head.json outside the database after every append (rows removed from the end\n" +
			"leave an intact chain; only the head shows them). --head also checks the log against a head kept\n" +
			"elsewhere (the output of `kith audit head -o json`, as a file or the JSON text): the log must still\n" +
			"reach it, with the same hash at its count.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var head *adminv1.AuditHead
			if witnessed != "" {
				h, err := audithead.Parse(witnessed)
				if err != nil {
					return usage(fmt.Errorf("--head: %w", err))
				}
				if err := audithead.Verify(h); err != nil {
					return &exitError{code: 1, err: fmt.Errorf("--head: %w: it was altered, or is not a kith audit head", err)}
				}
				head = h
			}
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.VerifyAudit, &adminv1.VerifyAuditRequest{})
			if err != nil {
				return err
			}
			if resp.GetOk() && head != nil {
				c, done, err := e.admin()
				if err != nil {
					return err
				}
				defer done()
				at, problem, err := store.CheckHead(cmd.Context(), auditLister{c: c}, head.GetCount(), head.GetHash(),
					store.AuditVerification{OK: true, Count: resp.GetCount()})
				if err != nil {
					return err
				}
				if problem != "" {
					resp.Ok, resp.BrokenAt, resp.Problem = false, at, problem+" (the head given with --head, signed "+fmtTime(head.GetTime())+")"
				}
			}
			err = e.print(resp, func() {
				if resp.GetOk() {
					fmt.Fprintf(e.stdout, "audit log intact: %d events, head %s\n", resp.GetCount(), hex.EncodeToString(resp.GetHeadHash()))
					if cp := resp.GetCheckpoint(); cp != nil {
						fmt.Fprintf(e.stdout, "reaches its signed checkpoint: event %d at %s\n", cp.GetCount(), fmtTime(cp.GetTime()))
					}
					if head != nil {
						fmt.Fprintf(e.stdout, "reaches the head given with --head: event %d at %s\n", head.GetCount(), fmtTime(head.GetTime()))
					}
				}
			})
			if err != nil {
				return err
			}
			if !resp.GetOk() {
				return &exitError{code: 1, err: fmt.Errorf("audit log broken at event %d: %s", resp.GetBrokenAt(), resp.GetProblem())}
			}
			return nil
		},
	}
	verify.Flags().StringVar(&witnessed, "head", "", "also check the log against this head (a file, or JSON text, from kith audit head -o json)")

	head := &cobra.Command{
		Use:   "head",
		Short: "Print the audit log's signed head (count, last hash, time, signature) to keep elsewhere",
		Long: "The head is what the server signed after the last append: the number of events, the hash of the last,\n" +
			"the time, and an ECDSA P-256 signature by the server's audit-checkpoint key (its public key included).\n" +
			"Keep copies outside the server (-o json) and check the log against them later with\n" +
			"`kith audit verify --head FILE`: a log cut back below a witnessed head fails.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), e, adminv1.AdminServiceClient.GetAuditHead, &adminv1.GetAuditHeadRequest{})
			if err != nil {
				return err
			}
			h := resp.GetHead()
			if e.output == "json" {
				b, err := audithead.Marshal(h)
				if err != nil {
					return fmt.Errorf("encode output: %w", err)
				}
				_, err = e.stdout.Write(b)
				return err
			}
			fmt.Fprintf(e.stdout, "count      %d\nhash       %s\ntime       %s\nkey        %s (public key sha256 %s)\nsignature  %s\n",
				h.GetCount(), hex.EncodeToString(h.GetHash()), h.GetTime().AsTime().UTC().Format(time.RFC3339Nano),
				h.GetKeyId(), audithead.KeyFingerprint(h), base64.StdEncoding.EncodeToString(h.GetSignature()))
			return nil
		},
	}
	cmd.AddCommand(list, verify, head)
	return cmd
}

// auditLister reads audit events through the admin API, for store.CheckHead.
type auditLister struct{ c adminv1.AdminServiceClient }

func (l auditLister) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	resp, err := l.c.ListAuditEvents(ctx, &adminv1.ListAuditEventsRequest{AfterSeq: f.AfterSeq, Limit: int32(f.Limit)})
	if err != nil {
		return nil, err
	}
	out := make([]store.AuditEvent, 0, len(resp.GetEvents()))
	for _, ev := range resp.GetEvents() {
		out = append(out, store.AuditEvent{Seq: ev.GetSeq(), Hash: ev.GetHash()})
	}
	return out, nil
}

// auditTable writes events as a table, with its header when header is set.
func (e *env) auditTable(events []*adminv1.AuditEvent, header bool) {
	rows := make([][]string, 0, len(events))
	for _, ev := range events {
		rows = append(rows, []string{strconv.FormatInt(ev.GetSeq(), 10), fmtTime(ev.GetTime()), ev.GetActor(), ev.GetAction(), ev.GetTarget()})
	}
	if header {
		e.table([]string{"SEQ", "TIME", "ACTOR", "ACTION", "TARGET"}, rows)
		return
	}
	for _, r := range rows {
		fmt.Fprintln(e.stdout, strings.Join(r, "  "))
	}
}

// auditPoll is how often `kith audit list --follow` asks for new events.
const auditPoll = time.Second

// followAudit prints the events req selects in the order written, then every new event, until ctx ends.
// With -o json each event is one JSON object on its own line.
func (e *env) followAudit(ctx context.Context, req *adminv1.ListAuditEventsRequest) error {
	c, done, err := e.admin()
	if err != nil {
		return err
	}
	defer done()
	show := func(events []*adminv1.AuditEvent, header bool) error {
		if e.output != "json" {
			e.auditTable(events, header)
			return nil
		}
		for _, ev := range events {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
			if err != nil {
				return fmt.Errorf("encode output: %w", err)
			}
			fmt.Fprintln(e.stdout, string(b))
		}
		return nil
	}
	resp, err := listAuditEvents(ctx, c, req)
	if err != nil {
		return err
	}
	events := resp.GetEvents()
	if req.GetNewestFirst() {
		slices.Reverse(events)
	}
	last := req.GetAfterSeq()
	if n := len(events); n > 0 {
		last = events[n-1].GetSeq()
	}
	if err := show(events, true); err != nil {
		return err
	}
	t := time.NewTicker(auditPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil // interrupted: the normal end of --follow
		case <-t.C:
		}
		resp, err := listAuditEvents(ctx, c, &adminv1.ListAuditEventsRequest{AfterSeq: last})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if n := len(resp.GetEvents()); n > 0 {
			last = resp.GetEvents()[n-1].GetSeq()
			if err := show(resp.GetEvents(), false); err != nil {
				return err
			}
		}
	}
}

// parseSince reads --since: a duration back from now (1h, 2d) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := config.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s: give how long ago as a positive duration, e.g. 1h", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: give a duration such as 1h or 2d, or an RFC 3339 time such as 2026-12-06T09:00:00Z", s)
	}
	return t, nil
}
