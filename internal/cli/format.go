package cli

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kithid/kith/internal/config"
)

var jsonOpts = protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}

// printProto writes a message as JSON with the proto field names.
func (e *env) printProto(m proto.Message) error {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = fmt.Fprintln(e.stdout, string(b))
	return err
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func fmtSeconds(s int64) string {
	if s == 0 {
		return "default"
	}
	return (time.Duration(s) * time.Second).String()
}

func fmtLabels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func parseLabels(ss []string) (map[string]string, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(ss))
	for _, s := range ss {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want key=value, e.g. env=dev", s)
		}
		m[k] = v
	}
	return m, nil
}

// print writes v as JSON for -o json (a proto message with its proto field names), and otherwise runs
// text, which writes the table or text form to e.stdout.
func (e *env) print(v any, text func()) error {
	if e.output != "json" {
		text()
		return nil
	}
	if m, ok := v.(proto.Message); ok {
		return e.printProto(m)
	}
	return e.printJSON(v)
}

// durationValue is a duration flag that takes what config files take: Go durations plus the "d" (24h)
// unit, e.g. --for 2d or --ttl 90d.
type durationValue time.Duration

func (d *durationValue) Set(s string) error {
	v, err := config.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

func (d *durationValue) String() string {
	if *d == 0 {
		return "0"
	}
	return time.Duration(*d).String()
}

func (d *durationValue) Type() string { return "duration" }

// ttlValue is a lifetime flag (--ttl, --jwt-ttl): the API takes whole seconds, so a lifetime that is not
// (1ns, 90.5s) is refused here instead of being cut — 1ns became 0, the server's default, while 30s was
// refused as under svid.min_ttl. 0 asks for the server's default. The range (svid.min_ttl to the max) is
// checked in one place, by the server, for entries, minted SVIDs and its own config alike.
type ttlValue time.Duration

func (d *ttlValue) Set(s string) error {
	v, err := config.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 || v%time.Second != 0 {
		return fmt.Errorf("%s: a lifetime is a whole number of seconds, such as 90s, 1h or 7d (0: the server's default)", s)
	}
	*d = ttlValue(v)
	return nil
}

func (d *ttlValue) String() string { return (*durationValue)(d).String() }

func (d *ttlValue) Type() string { return "duration" }

// ttlVar defines a lifetime flag (see ttlValue), 0 by default: the server's default.
func ttlVar(fs *pflag.FlagSet, p *time.Duration, name, usage string) {
	*p = 0
	fs.Var((*ttlValue)(p), name, usage)
}

// durationVar defines a duration flag (see durationValue) with default def.
func durationVar(fs *pflag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Var((*durationValue)(p), name, usage)
}
