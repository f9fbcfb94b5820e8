package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/attestation/node/jointoken"
	"github.com/kithid/kith/attestation/workload"
)

// bindStrict gives a verb --strict: what it would warn about (a value that is well-formed but matches
// nothing known now) is refused instead.
func (e *env) bindStrict(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&e.strict, "strict", false, "refuse, instead of warning about, a value that matches nothing known now")
}

// caution warns on stderr (exit status unchanged) about something that matches nothing now, or refuses it
// with --strict.
func (e *env) caution(msg string) error {
	if e.strict {
		return fmt.Errorf("%s (refused: --strict)", msg)
	}
	fmt.Fprintln(e.stderr, "kith: warning: "+msg)
	return nil
}

// checkGrantEnds cautions about a grant whose caller or target no registration entry has (or, for a
// prefix, no entry falls under): a typo such as spiffe://kith.test/paymnets would never match. Each end
// is one indexed lookup of at most one entry.
func (e *env) checkGrantEnds(ctx context.Context, c adminv1.AdminServiceClient, caller, target string) error {
	for _, end := range []struct{ role, pattern string }{{"caller", caller}, {"target", target}} {
		req := &adminv1.ListEntriesRequest{SpiffeId: end.pattern, PageSize: 1}
		if prefix, ok := strings.CutSuffix(end.pattern, "*"); ok {
			req = &adminv1.ListEntriesRequest{SpiffeIdPrefix: prefix, PageSize: 1}
		}
		resp, err := c.ListEntries(ctx, req)
		switch {
		case status.Code(err) == codes.InvalidArgument:
			continue // not an ID of this trust domain: creating the grant says what is wrong
		case err != nil:
			return err
		case len(resp.GetEntries()) > 0:
			continue
		}
		what := "no registered identity is " + end.pattern
		if strings.HasSuffix(end.pattern, "/*") {
			what = "no registered identity falls under " + end.pattern
		}
		if err := e.caution(fmt.Sprintf("%s (the %s): the grant matches nothing until an entry has it (see kith entry list)", what, end.role)); err != nil {
			return err
		}
	}
	return nil
}

// checkEntry cautions about an entry that no agent can serve now: a --parent that is no attested agent,
// or selectors of an attestor this Kith does not have.
func (e *env) checkEntry(ctx context.Context, pe *adminv1.Entry) error {
	return e.checkEntryIn(ctx, pe, "", map[string]bool{})
}

// checkEntryIn is checkEntry for one entry of several: where ("--data f.yaml: entries[3]: ") starts each
// caution, and parents holds the parents already looked up.
func (e *env) checkEntryIn(ctx context.Context, pe *adminv1.Entry, where string, parents map[string]bool) error {
	caution := func(msg string) error { return e.caution(where + msg) }
	if p := pe.GetParentId(); p != "" && !parents[p] {
		parents[p] = true
		_, err := call(ctx, e, adminv1.AdminServiceClient.GetAgent, &adminv1.GetAgentRequest{Id: p})
		switch {
		case status.Code(err) == codes.NotFound:
			if err := caution(fmt.Sprintf("no agent %s has attested: nothing serves the entry until one does (see kith agents list)", p)); err != nil {
				return err
			}
		case err != nil && status.Code(err) != codes.InvalidArgument: // a malformed ID: the server says what is wrong
			return err
		}
	}
	workloadTypes := workload.Names()
	for _, s := range pe.GetSelectors() {
		sel, err := attestation.ParseSelector(s)
		if err != nil {
			continue // malformed: the server refuses it and says why
		}
		if typ := sel.Type; !slices.Contains(workloadTypes, typ) {
			if err := caution(fmt.Sprintf("selector %s: no workload attestor of this Kith gives %s selectors (it has %s), so no workload matches it", s, typ, strings.Join(workloadTypes, ", "))); err != nil {
				return err
			}
		}
	}
	for _, s := range pe.GetNodeSelectors() {
		sel, err := attestation.ParseSelector(s)
		if err != nil {
			continue
		}
		if typ := sel.Type; typ != jointoken.Type && typ != attestation.TypeK8sPSAT {
			if err := caution(fmt.Sprintf("node selector %s: no node attestor of this Kith gives %s selectors (it has %s, %s), so no agent serves the entry", s, typ, attestation.TypeJoinToken, attestation.TypeK8sPSAT)); err != nil {
				return err
			}
		}
	}
	return nil
}
