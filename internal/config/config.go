// Package config defines the server and agent configuration files: their schema, defaults, KITH_*
// environment overrides and validation with errors that name the field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration that reads from YAML and the environment as "90s", "1h", "7d".
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		// A TypeError is reported by yaml.v3 with its line, like unknown fields are.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ParseDuration parses Go durations plus a "d" (24h) unit, e.g. "7d" or "1d12h". It is the one duration
// parser of config files, KITH_* variables and command-line flags.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration: want e.g. 90s, 1h, 7d")
	}
	bad := fmt.Errorf("invalid duration %q: want e.g. 90s, 1h, 7d", s)
	body, neg := s, false
	if rest, ok := strings.CutPrefix(body, "-"); ok {
		body, neg = rest, true
	} else {
		body = strings.TrimPrefix(body, "+")
	}
	if body == "" || body[0] == '-' || body[0] == '+' {
		return 0, bad
	}
	var d time.Duration
	if i := strings.Index(body, "d"); i >= 0 {
		days, err := strconv.ParseUint(body[:i], 10, 63)
		if err != nil || days > uint64(math.MaxInt64/int64(24*time.Hour)) {
			return 0, bad
		}
		d = time.Duration(days) * 24 * time.Hour
		body = body[i+1:]
		if body == "" {
			return sign(d, neg), nil
		}
		if body[0] < '0' || body[0] > '9' {
			return 0, bad
		}
	}
	rest, err := time.ParseDuration(body)
	if err != nil || rest > math.MaxInt64-d {
		return 0, bad
	}
	return sign(d+rest, neg), nil
}

func sign(d time.Duration, neg bool) time.Duration {
	if neg {
		return -d
	}
	return d
}

// FieldError is a configuration error tied to one field, named by its YAML path.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// load reads an optional YAML file strictly (unknown fields are errors) into v, then applies
// environment overrides named prefix + the upper-cased YAML path ("KITH_CA_ROOT_TTL").
func load(path string, v any, prefix string, env func(string) (string, bool)) error {
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) /* an empty file sets nothing */ {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	if env == nil {
		env = os.LookupEnv
	}
	return applyEnv(reflect.ValueOf(v).Elem(), prefix, "", env)
}

func applyEnv(v reflect.Value, prefix, path string, env func(string) (string, bool)) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		fieldPath := tag
		if path != "" {
			fieldPath = path + "." + tag
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if err := applyEnv(fv, prefix, fieldPath, env); err != nil {
				return err
			}
			continue
		}
		name := prefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(fieldPath))
		raw, ok := env(name)
		if !ok {
			continue
		}
		if err := setFromString(fv, raw); err != nil {
			return &FieldError{Field: fieldPath, Problem: fmt.Sprintf("from %s: %v", name, err)}
		}
	}
	return nil
}

func setFromString(v reflect.Value, raw string) error {
	switch v.Interface().(type) {
	case Duration:
		d, err := ParseDuration(raw)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(Duration(d)))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", raw)
		}
		v.SetInt(n)
	case reflect.Slice:
		parts := strings.Split(raw, ",")
		switch v.Type().Elem().Kind() {
		case reflect.String:
			v.Set(reflect.ValueOf(parts))
		case reflect.Int:
			ns := make([]int, 0, len(parts))
			for _, p := range parts {
				n, err := strconv.Atoi(strings.TrimSpace(p))
				if err != nil {
					return fmt.Errorf("want comma-separated integers, got %q", raw)
				}
				ns = append(ns, n)
			}
			v.Set(reflect.ValueOf(ns))
		default:
			return fmt.Errorf("cannot be set from the environment")
		}
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
