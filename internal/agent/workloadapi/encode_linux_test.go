package workloadapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/kithid/kith/attestation"
	"github.com/kithid/kith/svid/cache"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding/gzip"
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

// Bundles: none of the SVID's trust domain, SVIDs of federated trust domains, and a federated bundle
// without X.509 authorities (a map entry with an empty value) all encode as the generated code does.
func TestEncodeX509SVIDsBundles(t *testing.T) {
	fill := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	tdA := spiffeid.RequireTrustDomainFromString("a.org")
	tdB := spiffeid.RequireTrustDomainFromString("b.org")
	tdC := spiffeid.RequireTrustDomainFromString("c.org")
	bA := spiffebundle.FromX509Authorities(tdA, []*x509.Certificate{{Raw: fill(200, 'A')}})
	bB := spiffebundle.FromX509Authorities(tdB, []*x509.Certificate{{Raw: fill(300, 'B')}})
	bC := spiffebundle.New(tdC)
	ident := func(entry string, td spiffeid.TrustDomain, path string) cache.Identity {
		id := spiffeid.RequireFromPath(td, path)
		return cache.Identity{Entry: &cache.Entry{ID: entry, SPIFFEID: id}, SVID: &cache.SVID{ID: id, Leaf: fill(130, 'l'), Key: fill(5, 'k')}}
	}
	tests := []struct {
		name string
		u    *cache.Update
	}{
		{name: "no bundle yet", u: &cache.Update{Identities: []cache.Identity{ident("1", tdA, "/x")}}},
		{name: "federated SVIDs and a federated bundle without X.509 authorities", u: &cache.Update{
			Bundle:     bA,
			Federated:  map[spiffeid.TrustDomain]*spiffebundle.Bundle{tdB: bB, tdC: bC},
			Identities: []cache.Identity{ident("1", tdA, "/x"), ident("2", tdB, "/y"), ident("3", tdC, "/z")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, _ := encodeX509SVIDs(tt.u, slog.New(slog.DiscardHandler))
			want := &workload.X509SVIDResponse{}
			for _, id := range tt.u.Identities {
				want.Svids = append(want.Svids, &workload.X509SVID{SpiffeId: id.SVID.ID.String(), X509Svid: id.SVID.Chain(),
					X509SvidKey: id.SVID.Key, Bundle: x509Roots(bundleFor(tt.u, id.SVID.ID.TrustDomain()))})
			}
			for td, b := range tt.u.Federated {
				if want.FederatedBundles == nil {
					want.FederatedBundles = map[string][]byte{}
				}
				want.FederatedBundles[td.IDString()] = x509Roots(b)
			}
			wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if got := raw.parts.Materialize(); !bytes.Equal(got, wantBytes) {
				t.Errorf("encoding differs from the generated code's:\n got %x\nwant %x", got, wantBytes)
			}
			if raw.size != len(wantBytes) {
				t.Errorf("size = %d, want %d", raw.size, len(wantBytes))
			}
		})
	}
}

// Streams share one encoded response: sixty-four at once, half asking for gzip, a third cancelled before
// reading, leave its bytes as they were and each reader gets every SVID (run with -race).
func TestStreamsShareOneResponseSafely(t *testing.T) {
	var entries []cache.Entry
	for i := range 300 {
		entries = append(entries, cache.Entry{ID: "e" + strconv.Itoa(i), SPIFFEID: spiffeid.RequireFromPath(td, "/w"+strconv.Itoa(i)), Selectors: []attestation.Selector{webSel}})
	}
	e := newEnv(t, true, []attestation.Selector{webSel}, entries...)
	sub := e.cache.Subscribe([]attestation.Selector{webSel})
	defer sub.Finish()
	u := <-sub.Updates()
	msg := u.Memo(x509MessageKey{}, func() any { return &x509Memo{} }).(*x509Memo).get(u, slog.New(slog.DiscardHandler))
	before := sha256.Sum256(msg.raw.parts.Materialize())
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(withHeader(context.Background()))
			defer cancel()
			var opts []grpc.CallOption
			if i%2 == 0 {
				opts = append(opts, grpc.UseCompressor(gzip.Name))
			}
			st, err := e.raw().FetchX509SVID(ctx, &workload.X509SVIDRequest{}, opts...)
			if err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				return // cancelled with the response on its way
			}
			m, err := st.Recv()
			if err != nil {
				t.Error(err)
				return
			}
			if len(m.GetSvids()) != len(entries) {
				t.Errorf("stream %d got %d SVIDs, want %d", i, len(m.GetSvids()), len(entries))
			}
		})
	}
	wg.Wait()
	if sha256.Sum256(msg.raw.parts.Materialize()) != before {
		t.Fatal("sending changed the shared response")
	}
	runtime.KeepAlive(msg) // the memo holds it weakly: keep it for the comparison
}

