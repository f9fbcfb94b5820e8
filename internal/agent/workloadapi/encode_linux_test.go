package workloadapi

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/kithid/kith/internal/agent/cache"
)

// The hand-assembled response decodes to exactly the message the generated code would build.
func TestEncodeX509SVIDsMatchesTheGeneratedMessage(t *testing.T) {
	e := newEnv(t, true, nil)
	web, db, admin := e.sign(webID), e.sign(dbID), e.sign(adminID)
	fedTD := spiffeid.RequireTrustDomainFromString("partner.example")
	fed := spiffebundle.FromX509Authorities(fedTD, e.ca.Bundle().X509Authorities())
	u := &cache.Update{
		Bundle:    e.ca.Bundle(),
		Federated: map[spiffeid.TrustDomain]*spiffebundle.Bundle{fedTD: fed},
		Identities: []cache.Identity{
			{Entry: &cache.Entry{ID: "1", SPIFFEID: adminID, Labels: map[string]string{HintLabel: "internal"}}, SVID: admin},
			{Entry: &cache.Entry{ID: "2", SPIFFEID: dbID}, SVID: db},
			{Entry: &cache.Entry{ID: "3", SPIFFEID: webID, Labels: map[string]string{HintLabel: "internal"}}, SVID: web}, // hint taken: left out
		},
	}
	raw, sent := encodeX509SVIDs(u, slog.New(slog.DiscardHandler))

	roots := x509Roots(e.ca.Bundle())
	want := &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{
			{SpiffeId: adminID.String(), X509Svid: admin.Chain(), X509SvidKey: admin.Key, Bundle: roots, Hint: "internal"},
			{SpiffeId: dbID.String(), X509Svid: db.Chain(), X509SvidKey: db.Key, Bundle: roots},
		},
		FederatedBundles: map[string][]byte{fedTD.IDString(): x509Roots(fed)},
	}
	if raw.size != raw.parts.Len() {
		t.Errorf("size = %d, the parts hold %d bytes", raw.size, raw.parts.Len())
	}
	for _, p := range raw.parts {
		if p.Len() == 0 {
			t.Error("empty part")
		}
	}
	var got workload.X509SVIDResponse
	if err := proto.Unmarshal(raw.parts.Materialize(), &got); err != nil {
		t.Fatalf("the encoded response does not parse: %v", err)
	}
	if diff := cmp.Diff(want, &got, protocmp.Transform()); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw.parts.Materialize(), wantBytes) {
		t.Error("the encoding differs from the generated code's deterministic encoding")
	}
	if len(sent) != 2 || sent[0].svid != admin || sent[1].svid != db {
		t.Errorf("sent = %v, want admin then db", sent)
	}
}

// The codec sends pre-encoded bytes as they are and everything else as protobuf.
func TestPassthroughCodec(t *testing.T) {
	c := encoding.GetCodecV2(grpcproto.Name)
	data, err := c.Marshal(&rawMessage{parts: mem.BufferSlice{mem.SliceBuffer("\x0a"), mem.SliceBuffer("\x00")}, size: 2})
	if err != nil || !bytes.Equal(data.Materialize(), []byte("\x0a\x00")) {
		t.Errorf("raw message: %q, %v", data.Materialize(), err)
	}
	msg := &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{SpiffeId: "spiffe://example.org/x"}}}
	data, err = c.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var back workload.X509SVIDResponse
	if err := c.Unmarshal(data, &back); err != nil || !proto.Equal(msg, &back) {
		t.Errorf("protobuf round trip: %v, %v", &back, err)
	}
}

func TestPushGapHoldsBackOnlyLargeMessages(t *testing.T) {
	if got := pushGap(2 << 10); got != 0 {
		t.Errorf("a 2 KiB message rests the stream %s, want 0", got)
	}
	if got := pushGap(17 << 20); got < 100*time.Millisecond || got > 300*time.Millisecond {
		t.Errorf("a 17 MiB message rests the stream %s, want between 100 and 300 ms", got)
	}
}

// Field lengths that take one, two and three bytes of varint, with and without intermediates, a key and a
// hint, and shared bundles: the pieces always concatenate to the generated code's deterministic encoding.
func TestEncodeX509SVIDsPiecesForAnyLength(t *testing.T) {
	fill := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	root := &x509.Certificate{Raw: fill(500, 'r')} // only its DER is encoded
	bundle := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), []*x509.Certificate{root})
	inter := fill(300, 'i')
	tests := []struct {
		name               string
		leaf, inter, key   int
		path, hint         string
		shareIntermediates bool
	}{
		{name: "short", leaf: 1, key: 1},
		{name: "no key", leaf: 100},
		{name: "two-byte lengths", leaf: 600, key: 138, path: "/web", hint: "h"},
		{name: "intermediates", leaf: 600, inter: 300, key: 138, shareIntermediates: true},
		{name: "three-byte lengths", leaf: 20000, inter: 300, key: 5000, path: "/" + strings.Repeat("p", 200), hint: strings.Repeat("h", 130)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var idents []cache.Identity
			want := &workload.X509SVIDResponse{}
			for i := range 3 {
				id := spiffeid.RequireFromString("spiffe://example.org/w" + strconv.Itoa(i) + tt.path)
				s := &cache.SVID{ID: id, Leaf: fill(tt.leaf, byte('a'+i)), Key: fill(tt.key, 'k')}
				if tt.shareIntermediates {
					s.Intermediates = inter
				} else if tt.inter > 0 {
					s.Intermediates = fill(tt.inter, 'j')
				}
				hint := ""
				if tt.hint != "" {
					hint = tt.hint + strconv.Itoa(i)
				}
				idents = append(idents, cache.Identity{Entry: &cache.Entry{ID: strconv.Itoa(i), SPIFFEID: id, Labels: map[string]string{HintLabel: hint}}, SVID: s})
				want.Svids = append(want.Svids, &workload.X509SVID{SpiffeId: id.String(), X509Svid: s.Chain(), X509SvidKey: s.Key, Bundle: root.Raw, Hint: hint})
			}
			raw, _ := encodeX509SVIDs(&cache.Update{Bundle: bundle, Identities: idents}, slog.New(slog.DiscardHandler))
			wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if got := raw.parts.Materialize(); !bytes.Equal(got, wantBytes) {
				t.Errorf("encoding differs from the generated code's (%d bytes, want %d)", len(got), len(wantBytes))
			}
			if raw.size != len(wantBytes) {
				t.Errorf("size = %d, want %d", raw.size, len(wantBytes))
			}
			// Per SVID: framing, leaf, intermediates, framing with the key, bundle; then the last framing.
			if n := len(raw.parts); n > 5*len(idents)+1 {
				t.Errorf("%d pieces for %d SVIDs, want at most %d", n, len(idents), 5*len(idents)+1)
			}
		})
	}
}
