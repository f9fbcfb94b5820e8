// Command sds-fetch is an example of what a proxy (Envoy) receives from the local Kith agent over the
// Secret Discovery Service v3: it calls FetchSecrets on the agent socket for the caller's certificate
// ("default") and its trust bundle ("ROOTCA") and prints what each secret holds. The agent attests the
// caller exactly like a Workload API client, so the program must be registered (e.g. by its path).
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

func main() {
	addr := flag.String("socket", os.Getenv("SPIFFE_ENDPOINT_SOCKET"), "agent socket, unix:///path (default $SPIFFE_ENDPOINT_SOCKET)")
	validation := flag.String("validation", "spiffe", "validation context form to ask for: spiffe or trusted_ca")
	timeout := flag.Duration("timeout", 5*time.Second, "give up after this long")
	flag.Parse()
	if err := run(*addr, *validation, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "sds-fetch: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, validation string, timeout time.Duration) error {
	if addr == "" {
		return fmt.Errorf("no socket: set SPIFFE_ENDPOINT_SOCKET or --socket unix:///path/agent.sock")
	}
	if !strings.HasPrefix(addr, "unix:") {
		addr = "unix://" + addr
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	md, err := structpb.NewStruct(map[string]any{"kith.io/validation": validation})
	if err != nil {
		return err
	}
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: "sds-fetch", Cluster: "demo", Metadata: md},
		ResourceNames: []string{"default", "ROOTCA"},
		TypeUrl:       secretType,
	})
	if err != nil {
		return fmt.Errorf("FetchSecrets: %w", err)
	}
	fmt.Printf("sds-fetch: FetchSecrets version %s, %d secrets\n", resp.GetVersionInfo(), len(resp.GetResources()))
	for _, res := range resp.GetResources() {
		var s tlsv3.Secret
		if err := res.UnmarshalTo(&s); err != nil {
			return fmt.Errorf("decode secret: %w", err)
		}
		switch t := s.GetType().(type) {
		case *tlsv3.Secret_TlsCertificate:
			certs := parsePEM(t.TlsCertificate.GetCertificateChain().GetInlineBytes())
			hasKey := len(t.TlsCertificate.GetPrivateKey().GetInlineBytes()) > 0
			fmt.Printf("  %-8s tls_certificate: %d certificates, private key included: %t\n", s.GetName(), len(certs), hasKey)
			if len(certs) > 0 {
				leaf := certs[0]
				fmt.Printf("           leaf URI SAN %s, NotAfter %s\n", uris(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
			}
		case *tlsv3.Secret_ValidationContext:
			describeValidation(s.GetName(), t.ValidationContext)
		default:
			fmt.Printf("  %-8s unexpected secret type %T\n", s.GetName(), t)
		}
	}
	return nil
}

func describeValidation(name string, vc *tlsv3.CertificateValidationContext) {
	if ca := vc.GetTrustedCa(); ca != nil {
		fmt.Printf("  %-8s validation_context: trusted_ca with %d root(s)\n", name, len(parsePEM(ca.GetInlineBytes())))
		return
	}
	custom := vc.GetCustomValidatorConfig()
	var cfg tlsv3.SPIFFECertValidatorConfig
	if custom == nil || custom.GetTypedConfig().UnmarshalTo(&cfg) != nil {
		fmt.Printf("  %-8s validation_context: %v\n", name, vc)
		return
	}
	fmt.Printf("  %-8s validation_context: custom validator %s\n", name, custom.GetName())
	for _, td := range cfg.GetTrustDomains() {
		fmt.Printf("           trust domain %s: %d root(s)\n", td.GetName(), len(parsePEM(td.GetTrustBundle().GetInlineBytes())))
	}
}

func parsePEM(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func uris(c *x509.Certificate) string {
	s := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		s[i] = u.String()
	}
	return strings.Join(s, ",")
}
