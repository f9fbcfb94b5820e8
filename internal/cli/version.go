package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// buildInfo is what a kith binary knows of how it was built.
type buildInfo struct {
	Version   string `json:"version"`            // module version, or Version when set at link time
	Revision  string `json:"revision,omitempty"` // VCS revision the binary was built from
	Time      string `json:"time,omitempty"`     // commit time of that revision
	Modified  bool   `json:"modified"`           // built from a tree with uncommitted changes
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// version reads the build information the Go toolchain embeds in the binary (module version and VCS
// revision), preferring a Version set with -ldflags.
func version() buildInfo {
	v := buildInfo{Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the one line `kith --version` prints.
func (b buildInfo) String() string {
	var parts []string
	if b.Revision != "" {
		rev := b.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if b.Modified {
			rev += "-dirty"
		}
		parts = append(parts, "revision "+rev)
	}
	if b.Time != "" {
		parts = append(parts, b.Time)
	}
	parts = append(parts, b.GoVersion, b.Platform)
	return fmt.Sprintf("kith %s (%s)", b.Version, strings.Join(parts, ", "))
}

func init() {
	extraCommands = append(extraCommands, func(e *env) *cobra.Command {
		return &cobra.Command{
			Use:   "version",
			Short: "Print the kith version, the revision it was built from and the Go toolchain",
			Args:  noArgs,
			RunE: func(*cobra.Command, []string) error {
				v := version()
				return e.print(v, func() { fmt.Fprintln(e.stdout, v) })
			},
		}
	})
}
