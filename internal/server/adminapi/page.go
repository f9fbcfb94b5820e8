package adminapi

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/kithid/kith/internal/server/apierr"
)

// Paging, the same for every List RPC: a page holds at most the page size asked for (DefaultPageSize when
// none, MaxPageSize at most) and stops early before its encoded items pass MaxPageBytes, so that a page
// always fits gRPC's default 4 MiB message limit. Items come in a stable order, and the token names the
// last item sent (its key in that order), not an offset, so that items added or removed between pages
// neither repeat nor vanish from the rest.
const (
	DefaultPageSize = 500
	MaxPageSize     = 5000
	MaxPageBytes    = 2 << 20
)

// pageToken is what a page token carries, base64url-encoded JSON: opaque to clients.
type pageToken struct {
	List   string   `json:"l"`           // which RPC made it
	Filter string   `json:"f,omitempty"` // the filters of the first page, which the next ones must repeat
	Key    []string `json:"k"`           // the last item sent
}

// pager is one page of one List RPC in the making.
type pager struct {
	list, filter string
	size         int
	after        []string // key of the last item of the previous page; nil on the first page
	bytes        int
	n            int
	last         []string
}

// newPager checks a List request's page_size and page_token.
func newPager(list, filter string, size int32, token string) (*pager, error) {
	p := &pager{list: list, filter: filter, size: int(size)}
	switch {
	case size < 0:
		return nil, apierr.Invalid(fmt.Sprintf("page_size %d: must not be negative (0 means %d)", size, DefaultPageSize))
	case size == 0:
		p.size = DefaultPageSize
	case size > MaxPageSize:
		p.size = MaxPageSize
	}
	if token == "" {
		return p, nil
	}
	var t pageToken
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.List != list || len(t.Key) == 0 {
		return nil, apierr.Invalid(fmt.Sprintf("page_token: not a next_page_token of %s: pass the one the previous page returned, or none for the first page", list))
	}
	if t.Filter != filter {
		return nil, apierr.Invalid(fmt.Sprintf("page_token was made for other filters (%s): repeat the first page's filters with it, or start again without it", t.Filter))
	}
	p.after = t.Key
	return p, nil
}

// add reports whether m still fits the page, and counts it in if so; key is m's place in list order.
func (p *pager) add(m proto.Message, key ...string) bool {
	sz := proto.Size(m)
	if p.n >= p.size || (p.n > 0 && p.bytes+sz > MaxPageBytes) {
		return false
	}
	p.n++
	p.bytes += sz
	p.last = key
	return true
}

// next is the token of the page after the items added so far.
func (p *pager) next() string {
	b, _ := json.Marshal(pageToken{List: p.list, Filter: p.filter, Key: p.last})
	return base64.RawURLEncoding.EncodeToString(b)
}

// pageIn pages a list that is read whole (one that stays small, such as the CA's authorities, or one whose
// store has no paged read): items must be in ascending key order, keys unique. It returns the page and the
// next page's token ("" when this is the last).
func pageIn[T any, P proto.Message](p *pager, items []T, key func(int, T) []string, conv func(T) P) ([]P, string) {
	var out []P
	for i, it := range items {
		k := key(i, it)
		if p.after != nil && slices.Compare(k, p.after) <= 0 {
			continue
		}
		m := conv(it)
		if !p.add(m, k...) {
			return out, p.next()
		}
		out = append(out, m)
	}
	return out, ""
}

// position is the key of an item in a list read whole whose order has no key of its own: its index.
func position(i int) []string { return []string{fmt.Sprintf("%09d", i)} }
