package cli

import (
	"context"
	"fmt"

	adminv1 "github.com/kithid/kith/api/kith/admin/v1"
)

// Every List RPC of the admin API returns a page at a time (at most a few MiB); the verbs follow
// next_page_token to the end and print the whole list as one response, as before paging.

// paged is a List response.
type paged interface{ GetNextPageToken() string }

// allPages calls page with "" and then with each next_page_token until the server sends none, handing
// each response to add.
func allPages[R paged](page func(token string) (R, error), add func(R)) error {
	token := ""
	for {
		r, err := page(token)
		if err != nil {
			return err
		}
		add(r)
		next := r.GetNextPageToken()
		if next == "" {
			return nil
		}
		if next == token {
			return fmt.Errorf("the server sent the same page token twice (%s): stopping rather than looping", token)
		}
		token = next
	}
}

func listEntries(ctx context.Context, c adminv1.AdminServiceClient, req *adminv1.ListEntriesRequest) (*adminv1.ListEntriesResponse, error) {
	out := &adminv1.ListEntriesResponse{}
	err := allPages(func(token string) (*adminv1.ListEntriesResponse, error) {
		req.PageToken = token
		return c.ListEntries(ctx, req)
	}, func(r *adminv1.ListEntriesResponse) { out.Entries = append(out.Entries, r.GetEntries()...) })
	return out, err
}

func listGrants(ctx context.Context, c adminv1.AdminServiceClient, req *adminv1.ListGrantsRequest) (*adminv1.ListGrantsResponse, error) {
	out := &adminv1.ListGrantsResponse{}
	err := allPages(func(token string) (*adminv1.ListGrantsResponse, error) {
		req.PageToken = token
		return c.ListGrants(ctx, req)
	}, func(r *adminv1.ListGrantsResponse) { out.Grants = append(out.Grants, r.GetGrants()...) })
	return out, err
}

func listAgents(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListAgentsResponse, error) {
	out := &adminv1.ListAgentsResponse{}
	err := allPages(func(token string) (*adminv1.ListAgentsResponse, error) {
		return c.ListAgents(ctx, &adminv1.ListAgentsRequest{PageToken: token})
	}, func(r *adminv1.ListAgentsResponse) { out.Agents = append(out.Agents, r.GetAgents()...) })
	return out, err
}

func listJoinTokens(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListJoinTokensResponse, error) {
	out := &adminv1.ListJoinTokensResponse{}
	err := allPages(func(token string) (*adminv1.ListJoinTokensResponse, error) {
		return c.ListJoinTokens(ctx, &adminv1.ListJoinTokensRequest{PageToken: token})
	}, func(r *adminv1.ListJoinTokensResponse) { out.Tokens = append(out.Tokens, r.GetTokens()...) })
	return out, err
}

func listAuthorities(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListAuthoritiesResponse, error) {
	out := &adminv1.ListAuthoritiesResponse{}
	err := allPages(func(token string) (*adminv1.ListAuthoritiesResponse, error) {
		return c.ListAuthorities(ctx, &adminv1.ListAuthoritiesRequest{PageToken: token})
	}, func(r *adminv1.ListAuthoritiesResponse) {
		out.Authorities = append(out.Authorities, r.GetAuthorities()...)
	})
	return out, err
}

func listTargetModes(ctx context.Context, c adminv1.AdminServiceClient) (*adminv1.ListTargetModesResponse, error) {
	out := &adminv1.ListTargetModesResponse{Modes: map[string]string{}}
	err := allPages(func(token string) (*adminv1.ListTargetModesResponse, error) {
		return c.ListTargetModes(ctx, &adminv1.ListTargetModesRequest{PageToken: token})
	}, func(r *adminv1.ListTargetModesResponse) {
		for t, m := range r.GetModes() {
			out.Modes[t] = m
		}
	})
	return out, err
}

func listPolicyHistory(ctx context.Context, c adminv1.AdminServiceClient, limit int32) (*adminv1.ListPolicyHistoryResponse, error) {
	out := &adminv1.ListPolicyHistoryResponse{}
	err := allPages(func(token string) (*adminv1.ListPolicyHistoryResponse, error) {
		return c.ListPolicyHistory(ctx, &adminv1.ListPolicyHistoryRequest{Limit: limit, PageToken: token})
	}, func(r *adminv1.ListPolicyHistoryResponse) { out.Attempts = append(out.Attempts, r.GetAttempts()...) })
	return out, err
}

// listAuditEvents follows the pages of req; req.Limit, when set, caps the events over all pages.
func listAuditEvents(ctx context.Context, c adminv1.AdminServiceClient, req *adminv1.ListAuditEventsRequest) (*adminv1.ListAuditEventsResponse, error) {
	out := &adminv1.ListAuditEventsResponse{}
	limit := req.GetLimit()
	err := allPages(func(token string) (*adminv1.ListAuditEventsResponse, error) {
		req.PageToken = token
		if limit > 0 {
			req.Limit = limit - int32(len(out.Events))
		}
		return c.ListAuditEvents(ctx, req)
	}, func(r *adminv1.ListAuditEventsResponse) {
		out.Events = append(out.Events, r.GetEvents()...)
		if limit > 0 && int32(len(out.Events)) >= limit {
			r.NextPageToken = "" // enough
		}
	})
	return out, err
}
