package meshimport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds one file (or standard input) read by [ReadPath].
const MaxFileSize = 64 << 20

// Object is one Kubernetes object read from a file: its type and name, and its whole JSON.
type Object struct {
	APIVersion  string
	Kind        string
	Namespace   string // "default" when the object names none
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	Raw         json.RawMessage // the object as JSON
	File        string          // where it was read, with its document number: "policy.yaml#2"
}

// Ref is "namespace/name".
func (o Object) Ref() string { return o.Namespace + "/" + o.Name }

// Group is the API group of the object ("access.smi-spec.io"), Version its version ("v1alpha4").
func (o Object) Group() string {
	g, _, _ := strings.Cut(o.APIVersion, "/")
	if !strings.Contains(o.APIVersion, "/") {
		return ""
	}
	return g
}

// Version is the version part of APIVersion.
func (o Object) Version() string {
	_, v, ok := strings.Cut(o.APIVersion, "/")
	if !ok {
		return o.APIVersion
	}
	return v
}

// Read reads the objects of data: YAML with one or more documents, or JSON (which is YAML too); a
// document that is a List (kind List or an items array, as kubectl get -o yaml writes) gives its items.
// Empty documents are skipped. name is what errors and Object.File call the input.
func Read(name string, data []byte) ([]Object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Object
	for n := 1; ; n++ {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, n, err)
		}
		if doc == nil {
			continue
		}
		objs, err := objects(fmt.Sprintf("%s#%d", name, n), doc)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
}

func objects(where string, doc any) ([]Object, error) {
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: a document is %T, want a Kubernetes object (apiVersion, kind, metadata)", where, doc)
	}
	if items, ok := m["items"].([]any); ok && (m["kind"] == "List" || strings.HasSuffix(fmt.Sprint(m["kind"]), "List")) {
		var out []Object
		for i, it := range items {
			objs, err := objects(fmt.Sprintf("%s items[%d]", where, i), it)
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
		}
		return out, nil
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name        string            `json:"name"`
			Namespace   string            `json:"namespace"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%s: apiVersion, kind or metadata: %w", where, err)
	}
	if head.Kind == "" {
		return nil, fmt.Errorf("%s: the object has no kind", where)
	}
	if head.Metadata.Name == "" {
		return nil, fmt.Errorf("%s: the %s has no metadata.name", where, head.Kind)
	}
	ns := head.Metadata.Namespace
	if ns == "" {
		ns = "default"
	}
	return []Object{{APIVersion: head.APIVersion, Kind: head.Kind, Namespace: ns, Name: head.Metadata.Name,
		Labels: head.Metadata.Labels, Annotations: head.Metadata.Annotations, Raw: raw, File: where}}, nil
}

// ReadPath reads the objects of a file, of every .yaml, .yml and .json file under a directory (in
// lexical order, hidden files and directories skipped), or of stdin when path is "-".
func ReadPath(path string, stdin io.Reader) ([]Object, error) {
	if path == "-" {
		data, err := io.ReadAll(io.LimitReader(stdin, MaxFileSize+1))
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		if len(data) > MaxFileSize {
			return nil, fmt.Errorf("standard input is over %d MB", MaxFileSize>>20)
		}
		return Read("stdin", data)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return readFile(path)
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != path && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() && slices.Contains([]string{".yaml", ".yml", ".json"}, filepath.Ext(p)) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Object
	for _, f := range files {
		objs, err := readFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

func readFile(path string) ([]Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s is over %d MB", path, MaxFileSize>>20)
	}
	return Read(path, data)
}

// DecodeStrict decodes the JSON value raw into v, refusing fields v does not have: the name of such a
// field is in the error, so a policy using a field Kith does not know is refused rather than read in part.
func DecodeStrict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
