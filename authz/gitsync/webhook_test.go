package gitsync_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kithid/kith/authz/gitsync"
	"github.com/kithid/kith/internal/testutil"
)

func TestReplaysRemembersDeliveriesForTheWindow(t *testing.T) {
	clock := testutil.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	r := gitsync.NewReplays(10*time.Minute, clock.Now)
	delivery := func(id string) http.Header {
		return http.Header{"X-Github-Delivery": {id}, "X-Hub-Signature-256": {"sha256=" + id}}
	}
	type got struct {
		By       string
		Replayed bool
	}
	record := func(h http.Header, body string) got {
		by, _, replayed := r.Record(h, []byte(body))
		return got{by, replayed}
	}
	steps := []struct {
		name    string
		advance time.Duration
		h       http.Header
		body    string
		want    got
	}{
		{name: "a first delivery is new", h: delivery("a"), body: "1", want: got{}},
		{name: "its ID again is a replay", advance: 9 * time.Minute, h: delivery("a"), body: "2", want: got{"X-GitHub-Delivery a", true}},
		{name: "its body and signature again are a replay", h: http.Header{"X-Hub-Signature-256": {"sha256=a"}}, body: "1", want: got{"the same body and signature", true}},
		{name: "after the window it is forgotten", advance: 2 * time.Minute, h: delivery("a"), body: "1", want: got{}},
		{name: "another delivery is new", h: delivery("b"), body: "3", want: got{}},
	}
	for _, s := range steps {
		clock.Advance(s.advance)
		if diff := cmp.Diff(s.want, record(s.h, s.body)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
	}
}

func TestReplaysChecksTimestamps(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	r := gitsync.NewReplays(10*time.Minute, func() time.Time { return now })
	for _, tt := range []struct {
		name    string
		h       http.Header
		wantErr string
	}{
		{name: "no timestamp header is fine", h: http.Header{}},
		{name: "now is fine", h: http.Header{"Webhook-Timestamp": {strconv.FormatInt(now.Unix(), 10)}}},
		{name: "9 minutes ago is fine", h: http.Header{"X-Webhook-Timestamp": {strconv.FormatInt(now.Add(-9*time.Minute).Unix(), 10)}}},
		{name: "11 minutes ago is refused", h: http.Header{"Webhook-Timestamp": {strconv.FormatInt(now.Add(-11*time.Minute).Unix(), 10)}}, wantErr: "more than 10m0s from the server's time"},
		{name: "11 minutes ahead is refused", h: http.Header{"Webhook-Timestamp": {strconv.FormatInt(now.Add(11*time.Minute).Unix(), 10)}}, wantErr: "possible replay"},
		{name: "a non-number is refused", h: http.Header{"Webhook-Timestamp": {"yesterday"}}, wantErr: "not a Unix time"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := r.CheckTime(tt.h)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("CheckTime = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
