package workloadapi

import (
	"log/slog"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kithid/kith/svid/cache"
)

// rawMessage is a response already in its protobuf wire form, as the pieces gRPC writes one after another:
// the framing (tags, lengths, IDs, hints) the agent wrote for this message, and the certificates, keys and
// bundles the cache holds, referenced rather than copied. The agent encodes an X509SVIDResponse once per
// cache update, every stream that sees the update sends those same pieces, and a response of ten thousand
// SVIDs (about 17 MB on the wire) costs the agent about 3 MB: 2 MB of framing and keys, the list of pieces.
type rawMessage struct {
	parts mem.BufferSlice // read-only: shared by every stream that sends the message
	size  int
}

// passthroughCodec is gRPC's protobuf codec, except that a rawMessage is sent without re-encoding.
type passthroughCodec struct{ encoding.CodecV2 }

func (c passthroughCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawMessage); ok {
		// gRPC reads the pieces with a reader of its own and frees them (a no-op for a SliceBuffer); it never
		// writes to them, so streams can share them.
		return r.parts, nil
	}
	return c.CodecV2.Marshal(v)
}

func init() {
	encoding.RegisterCodecV2(passthroughCodec{encoding.GetCodecV2(grpcproto.Name)})
}

// pieceWriter assembles a rawMessage: framing and small fields are appended to frame, certificates and
// bundles are referenced. Parts alias frame, which is only ever appended to, so a part stays valid even if
// frame has to grow. Few, large pieces matter: gRPC writes a 16 KiB frame from a list of the pieces in it
// and allocates that list anew for every frame once it would hold more than 64 of them.
type pieceWriter struct {
	frame []byte
	mark  int // frame[mark:] is not yet a part
	msg   rawMessage
}

func (w *pieceWriter) flush() {
	if len(w.frame) > w.mark {
		w.msg.parts = append(w.msg.parts, mem.SliceBuffer(w.frame[w.mark:len(w.frame):len(w.frame)]))
		w.msg.size += len(w.frame) - w.mark
		w.mark = len(w.frame)
	}
}

// ref appends data as a part of its own.
func (w *pieceWriter) ref(b mem.Buffer) {
	if b == nil || b.Len() == 0 {
		return
	}
	w.flush()
	w.msg.parts = append(w.msg.parts, b)
	w.msg.size += b.Len()
}

// bytesField writes the tag and length of a bytes field whose content is parts (none when empty, as in
// proto3) and references the parts.
func (w *pieceWriter) bytesField(num protowire.Number, parts ...mem.Buffer) {
	n := 0
	for _, p := range parts {
		if p != nil {
			n += p.Len()
		}
	}
	if n == 0 {
		return
	}
	w.frame = protowire.AppendTag(w.frame, num, protowire.BytesType)
	w.frame = protowire.AppendVarint(w.frame, uint64(n))
	for _, p := range parts {
		w.ref(p)
	}
}

// copyField writes a bytes field into the framing (none when empty).
func (w *pieceWriter) copyField(num protowire.Number, b []byte) {
	if len(b) == 0 {
		return
	}
	w.frame = protowire.AppendTag(w.frame, num, protowire.BytesType)
	w.frame = protowire.AppendBytes(w.frame, b)
}

func (w *pieceWriter) stringField(num protowire.Number, s string) {
	if s == "" {
		return
	}
	w.frame = protowire.AppendTag(w.frame, num, protowire.BytesType)
	w.frame = protowire.AppendString(w.frame, s)
}

func (w *pieceWriter) done() *rawMessage {
	w.flush()
	return &w.msg
}