// Whatever the SVIDs, hints and bundles hold, the pieces concatenate to the generated code's deterministic
// encoding of the message they describe.
func FuzzEncodeX509SVIDs(f *testing.F) {
	f.Add(uint8(1), []byte("leaf"), []byte("inter"), []byte("key"), []byte("root"), "web", "hint", []byte("fed"))
	f.Add(uint8(3), make([]byte, 300), []byte{}, make([]byte, 138), make([]byte, 600), "a/b/c", "", []byte{})
	f.Fuzz(func(t *testing.T, n uint8, leaf, inter, key, root []byte, path, hint string, fedRoot []byte) {
		if len(leaf) == 0 {
			return // an SVID always has a leaf
		}
		mainTD := spiffeid.RequireTrustDomainFromString("example.org")
		fedTD := spiffeid.RequireTrustDomainFromString("partner.example")
		bundle := spiffebundle.New(mainTD)
		if len(root) > 0 {
			bundle.AddX509Authority(&x509.Certificate{Raw: root})
		}
		fed := spiffebundle.New(fedTD)
		if len(fedRoot) > 0 {
			fed.AddX509Authority(&x509.Certificate{Raw: fedRoot})
		}
		u := &cache.Update{Bundle: bundle, Federated: map[spiffeid.TrustDomain]*spiffebundle.Bundle{fedTD: fed}}
		want := &workload.X509SVIDResponse{FederatedBundles: map[string][]byte{fedTD.IDString(): x509Roots(fed)}}
		for i := range int(n%4) + 1 {
			td := mainTD
			if i == 2 {
				td = fedTD
			}
			id, err := spiffeid.FromPath(td, "/"+strconv.Itoa(i))
			if err != nil {
				t.Fatal(err)
			}
			if p, err := spiffeid.FromPath(td, "/"+strconv.Itoa(i)+"/"+path); err == nil && path != "" {
				id = p
			}
			h := ""
			if hint != "" {
				h = hint + strconv.Itoa(i) // hints are unique, or all but the first are left out
			}
			label := h
			if !utf8.ValidString(h) {
				h = "" // sent without its hint
			}
			s := &cache.SVID{ID: id, Leaf: leaf, Intermediates: inter, Key: key}
			u.Identities = append(u.Identities, cache.Identity{Entry: &cache.Entry{ID: strconv.Itoa(i), SPIFFEID: id, Labels: map[string]string{HintLabel: label}}, SVID: s})
			want.Svids = append(want.Svids, &workload.X509SVID{SpiffeId: id.String(), X509Svid: s.Chain(), X509SvidKey: key,
				Bundle: x509Roots(bundleFor(u, td)), Hint: h})
		}
		raw, _ := encodeX509SVIDs(u, slog.New(slog.DiscardHandler))
		wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := raw.parts.Materialize(); !bytes.Equal(got, wantBytes) {
			t.Fatalf("encoding differs from the generated code's:\n got %x\nwant %x", got, wantBytes)
		}
		if raw.size != len(wantBytes) {
			t.Fatalf("size = %d, want %d", raw.size, len(wantBytes))
		}
	})
}
