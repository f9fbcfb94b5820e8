package server

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/ca/upstream/disk"
	"github.com/kithid/kith/internal/config"
)

// newUpstream builds the upstream authority ca.upstream configures and names it for `kith ca show`; nil
// when the CA is self-signed.
func newUpstream(c config.Upstream, now func() time.Time, log *slog.Logger) (ca.UpstreamAuthority, string, error) {
	switch c.Kind() {
	case "disk":
		d := c.Disk
		up, err := disk.New(disk.Config{CertFile: d.CertFile, KeyFile: d.KeyFile, ChainFile: d.ChainFile, RootsFile: d.RootsFile, Now: now})
		if err != nil {
			return nil, "", fmt.Errorf("ca.upstream.disk: %w", err)
		}
		return up, "disk " + d.CertFile, nil
	}
	_ = log
	return nil, "", nil
}
