// Package agenttest fakes the server's agent API for tests of the agent's parts: a [Server] signs with a
// real CA, counts the calls, and fails them on request; its Sync streams what the test sends.
package agenttest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	agentv1 "github.com/kithid/kith/api/kith/agent/v1"
	"github.com/kithid/kith/ca"
)

// Server is a fake agentv1.AgentServiceClient. The zero value signs nothing: set CA. Its methods are safe
// for concurrent use.
type Server struct {
	agentv1.AgentServiceClient // Attest is not faked: calling it panics

	CA  *ca.CA        // signs X.509-SVIDs, JWT-SVIDs and agent SVIDs
	TTL time.Duration // of the X.509-SVIDs it signs; zero: the CA's default

	mu      sync.Mutex
	errs    map[string]error // by method name: the error the next calls return
	calls   map[string]int   // by method name
	signed  []string         // entry IDs, in the order they were signed
	reports []*agentv1.ReportStatusRequest
	streams chan *Stream
}

var _ agentv1.AgentServiceClient = (*Server)(nil)

// Fail makes every later call of method ("SignX509SVIDs", "Sync", …) return err; nil clears it.
func (s *Server) Fail(method string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errs == nil {
		s.errs = map[string]error{}
	}
	s.errs[method] = err
}

// Calls is how many times method was called.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// Signed lists the entry IDs whose X.509-SVIDs were signed, in order.
func (s *Server) Signed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.signed...)
}

// Reports lists the status reports received.
func (s *Server) Reports() []*agentv1.ReportStatusRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*agentv1.ReportStatusRequest(nil), s.reports...)
}

func (s *Server) call(method string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[method]++
	return s.errs[method]
}

// SignX509SVIDs signs each CSR for the SPIFFE ID it names.
func (s *Server) SignX509SVIDs(ctx context.Context, req *agentv1.SignX509SVIDsRequest, _ ...grpc.CallOption) (*agentv1.SignX509SVIDsResponse, error) {
	if err := s.call("SignX509SVIDs"); err != nil {
		return nil, err
	}
	resp := &agentv1.SignX509SVIDsResponse{}
	for _, r := range req.GetRequests() {
		chain, err := s.sign(ctx, r.GetCsr())
		if err != nil {
			resp.Results = append(resp.Results, &agentv1.X509SVIDResult{EntryId: r.GetEntryId(), Error: err.Error()})
			continue
		}
		s.mu.Lock()
		s.signed = append(s.signed, r.GetEntryId())
		s.mu.Unlock()
		resp.Results = append(resp.Results, &agentv1.X509SVIDResult{EntryId: r.GetEntryId(), CertChain: chain})
	}
	return resp, nil
}

// RenewAgent signs the agent's new CSR.
func (s *Server) RenewAgent(ctx context.Context, req *agentv1.RenewAgentRequest, _ ...grpc.CallOption) (*agentv1.RenewAgentResponse, error) {
	if err := s.call("RenewAgent"); err != nil {
		return nil, err
	}
	chain, err := s.sign(ctx, req.GetCsr())
	if err != nil {
		return nil, err
	}
	return &agentv1.RenewAgentResponse{SvidChain: chain}, nil
}

// MintJWTSVID mints a JWT-SVID for the entry, whose ID must be its SPIFFE ID.
func (s *Server) MintJWTSVID(ctx context.Context, req *agentv1.MintJWTSVIDRequest, _ ...grpc.CallOption) (*agentv1.MintJWTSVIDResponse, error) {
	if err := s.call("MintJWTSVID"); err != nil {
		return nil, err
	}
	id, err := spiffeid.FromString(req.GetEntryId())
	if err != nil {
		return nil, err
	}
	tok, _, err := s.CA.SignJWTSVID(ctx, id, req.GetAudience(), 0)
	if err != nil {
		return nil, err
	}
	return &agentv1.MintJWTSVIDResponse{Token: tok}, nil
}

// ReportStatus records the report.
func (s *Server) ReportStatus(_ context.Context, req *agentv1.ReportStatusRequest, _ ...grpc.CallOption) (*agentv1.ReportStatusResponse, error) {
	if err := s.call("ReportStatus"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.reports = append(s.reports, req)
	s.mu.Unlock()
	return &agentv1.ReportStatusResponse{}, nil
}

// Sync opens a stream; the test takes it from Streams.
func (s *Server) Sync(ctx context.Context, req *agentv1.SyncRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[agentv1.SyncResponse], error) {
	if err := s.call("Sync"); err != nil {
		return nil, err
	}
	st := &Stream{ctx: ctx, Request: req, msgs: make(chan *agentv1.SyncResponse, 16), end: make(chan error, 1)}
	s.mu.Lock()
	if s.streams == nil {
		s.streams = make(chan *Stream, 16)
	}
	ch := s.streams
	s.mu.Unlock()
	select {
	case ch <- st:
	default:
		return nil, errors.New("agenttest: too many streams nobody took")
	}
	return st, nil
}

// Streams delivers each stream Sync opens.
func (s *Server) Streams() <-chan *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams = make(chan *Stream, 16)
	}
	return s.streams
}

func (s *Server) sign(ctx context.Context, csrDER []byte) ([][]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	if len(csr.URIs) != 1 {
		return nil, fmt.Errorf("csr names %d uris, want 1", len(csr.URIs))
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, err
	}
	chain, err := s.CA.SignX509SVID(ctx, ca.X509SVIDRequest{ID: id, CSR: csrDER, TTL: s.TTL})
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out, nil
}

// Stream is one Sync stream: Send pushes a message, End breaks it with an error.
type Stream struct {
	grpc.ClientStream // not used by the agent
	Request           *agentv1.SyncRequest
	ctx               context.Context
	msgs              chan *agentv1.SyncResponse
	end               chan error
}

// Send pushes msg to the agent.
func (s *Stream) Send(msg *agentv1.SyncResponse) { s.msgs <- msg }

// End breaks the stream: the agent's next Recv returns err.
func (s *Stream) End(err error) { s.end <- err }

// Recv returns the next message, the error End gave, or the context's error once the agent cancels.
func (s *Stream) Recv() (*agentv1.SyncResponse, error) {
	select {
	case m := <-s.msgs:
		return m, nil
	case err := <-s.end:
		return nil, err
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}