// buffer is b as a part; nil when empty.
func buffer(b []byte) mem.Buffer {
	if len(b) == 0 {
		return nil
	}
	return mem.SliceBuffer(b)
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

// encodeX509SVIDs encodes the X509SVIDResponse for an update and returns what it holds. Identities whose
// hint an earlier one already uses are left out, as the spec requires hints to be unique.
func encodeX509SVIDs(u *cache.Update, log *slog.Logger) (*rawMessage, []sentSVID) {
	items := make([]x509Item, 0, len(u.Identities))
	sent := make([]sentSVID, 0, len(u.Identities))
	hints := map[string]bool{}
	roots := map[spiffeid.TrustDomain][]byte{} // one DER copy per trust domain
	framing := 0
	for _, ident := range u.Identities {
		hint := ident.Entry.Labels[HintLabel]
		if !utf8.ValidString(hint) { // a string field: clients refuse the whole message over it
			log.Warn("sending identity without its hint: not valid UTF-8", "entry", ident.Entry.ID)
			hint = ""
		}
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
		it := &items[len(items)-1]
		n := it.size()
		framing += protowire.SizeTag(fieldSVIDs) + protowire.SizeVarint(uint64(n)) + n - len(it.svid.Leaf) - len(it.svid.Intermediates) - len(it.bundle)
	}
	type fed struct {
		key   string
		roots []byte
	}
	var feds []fed
	for _, td := range sortedTrustDomains(u.Federated) {
		f := fed{key: td.IDString(), roots: x509Roots(u.Federated[td])}
		feds = append(feds, f)
		n := mapEntrySize(f.key, f.roots)
		framing += protowire.SizeTag(fieldFederated) + protowire.SizeVarint(uint64(n)) + n - len(f.roots)
	}

	w := pieceWriter{frame: make([]byte, 0, framing), msg: rawMessage{parts: make(mem.BufferSlice, 0, 5*len(items)+2*len(feds)+1)}}
	type span struct {
		p *byte
		n int
	}
	boxed := make(map[span]mem.Buffer, 2) // the bundles and intermediates items share, made parts once
	shared := func(b []byte) mem.Buffer {
		if len(b) == 0 {
			return nil
		}
		k := span{&b[0], len(b)}
		p, ok := boxed[k]
		if !ok {
			p = mem.SliceBuffer(b)
			boxed[k] = p
		}
		return p
	}
	for i := range items {
		it := &items[i]
		w.frame = protowire.AppendTag(w.frame, fieldSVIDs, protowire.BytesType)
		w.frame = protowire.AppendVarint(w.frame, uint64(it.size()))
		w.stringField(fieldSPIFFEID, it.id)
		w.bytesField(fieldCerts, buffer(it.svid.Leaf), shared(it.svid.Intermediates))
		w.copyField(fieldKey, it.svid.Key) // small: copied, so that gRPC writes a frame from few pieces
		w.bytesField(fieldBundle, shared(it.bundle))
		w.stringField(fieldHint, it.hint)
	}
	for _, f := range feds {
		// A map entry is a message with the key as field 1 and the value as field 2, both written even when
		// empty (as the generated code does).
		w.frame = protowire.AppendTag(w.frame, fieldFederated, protowire.BytesType)
		w.frame = protowire.AppendVarint(w.frame, uint64(mapEntrySize(f.key, f.roots)))
		w.frame = protowire.AppendTag(w.frame, 1, protowire.BytesType)
		w.frame = protowire.AppendString(w.frame, f.key)
		w.frame = protowire.AppendTag(w.frame, 2, protowire.BytesType)
		w.frame = protowire.AppendVarint(w.frame, uint64(len(f.roots)))
		w.ref(buffer(f.roots))
	}
	return w.done(), sent
}

// mapEntrySize is the encoded size of a federated_bundles map entry.
func mapEntrySize(key string, roots []byte) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(key)) + protowire.SizeTag(2) + protowire.SizeBytes(len(roots))
}

func sortedTrustDomains(m map[spiffeid.TrustDomain]*spiffebundle.Bundle) []spiffeid.TrustDomain {
	return slices.SortedFunc(maps.Keys(m), func(a, b spiffeid.TrustDomain) int { return strings.Compare(a.Name(), b.Name()) })
}
