package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kithid/kith/ca"
	"github.com/kithid/kith/internal/atomicfile"
)

// serverNameFile keeps, in the data dir, the name a server sharing a store chose for itself when
// server_name was not set: stable across restarts, and different for two servers on one host (each has its
// own data dir).
const serverNameFile = "server-name"

// resolveServerName returns configured if set, else the name stored in dir, else a new one (the host name
// and 6 random hex digits) that it stores there.
func resolveServerName(configured, dir string) (name string, chosen bool, err error) {
	if configured != "" {
		return configured, false, nil
	}
	path := filepath.Join(dir, serverNameFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		name = strings.TrimSpace(string(b))
		if !ca.ValidServerName(name) {
			return "", false, fmt.Errorf("%s holds %q, not a server name: delete it (a new name is made) or set server_name", path, name)
		}
		return name, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("read the server's name: %w", err)
	}
	host, _ := os.Hostname()
	host = strings.Trim(strings.Map(func(r rune) rune {
		if r < 128 && (r == '-' || r == '.' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return -1
	}, host), "-._")
	if len(host) > 55 {
		host = host[:55]
	}
	if host == "" {
		host = "kith"
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name = host + "-" + hex.EncodeToString(suffix)
	if err := atomicfile.WriteBytes(path, []byte(name+"\n"), atomicfile.Options{Mode: 0o600}); err != nil {
		return "", false, fmt.Errorf("store the server's name in %s: %w", path, err)
	}
	return name, true, nil
}
