package extauthz

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// Attributes returns a as OPA-Envoy's input.attributes: the document that
// protojson.Marshal then json.Unmarshal would give (lowerCamelCase field
// names, zero values left out, int64 as strings), built directly from the
// message for the fields policies use: source and destination (address,
// principal, service, labels, certificate), request.time, request.http
// (id, method, headers, path, host, scheme, query, fragment, size, protocol,
// body), contextExtensions, metadataContext, routeMetadataContext and
// tlsSession. Headers sent as header_map are folded into
// request.http.headers, with repeated names joined by ",".
func Attributes(a *authv3.AttributeContext) map[string]any {
	out := make(map[string]any, 4)
	if a == nil {
		return out
	}
	if p := peer(a.GetSource()); p != nil {
		out["source"] = p
	}
	if p := peer(a.GetDestination()); p != nil {
		out["destination"] = p
	}
	if r := a.GetRequest(); r != nil {
		req := make(map[string]any, 2)
		if t := r.GetTime(); t != nil {
			req["time"] = timestamp(t.AsTime())
		}
		if h := r.GetHttp(); h != nil {
			req["http"] = httpRequest(h)
		}
		out["request"] = req
	}
	if ce := a.GetContextExtensions(); len(ce) > 0 {
		out["contextExtensions"] = ce
	}
	if m := metadata(a.GetMetadataContext()); m != nil {
		out["metadataContext"] = m
	}
	if m := metadata(a.GetRouteMetadataContext()); m != nil {
		out["routeMetadataContext"] = m
	}
	if sni := a.GetTlsSession().GetSni(); sni != "" {
		out["tlsSession"] = map[string]any{"sni": sni}
	}
	return out
}

// timestamp formats t as protojson does: UTC, with 0, 3, 6 or 9
// fractional digits (time.RFC3339Nano would drop every trailing zero).
func timestamp(t time.Time) string {
	t = t.UTC()
	s := t.Format("2006-01-02T15:04:05")
	switch n := t.Nanosecond(); {
	case n == 0:
	case n%1e6 == 0:
		s += fmt.Sprintf(".%03d", n/1e6)
	case n%1e3 == 0:
		s += fmt.Sprintf(".%06d", n/1e3)
	default:
		s += fmt.Sprintf(".%09d", n)
	}
	return s + "Z"
}

func peer(p *authv3.AttributeContext_Peer) map[string]any {
	if p == nil {
		return nil
	}
	out := make(map[string]any, 2)
	if sa := p.GetAddress().GetSocketAddress(); sa != nil {
		s := map[string]any{}
		if v := sa.GetAddress(); v != "" {
			s["address"] = v
		}
		if v := sa.GetPortValue(); v != 0 {
			s["portValue"] = int(v)
		}
		if v := sa.GetNamedPort(); v != "" {
			s["namedPort"] = v
		}
		if sa.GetProtocol() != corev3.SocketAddress_TCP {
			s["protocol"] = sa.GetProtocol().String()
		}
		out["address"] = map[string]any{"socketAddress": s}
	} else if pipe := p.GetAddress().GetPipe(); pipe != nil {
		out["address"] = map[string]any{"pipe": map[string]any{"path": pipe.GetPath()}}
	}
	if v := p.GetService(); v != "" {
		out["service"] = v
	}
	if v := p.GetLabels(); len(v) > 0 {
		out["labels"] = v
	}
	if v := p.GetPrincipal(); v != "" {
		out["principal"] = v
	}
	if v := p.GetCertificate(); v != "" {
		out["certificate"] = v
	}
	return out
}

func httpRequest(h *authv3.AttributeContext_HttpRequest) map[string]any {
	out := make(map[string]any, 8)
	str := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	str("id", h.GetId())
	str("method", h.GetMethod())
	str("path", h.GetPath())
	str("host", h.GetHost())
	str("scheme", h.GetScheme())
	str("query", h.GetQuery())
	str("fragment", h.GetFragment())
	str("protocol", h.GetProtocol())
	str("body", h.GetBody())
	if v := h.GetSize(); v != 0 {
		out["size"] = strconv.FormatInt(v, 10)
	}
	if v := h.GetRawBody(); len(v) > 0 {
		out["rawBody"] = base64.StdEncoding.EncodeToString(v)
	}
	headers := h.GetHeaders()
	if hm := h.GetHeaderMap().GetHeaders(); len(hm) > 0 {
		merged := make(map[string]string, len(headers)+len(hm))
		for k, v := range headers {
			merged[k] = v
		}
		for _, hv := range hm {
			k := strings.ToLower(hv.GetKey())
			v := hv.GetValue()
			if v == "" {
				v = strings.ToValidUTF8(string(hv.GetRawValue()), "\uFFFD")
			}
			if prev, ok := merged[k]; ok {
				v = prev + "," + v
			}
			merged[k] = v
		}
		headers = merged
	}
	if len(headers) > 0 {
		out["headers"] = headers
	}
	return out
}

func metadata(m *corev3.Metadata) map[string]any {
	if m == nil {
		return nil
	}
	out := map[string]any{}
	if fm := m.GetFilterMetadata(); len(fm) > 0 {
		f := make(map[string]any, len(fm))
		for k, s := range fm {
			f[k] = s.AsMap()
		}
		out["filterMetadata"] = f
	}
	if tm := m.GetTypedFilterMetadata(); len(tm) > 0 {
		f := make(map[string]any, len(tm))
		for k, a := range tm {
			f[k] = map[string]any{"@type": a.GetTypeUrl()}
		}
		out["typedFilterMetadata"] = f
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
