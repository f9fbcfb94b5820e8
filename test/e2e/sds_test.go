//go:build e2e

package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// fetchSDS calls SDS FetchSecrets on the agent socket as a proxy would, for "default" and "ROOTCA", and
// returns the certificate's URI SAN and the trust domains of the SPIFFE validation context.
func fetchSDS(t *testing.T, socket string) (string, []string) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: "e2e", Cluster: "e2e"},
		ResourceNames: []string{"default", "ROOTCA"},
		TypeUrl:       "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
	})
	if err != nil {
		t.Fatalf("FetchSecrets: %v", err)
	}
	var uri string
	var tds []string
	for _, res := range resp.GetResources() {
		var s tlsv3.Secret
		if err := res.UnmarshalTo(&s); err != nil {
			t.Fatalf("decode secret: %v", err)
		}
		switch s.GetName() {
		case "default":
			if len(s.GetTlsCertificate().GetPrivateKey().GetInlineBytes()) == 0 {
				t.Errorf("default secret has no private key")
			}
			block, _ := pem.Decode(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
			if block == nil {
				t.Fatalf("default secret has no PEM certificate chain")
			}
			leaf, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatalf("default secret leaf: %v", err)
			}
			if len(leaf.URIs) == 1 {
				uri = leaf.URIs[0].String()
			}
		case "ROOTCA":
			var cfg tlsv3.SPIFFECertValidatorConfig
			if err := s.GetValidationContext().GetCustomValidatorConfig().GetTypedConfig().UnmarshalTo(&cfg); err != nil {
				t.Fatalf("ROOTCA is not a SPIFFE validator config: %v", err)
			}
			for _, td := range cfg.GetTrustDomains() {
				tds = append(tds, td.GetName())
			}
		default:
			t.Errorf("unexpected secret %q", s.GetName())
		}
	}
	return uri, tds
}
