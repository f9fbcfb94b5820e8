package workloadapi

import (
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kithid/kith/internal/agent/cache"
)

// rawMessage is a response already in its protobuf wire form. It is sent as is: the agent encodes an
// X509SVIDResponse straight from the DER it holds, into one buffer of the exact size, once per cache
// update, and every stream that sees the update sends those same bytes.
type rawMessage []byte

// passthroughCodec is gRPC's protobuf codec, except that a rawMessage is sent without re-encoding.
type passthroughCodec struct{ encoding.CodecV2 }

func (c passthroughCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	return c.CodecV2.Marshal(v)
}

func init() {
	encoding.RegisterCodecV2(passthroughCodec{encoding.GetCodecV2(grpcproto.Name)})
}

// Field numbers of the Workload API messages, read from their descriptors.
var (
	fieldSVIDs     = fieldNumber(&workload.X509SVIDResponse{}, "svids")
	fieldFederated = fieldNumber(&workload.X509SVIDResponse{}, "federated_bundles")
	fieldSPIFFEID  = fieldNumber(&workload.X509SVID{}, "spiffe_id")
	fieldCerts     = fieldNumber(&workload.X509SVID{}, "x509_svid")
	fieldKey       = fieldNumber(&workload.X509SVID{}, "x509_svid_key")
	fieldBundle    = fieldNumber(&workload.X509SVID{}, "bundle")
	fieldHint      = fieldNumber(&workload.X509SVID{}, "hint")
)

func fieldNumber(m interface {
	ProtoReflect() protoreflect.Message
}, name protoreflect.Name) protowire.Number {
	f := m.ProtoReflect().Descriptor().Fields().ByName(name)
	if f == nil {
		panic("workload api: no field " + string(name)) // the generated code changed; caught by every test
	}
	return f.Number()
}

// x509Item is one X509SVID of a response.
type x509Item struct {
	id     string
	svid   *cache.SVID
	bundle []byte
	hint   string
}

// size is the length of the item's encoded X509SVID message.
func (it *x509Item) size() int {
	n := len(it.svid.Leaf) + len(it.svid.Intermediates)
	return stringSize(fieldSPIFFEID, len(it.id)) + stringSize(fieldCerts, n) + stringSize(fieldKey, len(it.svid.Key)) +
		stringSize(fieldBundle, len(it.bundle)) + stringSize(fieldHint, len(it.hint))
}

// stringSize is the encoded size of a string or bytes field of n bytes (none when empty, as in proto3).
func stringSize(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func appendBytesField(b []byte, num protowire.Number, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendString(b, s)
	return b
}

// encodeX509SVIDs encodes the X509SVIDResponse for an update and returns what it holds. Identities whose
// hint an earlier one already uses are left out, as the spec requires hints to be unique.
func encodeX509SVIDs(u *cache.Update, log *slog.Logger) (rawMessage, []sentSVID) {
	items := make([]x509Item, 0, len(u.Identities))
	sent := make([]sentSVID, 0, len(u.Identities))
	hints := map[string]bool{}
	roots := map[spiffeid.TrustDomain][]byte{} // one DER copy per trust domain
	for _, ident := range u.Identities {
		hint := ident.Entry.Labels[HintLabel]
		if hint != "" && hints[hint] {
			log.Warn("skipping identity with a hint already in use", "entry", ident.Entry.ID, "hint", hint)
			continue
		}
		hints[hint] = true
		td := ident.SVID.ID.TrustDomain()
		bundle, ok := roots[td]
		if !ok {
			bundle = x509Roots(bundleFor(u, td))
			roots[td] = bundle
		}
		items = append(items, x509Item{id: ident.SVID.ID.String(), svid: ident.SVID, bundle: bundle, hint: hint})
		sent = append(sent, sentSVID{svid: ident.SVID, hint: hint})
	}
	type fed struct {
		key   string
		roots []byte
	}
	var feds []fed
	for _, td := range sortedTrustDomains(u.Federated) {
		feds = append(feds, fed{key: td.IDString(), roots: x509Roots(u.Federated[td])})
	}

	size := 0
	for i := range items {
		size += protowire.SizeTag(fieldSVIDs) + protowire.SizeBytes(items[i].size())
	}
	for _, f := range feds {
		entry := stringSize(1, len(f.key)) + stringSize(2, len(f.roots))
		size += protowire.SizeTag(fieldFederated) + protowire.SizeBytes(entry)
	}
	b := make([]byte, 0, size)
	for i := range items {
		it := &items[i]
		b = protowire.AppendTag(b, fieldSVIDs, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(it.size()))
		b = appendStringField(b, fieldSPIFFEID, it.id)
		b = appendBytesField(b, fieldCerts, it.svid.Leaf, it.svid.Intermediates)
		b = appendBytesField(b, fieldKey, it.svid.Key)
		b = appendBytesField(b, fieldBundle, it.bundle)
		b = appendStringField(b, fieldHint, it.hint)
	}
	for _, f := range feds {
		// A map entry is a message with the key as field 1 and the value as field 2.
		b = protowire.AppendTag(b, fieldFederated, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(stringSize(1, len(f.key))+stringSize(2, len(f.roots))))
		b = appendStringField(b, 1, f.key)
		b = appendBytesField(b, 2, f.roots)
	}
	return b, sent
}

func sortedTrustDomains(m map[spiffeid.TrustDomain]*spiffebundle.Bundle) []spiffeid.TrustDomain {
	return slices.SortedFunc(maps.Keys(m), func(a, b spiffeid.TrustDomain) int { return strings.Compare(a.Name(), b.Name()) })
}
