package policy

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
)

// BenchmarkActivityDelta: an agent holding 10,000 SVIDs renews 100 of them; reports the bytes of the
// whole report and of the delta after it.
func BenchmarkActivityDelta(b *testing.B) {
	exp := timestamppb.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	svids := make([]*agentv1.HeldSVID, 10_000)
	for i := range svids {
		svids[i] = &agentv1.HeldSVID{EntryId: fmt.Sprintf("%036d", i), SpiffeId: fmt.Sprintf("spiffe://example.org/ns/shop/sa/svc-%d", i),
			SerialNumber: fmt.Sprintf("%032x", i), ExpiresAt: exp}
	}
	base := newActivityBase(1, svids, nil)
	renewed := make([]*agentv1.HeldSVID, len(svids))
	copy(renewed, svids)
	for i := range 100 {
		r := proto.Clone(renewed[i*100]).(*agentv1.HeldSVID)
		r.SerialNumber = fmt.Sprintf("%032x", 1_000_000+i)
		renewed[i*100] = r
	}
	var changed []*agentv1.HeldSVID
	for b.Loop() {
		changed, _, _ = base.delta(renewed, nil)
	}
	whole := proto.Size(&agentv1.ReportStatusRequest{Activity: true, Svids: renewed})
	delta := proto.Size(&agentv1.ReportStatusRequest{Activity: true, ActivitySeq: 2, ActivityBaseSeq: 1, Svids: changed})
	b.ReportMetric(float64(whole), "whole-bytes")
	b.ReportMetric(float64(delta), "delta-bytes")
}
